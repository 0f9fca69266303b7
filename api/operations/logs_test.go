package operations

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Records at Info and above reach the bus as logging events with their
// attributes (groups and WithAttrs included) and still reach the log;
// Debug does not reach the bus.
func TestLogHandler(t *testing.T) {
	bus := NewBus()
	ch, done := bus.Subscribe()
	defer done()
	var out bytes.Buffer
	log := slog.New(LogHandler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}), bus, "n1"))
	log.Debug("quiet")
	log.With("component", "ha").WithGroup("g").Warn("replication failed", "member", "n2")
	select {
	case e := <-ch:
		if e.GetType() != "logging" || e.GetAction() != "warn" || e.GetNode() != "n1" ||
			e.GetDetail() != "replication failed component=ha g.member=n2" {
			t.Fatalf("event %v", e)
		}
	default:
		t.Fatal("no event for a warning")
	}
	select {
	case e := <-ch:
		t.Fatalf("a second event: %v", e)
	default:
	}
	if !strings.Contains(out.String(), "quiet") || !strings.Contains(out.String(), "replication failed") {
		t.Fatalf("the log lost records: %s", out.String())
	}
}
