package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startMembers opens a bootstrap member and adds the others as voters.
func startMembers(t *testing.T, ctx context.Context, n int, cfg func(i int, join bool) Config) []*Cluster {
	t.Helper()
	members := make([]*Cluster, n)
	var err error
	if members[0], err = Open(ctx, cfg(0, false)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if members[i], err = Open(ctx, cfg(i, true)); err != nil {
			t.Fatal(err)
		}
		if err := members[0].AddMember(ctx, members[i].NodeName(), members[i].Addr(), true); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
	})
	return members
}

func leaderOf(members []*Cluster) *Cluster {
	for _, m := range members {
		if m != nil && m.IsLeader() {
			return m
		}
	}
	return nil
}

// TestThreeMembers forms a real three-member Raft cluster over loopback TCP,
// plain and in mutual TLS: writes replicate, followers refuse writes, and
// losing the leader elects a new one that accepts writes; the old leader
// catches up when it returns.
func TestThreeMembers(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testThreeMembers(t, false) })
	t.Run("mtls", func(t *testing.T) { testThreeMembers(t, true) })
}

func testThreeMembers(t *testing.T, mtls bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	binds := []string{"127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"}
	var ca *pki.CA
	if mtls {
		var err error
		if ca, err = pki.NewCA("test", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(i int, join bool) Config {
		c := Config{NodeName: fmt.Sprintf("n%d", i+1), DataDir: dirs[i], BindAddr: binds[i], Join: join}
		if ca != nil {
			ip := net.ParseIP(fmt.Sprintf("127.0.0.%d", i+1))
			cert, err := pki.IssueSelf(ca, c.NodeName, pki.RoleNode, nil, []net.IP{ip}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			c.ServerTLS = pki.ServerTLS(ca.Pool(), cert, true)
			c.ClientTLS = pki.ClientTLS(ca.Pool(), &cert, "")
		}
		return c
	}
	members := startMembers(t, ctx, 3, cfg)
	var err error
	servers, err := members[0].Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("servers = %v, %v", servers, err)
	}
	create := func(m *Cluster, name string) error {
		return m.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n1"}})
	}
	if err := create(members[0], "a"); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		waitFor(t, m.NodeName()+" to apply the write", 10*time.Second, func() bool {
			_, err := m.FSM().Container("a")
			return err == nil
		})
	}
	if err := create(members[1], "b"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write on a follower: %v, want ErrNotLeader", err)
	}
	if name, _ := members[1].Leader(); name != "n1" {
		t.Fatalf("follower sees leader %q", name)
	}

	// Lose the leader: the other two elect one and accept writes.
	start := time.Now()
	binds[0] = members[0].Addr() // a member comes back at the address the others know
	members[0].Close()
	members[0] = nil
	var leader *Cluster
	waitFor(t, "a new leader", 15*time.Second, func() bool { leader = leaderOf(members); return leader != nil })
	t.Logf("new leader %s after %s", leader.NodeName(), time.Since(start))
	if err := create(leader, "c"); err != nil {
		t.Fatal(err)
	}

	// The old leader comes back from its data dir and catches up.
	if members[0], err = Open(ctx, cfg(0, true)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n1 to catch up", 15*time.Second, func() bool {
		_, err := members[0].FSM().Container("c")
		return err == nil
	})
	if members[0].IsLeader() && leader.IsLeader() {
		t.Fatal("two leaders")
	}
	if !mtls {
		return
	}
	// A member with a certificate from another CA cannot take part.
	other, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rogue := Config{NodeName: "rogue", DataDir: t.TempDir(), BindAddr: "127.0.0.4:0", Join: true}
	cert, err := pki.IssueSelf(other, "rogue", pki.RoleNode, nil, []net.IP{net.ParseIP("127.0.0.4")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rogue.ServerTLS, rogue.ClientTLS = pki.ServerTLS(other.Pool(), cert, true), pki.ClientTLS(other.Pool(), &cert, "")
	r, err := Open(ctx, rogue)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if err := leader.AddMember(short, "rogue", r.Addr(), false); err == nil {
		// The configuration change commits without the new member, but the
		// rogue must never receive the log.
		time.Sleep(time.Second)
		if _, err := r.FSM().Container("a"); err == nil {
			t.Fatal("a member with a foreign certificate received the cluster's state")
		}
	}
}

// TestCatchUpFromSnapshot: a member that was down while the others wrote
// and compacted their logs past its position catches up from a snapshot.
func TestCatchUpFromSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	binds := []string{"127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	cfg := func(i int, join bool) Config {
		return Config{NodeName: fmt.Sprintf("n%d", i+1), DataDir: dirs[i], BindAddr: binds[i], Join: join,
			SnapshotThreshold: 16, TrailingLogs: 4}
	}
	members := startMembers(t, ctx, 3, cfg)
	var err error
	binds[2] = members[2].Addr()
	n3Last := members[2].raft.LastIndex()
	members[2].Close()
	members[2] = nil
	for i := 0; i < 100; i++ {
		if err := members[0].Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: fmt.Sprintf("c%d", i), Node: "n1"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := members[0].Snapshot(); err != nil {
		t.Fatal(err)
	}
	// The entries n3 misses are gone from the leader's log: only a snapshot
	// can bring it up to date.
	if first, _ := members[0].store.FirstIndex(); first <= n3Last {
		t.Fatalf("leader log still starts at %d (n3 stopped at %d): not compacted", first, n3Last)
	}
	if members[2], err = Open(ctx, cfg(2, true)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n3 to catch up", 20*time.Second, func() bool { return len(members[2].FSM().Containers()) == 100 })
}

// TestFollowerReadsItsOwnWrite: a write proposed through a follower (and
// forwarded to the leader) is in that follower's FSM the moment Propose
// returns. Raft marks entries applied when it hands them to the FSM, not
// when the FSM has applied them; waiting on the former let a create be
// "not found" right after it succeeded.
func TestFollowerReadsItsOwnWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	members := startMembers(t, ctx, 3, func(i int, join bool) Config {
		return Config{NodeName: fmt.Sprintf("n%d", i+1), DataDir: dirs[i], BindAddr: "127.0.0.1:0", Join: join}
	})
	byName := map[string]*Cluster{}
	for _, m := range members {
		byName[m.NodeName()] = m
	}
	for _, m := range members {
		m.SetForwarder(func(ctx context.Context, leader string, data []byte) (uint64, error) {
			return byName[leader].ProposeIndex(ctx, data)
		}, nil)
	}
	waitFor(t, "the followers to know the leader", 10*time.Second, func() bool {
		for _, m := range members {
			if name, _ := m.Leader(); name == "" {
				return false
			}
		}
		return true
	})
	var follower *Cluster
	for _, m := range members {
		if !m.IsLeader() {
			follower = m
		}
	}
	for i := range 300 {
		name := fmt.Sprintf("c%d", i)
		if err := follower.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := follower.FSM().Container(name); err != nil {
			t.Fatalf("write %d: Propose through %s returned, but its FSM has no %s: %v", i, follower.NodeName(), name, err)
		}
	}
	// A write forwarded to a member that does not lead is refused at once,
	// not forwarded on (two members each taking the other for the leader
	// would wait on each other).
	data, err := Encode(&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "fwd", Node: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follower.ApplyForwarded(ctx, data); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("ApplyForwarded on a follower: %v, want ErrNotLeader", err)
	}
	if _, err := follower.FSM().Container("fwd"); err == nil {
		t.Fatal("the refused forwarded write was applied")
	}
}
