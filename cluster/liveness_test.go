package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/membership"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// fakeGossip is a gossip view the test sets.
type fakeGossip struct {
	mu      sync.Mutex
	members []membership.Member
}

func (g *fakeGossip) set(ms ...membership.Member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = ms
}

func (g *fakeGossip) view() []membership.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]membership.Member(nil), g.members...)
}

// The leader refuses to record a container on a member its gossip sees
// dead or gone, before the FSM would ever mark it offline; a live member
// takes it, and so does a member gossip does not know.
func TestLeaderRefusesPlacementOnTheDead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if err := c.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: StatusOnline, CpuMillis: 2000, MemoryBytes: 1 << 30}}); err != nil {
			t.Fatal(err)
		}
	}
	g := &fakeGossip{}
	c.SetGossip(g.view)
	now := time.Now()
	g.set(membership.Member{Name: "n1", State: membership.StateAlive, Since: now},
		membership.Member{Name: "n2", State: membership.StateDead, Since: now.Add(-time.Second)},
		membership.Member{Name: "n3", State: membership.StateLeft, Since: now})

	create := func(name, node string) error {
		return c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: node}})
	}
	if err := create("a", "n2"); !errors.Is(err, ErrPlacementRefused) || !strings.Contains(err.Error(), "n2") || !strings.Contains(err.Error(), "dead") {
		t.Fatalf("create on a member gossip declared dead: %v", err)
	}
	if err := create("a", "n3"); !errors.Is(err, ErrPlacementRefused) || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("create on a member that left: %v", err)
	}
	if _, err := c.FSM().Container("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create left a record: %v", err)
	}
	for _, node := range []string{"n1", "n4"} {
		if err := create("on-"+node, node); err != nil {
			t.Fatalf("create on %s (alive, or unknown to gossip): %v", node, err)
		}
	}
	// The member comes back: it takes containers again.
	g.set(membership.Member{Name: "n2", State: membership.StateAlive, Since: now})
	if err := create("a", "n2"); err != nil {
		t.Fatalf("create on a member back alive: %v", err)
	}
	// The FSM's status counts without gossip too.
	if err := c.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n4", Status: StatusOffline, CpuMillis: 2000, MemoryBytes: 1 << 30}}); err != nil {
		t.Fatal(err)
	}
	if why, gone := c.Unreachable("n4"); !gone || why != "offline" {
		t.Fatalf("n4 offline in the FSM: %q %v", why, gone)
	}
	if _, gone := c.Unreachable("n1"); gone {
		t.Fatal("this member is never unreachable to itself")
	}
	// A re-placement onto the dead is refused the same way.
	g.set(membership.Member{Name: "n2", State: membership.StateDead, Since: now})
	if err := c.Propose(ctx, &shoalv1.ContainerReplaceCommand{Name: "on-n1", From: "n1", To: "n2"}); !errors.Is(err, ErrPlacementRefused) {
		t.Fatalf("re-place onto a dead member: %v", err)
	}
}

// A container whose member died before it came up there moves, unborn, to
// a live member in one entry; one its member reported up, one attaching
// volumes, or a move to a member that is not online is refused.
func TestReplaceCommand(t *testing.T) {
	f := NewFSM()
	for _, n := range []string{"n1", "n2", "n3"} {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	}
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n3", Status: StatusOffline, CpuMillis: 2000, MemoryBytes: 1 << 30}})
	two := map[string]string{"limits.cpu": "2"}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "new", Node: "n1", Config: two}})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "up", Node: "n1"}})
	mustApply(t, f, &shoalv1.ContainerStatusCommand{Name: "up", Node: "n1", Status: "Running"})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "busy", Node: "n2", Config: map[string]string{"limits.cpu": "1"}}})

	replace := func(name, from, to string) error {
		return apply(t, f, &shoalv1.ContainerReplaceCommand{Name: name, From: from, To: to})
	}
	if err := replace("up", "n1", "n2"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "came up") {
		t.Fatalf("re-place a container its member reported running: %v", err)
	}
	if err := replace("new", "n2", "n3"); !errors.Is(err, ErrInUse) {
		t.Fatalf("re-place from a member it is not on: %v", err)
	}
	if err := replace("new", "n1", "n3"); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("re-place onto an offline member: %v", err)
	}
	if err := replace("new", "n1", "n2"); err == nil {
		t.Fatal("re-placed onto n2, whose CPUs are partly taken: two CPUs do not fit")
	}
	mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: "busy"})
	if err := replace("new", "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	ct, _ := f.Container("new")
	if ct.GetNode() != "n2" || ct.GetGeneration() != 1 || ct.GetStatus() != "" {
		t.Fatalf("after the re-placement: node %s generation %d status %q", ct.GetNode(), ct.GetGeneration(), ct.GetStatus())
	}
}

// The leader places again what an offline member never brought up (the
// member running the create's wait may have died with it), and leaves
// what came up there, and what attaches volumes there, to healing.
func TestLeaderReplacesUnborn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	node := func(name, st string) {
		t.Helper()
		if err := c.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: name, Status: st, CpuMillis: 2000, MemoryBytes: 1 << 30}}); err != nil {
			t.Fatal(err)
		}
	}
	node("n1", StatusOnline)
	node("n2", StatusOnline)
	for _, name := range []string{"unborn", "pulling", "up"} {
		if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n2"}}); err != nil {
			t.Fatal(err)
		}
	}
	for name, st := range map[string]string{"pulling": "Pulling", "up": "Running"} {
		if err := c.Propose(ctx, &shoalv1.ContainerStatusCommand{Name: name, Node: "n2", Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	c.replaceUnborn(ctx)
	if ct, _ := c.FSM().Container("unborn"); ct.GetNode() != "n2" {
		t.Fatalf("placed again off a member that is online: %s", ct.GetNode())
	}
	node("n2", StatusOffline)
	c.replaceUnborn(ctx)
	for name, want := range map[string]string{"unborn": "n1", "pulling": "n1", "up": "n2"} {
		if ct, _ := c.FSM().Container(name); ct.GetNode() != want {
			t.Errorf("%s on %s after the sweep, want %s", name, ct.GetNode(), want)
		}
	}
}
