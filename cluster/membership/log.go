package membership

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"
)

// gossipLogWriter routes memberlist's "[LEVEL] memberlist: msg" lines to
// slog. Once quiet is set (shutdown has begun) everything is Debug: memberlist
// closes its sockets before stopping its loops, which then log errors about
// closed connections that mean nothing.
type gossipLogWriter struct {
	log   *slog.Logger
	quiet *atomic.Bool
}

var _ io.Writer = gossipLogWriter{}

// newGossipLogger adapts slog to the *log.Logger memberlist takes.
func newGossipLogger(l *slog.Logger, quiet *atomic.Bool) *log.Logger {
	return log.New(gossipLogWriter{log: l.With("component", "gossip"), quiet: quiet}, "", 0)
}

// Write implements io.Writer. It never fails: a logging problem must not
// disturb gossip.
func (w gossipLogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, msg := parseGossipLine(string(line))
		if msg == "" {
			continue
		}
		if w.quiet != nil && w.quiet.Load() {
			level = slog.LevelDebug
		}
		w.log.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

var gossipLevels = []struct {
	tag   string
	level slog.Level
}{
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
	{"[WARN]", slog.LevelWarn},
	{"[INFO]", slog.LevelInfo},
	{"[DEBUG]", slog.LevelDebug},
	{"[TRACE]", slog.LevelDebug},
}

// parseGossipLine splits a memberlist log line into a level and a message
// without the level tag and the "memberlist: " prefix. Untagged lines are
// Info.
func parseGossipLine(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	level := slog.LevelInfo
	for _, l := range gossipLevels {
		if rest, ok := strings.CutPrefix(line, l.tag); ok {
			level, line = l.level, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}
