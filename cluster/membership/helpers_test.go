package membership

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ipCounter hands each test node its own loopback IP (127.0.0.2 upward);
// ports always come from the kernel.
var ipCounter atomic.Uint32

func nextIP() string {
	n := ipCounter.Add(1)
	return fmt.Sprintf("127.0.%d.%d", (n/250)%250, n%250+2)
}

// tbHandler sends logs to t.Log until the test's cleanups finish; the lock
// makes the cut-off race-free against memberlist's late goroutines.
type tbHandler struct {
	slog.Handler
	st *tbState
}

type tbState struct {
	mu   sync.RWMutex
	done bool
	tb   testing.TB
}

type tbWriter struct{ st *tbState }

func (w tbWriter) Write(p []byte) (int, error) {
	w.st.mu.RLock()
	defer w.st.mu.RUnlock()
	if !w.st.done {
		w.st.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger logs at Info and above to tb; gossip debug chatter is dropped.
func testLogger(tb testing.TB) *slog.Logger {
	st := &tbState{tb: tb}
	tb.Cleanup(func() { st.mu.Lock(); st.done = true; st.mu.Unlock() })
	return slog.New(slog.NewTextHandler(tbWriter{st}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testNode is a Membership whose events are collected for polling.
type testNode struct {
	*Membership
	meta atomic.Pointer[Meta]

	mu        sync.Mutex
	events    []Event
	times     []time.Time // when each event was read off Events
	collected chan struct{}
}

// setMeta changes what Config.Meta returns.
func (n *testNode) setMeta(m Meta) { n.meta.Store(&m) }

// eventsFor returns the events seen about node.
func (n *testNode) eventsFor(node string) []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Event
	for _, e := range n.events {
		if e.Node == node {
			out = append(out, e)
		}
	}
	return out
}

func (n *testNode) hasEvent(node string, t EventType) bool {
	_, ok := n.eventAt(node, t)
	return ok
}

// eventAt returns when the first event of type t about node was received.
func (n *testNode) eventAt(node string, t EventType) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, e := range n.events {
		if e.Node == node && e.Type == t {
			return n.times[i], true
		}
	}
	return time.Time{}, false
}

func (n *testNode) member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func (n *testNode) aliveCount() int {
	c := 0
	for _, m := range n.Members() {
		if m.State == StateAlive {
			c++
		}
	}
	return c
}

func testMeta(name string) Meta {
	return Meta{
		Name:            name,
		GRPCAddr:        "10.0.0.1:7443",
		RaftAddr:        "10.0.0.1:7444",
		FreeCPUMillis:   4000,
		FreeMemoryBytes: 8 << 30,
		Labels:          map[string]string{"zone": "a", "node": name},
		FreeDiskBytes:   map[string]int64{"default": 12 << 30, "fast": 3 << 30},
	}
}

type nodeOpt func(*Config)

// startNode starts a member on a fresh loopback IP, port 0. Shutdown runs in
// tb.Cleanup.
func startNode(tb testing.TB, name string, key []byte, opts ...nodeOpt) *testNode {
	tb.Helper()
	n := &testNode{collected: make(chan struct{})}
	n.setMeta(testMeta(name))
	cfg := Config{
		Name:      name,
		BindAddr:  nextIP(),
		SecretKey: key,
		Meta:      func() Meta { return *n.meta.Load() },
		Logger:    testLogger(tb).With("node", name),
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		tb.Fatalf("New(%s): %v", name, err)
	}
	n.Membership = m
	go func() {
		defer close(n.collected)
		for e := range m.Events() {
			n.mu.Lock()
			n.events = append(n.events, e)
			n.times = append(n.times, time.Now())
			n.mu.Unlock()
		}
	}()
	tb.Cleanup(func() { n.kill(tb) })
	return n
}

// kill shuts n down without leaving (peers see a failure).
func (n *testNode) kill(tb testing.TB) {
	if err := n.Shutdown(); err != nil {
		tb.Errorf("shutdown %s: %v", n.Name(), err)
	}
	<-n.collected
}

func mustKey(tb testing.TB) []byte {
	tb.Helper()
	k, err := NewSecretKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// startCluster starts n members joined through the first and waits until
// every member sees all n alive.
func startCluster(tb testing.TB, n int, key []byte) []*testNode {
	tb.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNode(tb, fmt.Sprintf("node%d", i), key)
	}
	for _, nd := range nodes[1:] {
		joinOK(tb, nd, nodes[0].LocalAddr())
	}
	waitFor(tb, 15*time.Second, "full membership", func() bool {
		for _, nd := range nodes {
			if nd.aliveCount() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

func joinOK(tb testing.TB, n *testNode, addr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Join(ctx, []string{addr}); err != nil {
		tb.Fatalf("%s join %s: %v", n.Name(), addr, err)
	}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdsFor polls cond every 10 ms for d and fails as soon as it is false.
func holdsFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !cond() {
			tb.Fatalf("%s stopped holding", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectedDetection is the typical time to declare a dead node in an
// n-node cluster with default tuning (see the DefaultProbeInterval docs):
// one probe cycle to reach it, one interval for the probe to fail, the
// confirmed suspicion timeout, and the one-GossipInterval leave grace.
func expectedDetection(n int) time.Duration {
	return DefaultProbeInterval*time.Duration(n-1) + DefaultProbeInterval +
		DefaultProbeInterval*DefaultSuspicionMult + DefaultGossipInterval
}
