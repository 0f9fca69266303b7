package node

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// ProgressFunc receives the progress of long work a call does on the
// node's side (an image pulled from a peer): a phase, and bytes done of
// total (-1 when unknown).
type ProgressFunc func(phase string, done, total int64)

type progressKey struct{}

// WithProgress makes calls under ctx report their progress to f.
func WithProgress(ctx context.Context, f ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// progressFrom returns ctx's ProgressFunc, or one that drops reports.
func progressFrom(ctx context.Context) ProgressFunc {
	if f, ok := ctx.Value(progressKey{}).(ProgressFunc); ok && f != nil {
		return f
	}
	return func(string, int64, int64) {}
}

// statusProgress reports progress as the container's status in the
// cluster ("Pulling", with the phase and bytes as its message), at most
// twice a second: a member waiting for this one to create the container
// shows it.
func (n *Node) statusProgress(ct *shoalv1.Container) ProgressFunc {
	var mu sync.Mutex
	var last time.Time
	return func(phase string, done, total int64) {
		mu.Lock()
		if time.Since(last) < 500*time.Millisecond && done != total {
			mu.Unlock()
			return
		}
		last = time.Now()
		mu.Unlock()
		msg := fmt.Sprintf("%s: %d of %d bytes", phase, done, total)
		// Synchronous, so that no report lands after the final status
		// the reconcile records when it is done.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.cl.Propose(ctx, &shoalv1.ContainerStatusCommand{Name: ct.GetName(), Node: n.cfg.Name, Status: "Pulling", Message: msg})
	}
}

// countingReader reports bytes read through a ProgressFunc.
type countingReader struct {
	r     io.Reader
	n     int64
	total int64
	phase string
	f     ProgressFunc
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.f(c.phase, c.n, c.total)
	return n, err
}
