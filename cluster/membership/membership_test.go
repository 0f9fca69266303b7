package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestClusterSharesMeta(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d-members", n), func(t *testing.T) {
			key := mustKey(t)
			nodes := startCluster(t, n, key)

			for _, nd := range nodes {
				for _, other := range nodes {
					m, ok := nd.member(other.Name())
					if !ok {
						t.Fatalf("%s does not see %s", nd.Name(), other.Name())
					}
					want := testMeta(other.Name())
					want.Version = MetaVersion
					if !metaEqual(m.Meta, want) {
						t.Errorf("%s sees %s meta %+v, want %+v", nd.Name(), other.Name(), m.Meta, want)
					}
					if m.Addr != other.LocalAddr() {
						t.Errorf("%s sees %s at %s, want %s", nd.Name(), other.Name(), m.Addr, other.LocalAddr())
					}
				}
			}

			// Free resources change on node1: UpdateMeta spreads it.
			changed := testMeta("node1")
			changed.FreeCPUMillis = 1500
			changed.FreeMemoryBytes = 1 << 30
			changed.Labels["disk"] = "ssd"
			nodes[1].setMeta(changed)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := nodes[1].UpdateMeta(ctx); err != nil {
				t.Fatalf("UpdateMeta: %v", err)
			}
			changed.Version = MetaVersion
			waitFor(t, 10*time.Second, "updated meta everywhere", func() bool {
				for _, nd := range nodes {
					m, _ := nd.member("node1")
					if !metaEqual(m.Meta, changed) || !nd.hasEvent("node1", EventUpdate) {
						return false
					}
				}
				return true
			})
		})
	}
}

func metaEqual(a, b Meta) bool {
	return a.Name == b.Name && a.GRPCAddr == b.GRPCAddr && a.RaftAddr == b.RaftAddr &&
		a.FreeCPUMillis == b.FreeCPUMillis && a.FreeMemoryBytes == b.FreeMemoryBytes &&
		a.Version == b.Version && maps.Equal(a.Labels, b.Labels) && maps.Equal(a.FreeDiskBytes, b.FreeDiskBytes)
}

func TestWrongKeyCannotJoin(t *testing.T) {
	key := mustKey(t)
	nodes := startCluster(t, 2, key)
	seed := nodes[0].LocalAddr()

	intruder := startNode(t, "intruder", mustKey(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	n, err := intruder.Join(ctx, []string{seed})
	if err == nil {
		t.Fatalf("join with a different key succeeded (%d contacted)", n)
	}
	t.Logf("wrong-key join refused after %v: %v", time.Since(start), err)

	// A member without any key (raw memberlist, no keyring) is refused too,
	// both when it joins us and when we join it.
	plain := startPlainMemberlist(t)
	if n, err := plain.Join([]string{seed}); err == nil {
		t.Fatalf("unencrypted join succeeded (%d contacted)", n)
	}
	if _, err := nodes[1].Join(ctx, []string{plain.LocalNode().Address()}); err == nil {
		t.Fatal("joining an unencrypted member succeeded")
	}

	// Barrier: a legitimate member joins and is seen by all; by then any
	// gossip from the outsiders would have been processed too.
	late := startNode(t, "late", key)
	joinOK(t, late, seed)
	waitFor(t, 10*time.Second, "late member seen", func() bool {
		return nodes[0].aliveCount() == 3 && nodes[1].aliveCount() == 3
	})
	for _, nd := range append(nodes, late) {
		for _, m := range nd.Members() {
			if m.Name == "intruder" || m.Name == "plain" {
				t.Errorf("%s lists outsider %s", nd.Name(), m.Name)
			}
		}
	}
	if got := intruder.Members(); len(got) != 1 {
		t.Errorf("intruder sees %d members, want only itself", len(got))
	}
	if got := plain.NumMembers(); got != 1 {
		t.Errorf("plain member sees %d members, want only itself", got)
	}
}

// startPlainMemberlist starts a memberlist with no encryption at all.
func startPlainMemberlist(t *testing.T) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name = "plain"
	mc.BindAddr = nextIP()
	mc.BindPort = 0
	mc.AdvertisePort = 0
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

func TestFailureDetected(t *testing.T) {
	nodes := startCluster(t, 3, mustKey(t))
	victim := nodes[2]
	start := time.Now()
	victim.kill(t)

	waitFor(t, 15*time.Second, "Fail event on every survivor", func() bool {
		return nodes[0].hasEvent(victim.Name(), EventFail) && nodes[1].hasEvent(victim.Name(), EventFail)
	})
	detected := map[string]time.Duration{}
	for _, nd := range nodes[:2] {
		at, _ := nd.eventAt(victim.Name(), EventFail)
		detected[nd.Name()] = at.Sub(start)
	}
	t.Logf("dead-node detection (Shutdown → Fail event): %v (expected ≈ %v)", detected, expectedDetection(3))
	for _, nd := range nodes[:2] {
		m, _ := nd.member(victim.Name())
		if m.State != StateDead {
			t.Errorf("%s lists %s as %v, want dead", nd.Name(), victim.Name(), m.State)
		}
		if nd.hasEvent(victim.Name(), EventLeave) {
			t.Errorf("%s reported Leave for a killed node", nd.Name())
		}
	}
}

func TestGracefulLeaveIsNeverFail(t *testing.T) {
	nodes := startCluster(t, 3, mustKey(t))
	leaver := nodes[2]
	if err := leaver.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	leaver.kill(t)

	survivors := nodes[:2]
	leftEverywhere := func() bool {
		for _, nd := range survivors {
			m, ok := nd.member(leaver.Name())
			if !ok || m.State != StateLeft || nd.hasEvent(leaver.Name(), EventFail) {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "Leave seen by survivors", func() bool {
		return survivors[0].hasEvent(leaver.Name(), EventLeave) &&
			survivors[1].hasEvent(leaver.Name(), EventLeave)
	})
	window := 2 * expectedDetection(3)
	holdsFor(t, window, "left (never failed) on every survivor", leftEverywhere)
	t.Logf("no Fail event within %v after a graceful leave", window)
}

func TestRejoinAfterLeave(t *testing.T) {
	key := mustKey(t)
	nodes := startCluster(t, 3, key)
	old := nodes[2]
	ip, _, _ := strings.Cut(old.LocalAddr(), ":")
	port := old.LocalAddr()[len(ip)+1:]
	if err := old.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	old.kill(t)
	waitFor(t, 10*time.Second, "leave seen", func() bool {
		return nodes[0].hasEvent("node2", EventLeave) && nodes[1].hasEvent("node2", EventLeave)
	})

	// Same name, same address (a restarted daemon), new meta.
	var p int
	fmt.Sscan(port, &p)
	back := startNode(t, "node2", key, func(c *Config) { c.BindAddr = ip; c.BindPort = p })
	newMeta := testMeta("node2")
	newMeta.FreeCPUMillis = 123
	back.setMeta(newMeta)
	if err := back.UpdateMeta(context.Background()); err != nil {
		t.Fatal(err)
	}
	joinOK(t, back, nodes[0].LocalAddr())
	waitFor(t, 10*time.Second, "rejoined member alive everywhere with new meta", func() bool {
		for _, nd := range nodes[:2] {
			m, _ := nd.member("node2")
			if m.State != StateAlive || m.Meta.FreeCPUMillis != 123 {
				return false
			}
			if ev := nd.eventsFor("node2"); ev[len(ev)-1].Type != EventJoin && ev[len(ev)-1].Type != EventUpdate {
				return false
			}
		}
		return back.aliveCount() == 3
	})
	for _, nd := range nodes[:2] {
		if nd.hasEvent("node2", EventFail) {
			t.Errorf("%s reported node2 failed", nd.Name())
		}
	}
}

func TestMetaTooLarge(t *testing.T) {
	big := testMeta("big")
	for i := range 40 {
		big.Labels[fmt.Sprintf("label-%02d", i)] = strings.Repeat("x", 10)
	}
	if _, err := EncodeMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("EncodeMeta(big) = %v, want ErrMetaTooLarge", err)
	}

	_, err := New(Config{Name: "big", BindAddr: nextIP(), SecretKey: mustKey(t),
		Meta: func() Meta { return big }, Logger: testLogger(t)})
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("New with oversize meta = %v, want ErrMetaTooLarge", err)
	}
	t.Logf("error: %v", err)

	nodes := startCluster(t, 2, mustKey(t))
	big.Name = "node1"
	nodes[1].setMeta(big)
	if err := nodes[1].UpdateMeta(context.Background()); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta(oversize) = %v, want ErrMetaTooLarge", err)
	}
	// The oversize meta was never gossiped: a later valid update is what
	// peers see.
	ok := testMeta("node1")
	ok.FreeCPUMillis = 42
	nodes[1].setMeta(ok)
	if err := nodes[1].UpdateMeta(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "valid update seen", func() bool {
		m, _ := nodes[0].member("node1")
		return m.Meta.FreeCPUMillis == 42
	})
	for _, e := range nodes[0].eventsFor("node1") {
		if len(e.Meta.Labels) > 2 {
			t.Errorf("peer saw oversize meta: %d labels", len(e.Meta.Labels))
		}
	}
}

func TestEventsNeverBlock(t *testing.T) {
	key := mustKey(t)
	// A member nobody reads from, with room for one event.
	m, err := New(Config{Name: "slow", BindAddr: nextIP(), SecretKey: key,
		EventBuffer: 1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	nodes := startCluster(t, 3, key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Join(ctx, []string{nodes[0].LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "slow member sees everyone", func() bool {
		return len(m.Members()) == 4 && m.Dropped() > 0
	})
	select {
	case <-m.NeedResync():
	default:
		t.Fatal("NeedResync not signalled after drops")
	}
	rs := m.Resync()
	if len(rs) != 4 {
		t.Fatalf("Resync returned %d events, want 4", len(rs))
	}
	for _, e := range rs {
		if e.Type != EventJoin {
			t.Errorf("Resync: %s is %v, want join", e.Node, e.Type)
		}
	}
	t.Logf("dropped %d events; gossip went on", m.Dropped())
}

func TestConfigValidation(t *testing.T) {
	key := mustKey(t)
	for name, cfg := range map[string]Config{
		"no name":       {SecretKey: key},
		"no key":        {Name: "a"},
		"short key":     {Name: "a", SecretKey: key[:16]},
		"bad port":      {Name: "a", SecretKey: key, BindPort: 70000},
		"probe timeout": {Name: "a", SecretKey: key, ProbeInterval: time.Second, ProbeTimeout: time.Second},
		"meta name":     {Name: "a", SecretKey: key, Meta: func() Meta { return Meta{Name: "b"} }},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.BindAddr = nextIP()
			if m, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				if m != nil {
					_ = m.Shutdown()
				}
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestAfterShutdown(t *testing.T) {
	n := startNode(t, "a", mustKey(t))
	n.kill(t)
	if err := n.UpdateMeta(context.Background()); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Shutdown = %v", err)
	}
	if _, err := n.Join(context.Background(), []string{"127.0.0.1:1"}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Join after Shutdown = %v", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestJoinHonoursContext(t *testing.T) {
	n := startNode(t, "a", mustKey(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Join(ctx, []string{"127.0.0.1:1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Join with cancelled ctx = %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		key := mustKey(t)
		var nodes []*Membership
		for i := range 3 {
			m, err := New(Config{Name: fmt.Sprintf("g%d", i), BindAddr: nextIP(), SecretKey: key, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for range m.Events() {
				}
			}()
			nodes = append(nodes, m)
		}
		for _, m := range nodes[1:] {
			if _, err := m.Join(context.Background(), []string{nodes[0].LocalAddr()}); err != nil {
				t.Fatal(err)
			}
		}
		if err := nodes[2].Leave(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		for _, m := range nodes {
			if err := m.Shutdown(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after shutdown:\n%s",
				before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
