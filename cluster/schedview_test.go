package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/membership"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// sameView fails unless the FSM's incremental scheduler view holds what a
// view rebuilt from its records holds: per node the containers, reserved
// CPU and memory and the members of each group.
func sameView(t *testing.T, f *FSM, step int, groups []string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	live, err := f.s.schedLocked()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := f.s.snapshotLocked()
	if err != nil {
		t.Fatal(err)
	}
	ln, lc := live.Len()
	fn, fc := fresh.Len()
	if ln != fn || lc != fc {
		t.Fatalf("step %d: view holds %d nodes, %d containers; records %d, %d", step, ln, lc, fn, fc)
	}
	for name := range f.s.nodes {
		lu, _ := live.Usage(name)
		fu, _ := fresh.Usage(name)
		if lu != fu {
			t.Fatalf("step %d: node %s: view %+v, records %+v", step, name, lu, fu)
		}
		for _, g := range groups {
			a, _ := live.GroupCount(name, g)
			b, _ := fresh.GroupCount(name, g)
			if a != b {
				t.Fatalf("step %d: node %s group %s: view %d, records %d", step, name, g, a, b)
			}
		}
	}
}

// The view the FSM keeps as it applies commands equals one rebuilt from
// its records after every step of a random mix of creates, deletes,
// config updates, moves, re-placements, renames, profile changes and node
// changes; and a placement made on it passes the Apply re-check.
func TestSchedulerViewIncremental(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	f := NewFSM()
	nodes := []string{"n1", "n2", "n3", "n4"}
	for _, n := range nodes {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: StatusOnline, CpuMillis: 64000, MemoryBytes: 256 << 30, Labels: map[string]string{"zone": n[1:]}}})
	}
	groups := []string{"", "web", "db"}
	cfg := func() map[string]string {
		c := map[string]string{}
		if g := groups[r.IntN(3)]; g != "" {
			c[KeyGroup] = g
		}
		if r.IntN(2) == 0 {
			c["limits.cpu"] = fmt.Sprint(1 + r.IntN(2))
		}
		if r.IntN(2) == 0 {
			c["limits.memory"] = fmt.Sprintf("%dMiB", 64*(1+r.IntN(4)))
		}
		return c
	}
	var names []string
	seq := 0
	for step := range 600 {
		pick := func() string { return names[r.IntN(len(names))] }
		switch op := r.IntN(12); {
		case op < 4 || len(names) == 0:
			seq++
			name := fmt.Sprintf("c%d", seq)
			req, err := PlacementRequest(name, cfg(), "")
			if err != nil {
				t.Fatal(err)
			}
			node, _, err := f.Place(req, scheduler.Spread, nil)
			if err != nil {
				t.Fatal(err)
			}
			ct := &shoalv1.Container{Name: name, Node: node}
			ct.Config = map[string]string{}
			if req.Group != "" {
				ct.Config[KeyGroup] = req.Group
			}
			if err := apply(t, f, &shoalv1.ContainerCreateCommand{Container: ct}); err != nil {
				t.Fatalf("step %d: a placement on the view failed its re-check: %v", step, err)
			}
			names = append(names, name)
		case op == 4:
			i := r.IntN(len(names))
			mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: names[i]})
			names = append(names[:i], names[i+1:]...)
		case op == 5:
			mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: pick(), Config: cfg()})
		case op == 6:
			name := pick()
			ct, _ := f.Container(name)
			_ = apply(t, f, &shoalv1.ContainerMoveCommand{Name: name, From: ct.GetNode(), Node: nodes[r.IntN(4)]})
		case op == 7:
			name := pick()
			ct, _ := f.Container(name)
			_ = apply(t, f, &shoalv1.ContainerReplaceCommand{Name: name, From: ct.GetNode(), To: nodes[r.IntN(4)]})
		case op == 8:
			i := r.IntN(len(names))
			seq++
			to := fmt.Sprintf("c%d", seq)
			mustApply(t, f, &shoalv1.ContainerDesiredStateCommand{Name: names[i], DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED})
			mustApply(t, f, &shoalv1.ContainerRenameCommand{Name: names[i], NewName: to})
			names[i] = to
		case op == 9:
			mustApply(t, f, &shoalv1.ProfileUpdateCommand{Profile: &shoalv1.Profile{Name: DefaultProfile, Config: map[string]string{"limits.memory": fmt.Sprintf("%dMiB", 32*(1+r.IntN(3)))}}})
		case op == 10:
			n := nodes[r.IntN(4)]
			st := []string{StatusOnline, StatusOffline, StatusEvacuated}[r.IntN(3)]
			if r.IntN(3) > 0 {
				st = StatusOnline
			}
			mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: st, CpuMillis: 64000, MemoryBytes: 256 << 30, Labels: map[string]string{"zone": n[1:]}}})
		case op == 11:
			n := nodes[r.IntN(4)]
			mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: StatusOnline, CpuMillis: int64(32000 + 32000*r.IntN(2)), MemoryBytes: 256 << 30, Labels: map[string]string{"zone": n[1:]}}})
		}
		sameView(t, f, step, groups)
	}
}

// Cluster.Place, over the FSM's own view, never picks a member this
// member's gossip declares dead or gone, names why when nothing else is
// left, and agrees with PlacementSnapshot's copy; the view it shares is
// left as it was.
func TestPlaceAvoidsGossipDead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := c.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: StatusOnline, CpuMillis: 2000, MemoryBytes: 1 << 30}}); err != nil {
			t.Fatal(err)
		}
	}
	// n1 is the fullest: spread prefers n2 and n3.
	if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "x", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	g := &fakeGossip{}
	c.SetGossip(g.view)
	now := time.Now()
	g.set(membership.Member{Name: "n1", State: membership.StateAlive, Since: now},
		membership.Member{Name: "n2", State: membership.StateDead, Since: now},
		membership.Member{Name: "n3", State: membership.StateLeft, Since: now})
	req := scheduler.Request{Name: "y"}
	got, _, err := c.Place(req, scheduler.Spread)
	if err != nil || got != "n1" {
		t.Fatalf("placed on %q (%v), want n1, the only live member", got, err)
	}
	snap, err := c.PlacementSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _ := scheduler.Place(snap, req, scheduler.Spread); want != got {
		t.Fatalf("Place chose %s, PlacementSnapshot's copy %s", got, want)
	}
	_, _, err = c.Place(scheduler.Request{Name: "z", Target: "n2"}, scheduler.Spread)
	if !errors.Is(err, scheduler.ErrNoFit) || !strings.Contains(err.Error(), "dead") {
		t.Fatalf("placing on a --target gossip declared dead: %v", err)
	}
	g.set(membership.Member{Name: "n1", State: membership.StateAlive, Since: now},
		membership.Member{Name: "n2", State: membership.StateAlive, Since: now},
		membership.Member{Name: "n3", State: membership.StateAlive, Since: now})
	if got, _, err := c.Place(req, scheduler.Spread); err != nil || got != "n2" {
		t.Fatalf("all alive again: placed on %q (%v), want n2", got, err)
	}
}
