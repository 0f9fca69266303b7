package operations

import (
	"context"
	"log/slog"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// LogHandler wraps a daemon's log handler so that every record it writes
// at Info or above is also published on bus as a "logging" event (action
// the level, detail the message and its attributes as key=value), which
// `shoal monitor --type logging` shows. Publishing never blocks.
func LogHandler(next slog.Handler, bus *Bus, node string) slog.Handler {
	return &logHandler{next: next, bus: bus, node: node}
}

type logHandler struct {
	next  slog.Handler
	bus   *Bus
	node  string
	attrs []slog.Attr // from WithAttrs, with their group prefix applied
	group string      // the WithGroup prefix, "a.b."
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		var b strings.Builder
		b.WriteString(r.Message)
		add := func(prefix string, a slog.Attr) {
			b.WriteString(" ")
			b.WriteString(prefix + a.Key)
			b.WriteString("=")
			b.WriteString(a.Value.String())
		}
		for _, a := range h.attrs {
			add("", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			add(h.group, a)
			return true
		})
		h.bus.Publish(&shoalv1.Event{Type: "logging", Action: strings.ToLower(r.Level.String()), Node: h.node,
			Resource: "daemon", Detail: b.String(), TimeUnixNano: r.Time.UnixNano()})
	}
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		a.Key = h.group + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = h.group + name + "."
	return &c
}
