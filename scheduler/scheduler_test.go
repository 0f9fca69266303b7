package scheduler

import (
	"errors"
	"strings"
	"testing"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func node(name string, cpu, mem int64, labels ...string) Node {
	n := Node{Name: name, Status: StatusOnline, CPUMillis: cpu, MemoryBytes: mem}
	if len(labels) > 0 {
		n.Labels = map[string]string{}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			n.Labels[k] = v
		}
	}
	return n
}

func withStatus(n Node, st string) Node { n.Status = st; return n }

// noBFQ is the reason a host without BFQ gives for limits.disk.priority.
const noBFQ = "this host cannot enforce I/O weights (no BFQ scheduler on its block devices; offered: none mq-deadline kyber)"

func withoutBFQ(n Node) Node {
	n.Unenforceable = map[string]string{"limits.disk.priority": noBFQ}
	return n
}

func mustSnapshot(t testing.TB, nodes []Node, cs []Container) *Snapshot {
	t.Helper()
	s, err := NewSnapshot(nodes, cs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rejectedBy returns node → filter for a *NoFitError.
func rejectedBy(t *testing.T, err error) map[string]Filter {
	t.Helper()
	var nf *NoFitError
	if !errors.As(err, &nf) || !errors.Is(err, ErrNoFit) {
		t.Fatalf("error %v: want a *NoFitError wrapping ErrNoFit", err)
	}
	m := map[string]Filter{}
	for _, r := range nf.Rejections {
		m[r.Node] = r.Filter
	}
	return m
}

func TestFilters(t *testing.T) {
	base := []Node{
		node("n1", 2000, 4*gib, "zone=a", "disk=ssd"),
		node("n2", 2000, 4*gib, "zone=b", "disk=ssd"),
		node("n3", 2000, 4*gib, "zone=a"),
	}
	busy := []Container{
		{Name: "big1", Node: "n1", CPUMillis: 1500, MemoryBytes: 3 * gib},
		{Name: "w1", Node: "n2", Group: "web"},
		{Name: "w2", Node: "n3", Group: "web"},
		{Name: "w3", Node: "n3", Group: "web"},
	}
	tests := []struct {
		name   string
		nodes  []Node
		cs     []Container
		req    Request
		want   string            // chosen node, "" when none fits
		reject map[string]Filter // when want == "": every node's filter
	}{
		{name: "all eligible, spread picks lowest name", nodes: base, req: Request{Name: "c"}, want: "n1"},
		{name: "status: offline and evacuated skipped",
			nodes: []Node{withStatus(base[0], StatusOffline), withStatus(base[1], StatusEvacuated), base[2]},
			req:   Request{Name: "c"}, want: "n3"},
		{name: "status: none online",
			nodes:  []Node{withStatus(base[0], StatusOffline), withStatus(base[1], StatusEvacuated), withStatus(base[2], "")},
			req:    Request{Name: "c"},
			reject: map[string]Filter{"n1": FilterStatus, "n2": FilterStatus, "n3": FilterStatus}},
		{name: "status: no capacity reported",
			nodes:  []Node{node("n1", 0, gib), node("n2", 1000, 0)},
			req:    Request{Name: "c"},
			reject: map[string]Filter{"n1": FilterStatus, "n2": FilterStatus}},
		{name: "capacity: cpu", nodes: base, cs: busy[:1], req: Request{Name: "c", CPUMillis: 1000}, want: "n2"},
		{name: "capacity: memory", nodes: base, cs: busy[:1], req: Request{Name: "c", MemoryBytes: 2 * gib}, want: "n2"},
		{name: "capacity: exact fit", nodes: base[:1], cs: busy[:1], req: Request{Name: "c", CPUMillis: 500, MemoryBytes: gib}, want: "n1"},
		{name: "capacity: unlimited request fits a full node", nodes: base[:1], cs: busy[:1], req: Request{Name: "c"}, want: "n1"},
		{name: "capacity: too big everywhere", nodes: base, req: Request{Name: "c", CPUMillis: 4000},
			reject: map[string]Filter{"n1": FilterCapacity, "n2": FilterCapacity, "n3": FilterCapacity}},
		{name: "constraint: one label", nodes: base, req: Request{Name: "c", Constraints: map[string]string{"zone": "b"}}, want: "n2"},
		{name: "constraint: two labels", nodes: base, cs: busy[:1],
			req: Request{Name: "c", Constraints: map[string]string{"zone": "a", "disk": "ssd"}}, want: "n1"},
		{name: "constraint: two labels, the only match is full", nodes: base, cs: busy[:1],
			req:    Request{Name: "c", CPUMillis: 1000, Constraints: map[string]string{"zone": "a", "disk": "ssd"}},
			reject: map[string]Filter{"n1": FilterCapacity, "n2": FilterConstraint, "n3": FilterConstraint}},
		{name: "constraint: value no node has", nodes: base, req: Request{Name: "c", Constraints: map[string]string{"zone": "z"}},
			reject: map[string]Filter{"n1": FilterConstraint, "n2": FilterConstraint, "n3": FilterConstraint}},
		{name: "target: honoured over spread", nodes: base, cs: busy[:1], req: Request{Name: "c", Target: "n1"}, want: "n1"},
		{name: "target: must still fit", nodes: base, cs: busy[:1], req: Request{Name: "c", Target: "n1", CPUMillis: 1000},
			reject: map[string]Filter{"n1": FilterCapacity}},
		{name: "target: must match constraints", nodes: base, req: Request{Name: "c", Target: "n3", Constraints: map[string]string{"disk": "ssd"}},
			reject: map[string]Filter{"n3": FilterConstraint}},
		{name: "target: must be online", nodes: []Node{base[0], withStatus(base[1], StatusEvacuated)}, req: Request{Name: "c", Target: "n2"},
			reject: map[string]Filter{"n2": FilterStatus}},
		{name: "host: a node that cannot enforce a set key is skipped",
			nodes: []Node{withoutBFQ(base[0]), base[1], base[2]},
			req:   Request{Name: "c", Keys: []string{"limits.cpu", "limits.disk.priority"}}, want: "n2"},
		{name: "host: keys the request does not set do not matter",
			nodes: []Node{withoutBFQ(base[0]), base[1], base[2]},
			req:   Request{Name: "c", Keys: []string{"limits.cpu"}}, want: "n1"},
		{name: "host: no node can enforce it",
			nodes:  []Node{withoutBFQ(base[0]), withoutBFQ(base[1])},
			req:    Request{Name: "c", Keys: []string{"limits.disk.priority"}},
			reject: map[string]Filter{"n1": FilterHost, "n2": FilterHost}},
		{name: "host: target that cannot enforce it",
			nodes:  []Node{withoutBFQ(base[0]), base[1]},
			req:    Request{Name: "c", Target: "n1", Keys: []string{"limits.disk.priority"}},
			reject: map[string]Filter{"n1": FilterHost}},
		{name: "host: with a group, the emptiest node cannot enforce it",
			nodes: []Node{withoutBFQ(base[0]), base[1], base[2]}, cs: busy[1:],
			req: Request{Name: "c", Group: "web", Keys: []string{"limits.disk.priority"}}, want: "n2"},
		{name: "group: soft spread prefers nodes without members", nodes: base, cs: busy[1:], req: Request{Name: "c", Group: "web"}, want: "n1"},
		{name: "group: soft spread, fewest members", nodes: base[1:], cs: busy[1:], req: Request{Name: "c", Group: "web"}, want: "n2"},
		{name: "group: soft spread never rejects", nodes: base[2:], cs: busy[2:], req: Request{Name: "c", Group: "web"}, want: "n3"},
		{name: "group: hard cap", nodes: base[1:], cs: busy[1:], req: Request{Name: "c", Group: "web", MaxPerNode: 2}, want: "n2"},
		{name: "group: hard cap everywhere", nodes: base[1:], cs: busy[1:], req: Request{Name: "c", Group: "web", MaxPerNode: 1},
			reject: map[string]Filter{"n2": FilterGroup, "n3": FilterGroup}},
		{name: "group: other groups do not count", nodes: base[1:], cs: busy[1:], req: Request{Name: "c", Group: "db", MaxPerNode: 1}, want: "n2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSnapshot(t, tt.nodes, tt.cs)
			for _, strat := range []Strategy{Spread, Binpack} {
				got, ex, err := Place(s, tt.req, strat)
				if tt.want == "" {
					if got != "" {
						t.Fatalf("%v: placed on %q, want no fit", strat, got)
					}
					if m := rejectedBy(t, err); !mapsEqual(m, tt.reject) {
						t.Fatalf("%v: rejections %v, want %v\n%v", strat, m, tt.reject, err)
					}
					if len(ex.Rejections) != len(tt.reject) {
						t.Fatalf("%v: explanation has %d rejections, want %d", strat, len(ex.Rejections), len(tt.reject))
					}
					continue
				}
				if err != nil {
					t.Fatalf("%v: %v", strat, err)
				}
				// Binpack may legitimately choose differently; every choice must pass Check.
				if strat == Spread && got != tt.want {
					t.Fatalf("placed on %q, want %q (%+v)", got, tt.want, ex)
				}
				if ex.Chosen != got || ex.Feasible == 0 {
					t.Fatalf("explanation %+v for %q", ex, got)
				}
				if err := Check(s, got, tt.req); err != nil {
					t.Fatalf("%v: Check(%s): %v", strat, got, err)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]Filter) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPlaceErrors(t *testing.T) {
	s := mustSnapshot(t, []Node{node("n1", 1000, gib)}, nil)
	for _, tt := range []struct {
		req   Request
		strat Strategy
		want  error
	}{
		{Request{Name: "c", Target: "nope"}, Spread, ErrUnknownNode},
		{Request{Name: "c", CPUMillis: -1}, Spread, ErrInvalid},
		{Request{Name: "c", MemoryBytes: -1}, Spread, ErrInvalid},
		{Request{Name: "c", Group: "g", MaxPerNode: -1}, Spread, ErrInvalid},
		{Request{Name: "c"}, Strategy(9), ErrUnknownStrategy},
	} {
		if _, _, err := Place(s, tt.req, tt.strat); !errors.Is(err, tt.want) {
			t.Errorf("Place(%+v, %v) = %v, want %v", tt.req, tt.strat, err, tt.want)
		}
		if _, err := Explain(s, tt.req, tt.strat); !errors.Is(err, tt.want) {
			t.Errorf("Explain(%+v, %v) = %v, want %v", tt.req, tt.strat, err, tt.want)
		}
	}
	if err := Check(s, "nope", Request{Name: "c"}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Check(unknown node) = %v", err)
	}
	empty := mustSnapshot(t, nil, nil)
	_, _, err := Place(empty, Request{Name: "c"}, Spread)
	if !errors.Is(err, ErrNoFit) || err.Error() != "no node can run c: the cluster has no nodes" {
		t.Errorf("empty cluster: %v", err)
	}
}

func TestStrategies(t *testing.T) {
	nodes := []Node{node("a", 4000, 8*gib), node("b", 4000, 8*gib), node("c", 4000, 8*gib), node("d", 2000, 2*gib)}
	cs := []Container{
		{Name: "x1", Node: "a", CPUMillis: 2800, MemoryBytes: gib},     // cpu 70%
		{Name: "x2", Node: "b", CPUMillis: 1000, MemoryBytes: 4 * gib}, // mem 50%
		{Name: "x3", Node: "c", CPUMillis: 400, MemoryBytes: 512 * mib},
		{Name: "x4", Node: "d", CPUMillis: 1000, MemoryBytes: 512 * mib}, // cpu 50% of a small node
	}
	s := mustSnapshot(t, nodes, cs)
	for _, tt := range []struct {
		strat Strategy
		req   Request
		want  string
	}{
		{Spread, Request{Name: "r", CPUMillis: 500, MemoryBytes: 256 * mib}, "c"},
		{Binpack, Request{Name: "r", CPUMillis: 500, MemoryBytes: 256 * mib}, "a"},  // a: 82.5% cpu, d: 75%
		{Binpack, Request{Name: "r", CPUMillis: 1000, MemoryBytes: 256 * mib}, "d"}, // d: 100% cpu, a: 95%
		{Binpack, Request{Name: "r", CPUMillis: 1500, MemoryBytes: 2 * gib}, "b"},   // a, d cannot fit; b: 75% mem, c: 47.5% cpu
		{Spread, Request{Name: "r", CPUMillis: 100, MemoryBytes: 4 * gib}, "c"},     // dominant resource: memory
		{Spread, Request{Name: "r", Constraints: nil, Target: "d"}, "d"},
	} {
		got, ex, err := Place(s, tt.req, tt.strat)
		if err != nil || got != tt.want {
			t.Errorf("%v %+v: got %q (%v), want %q; %+v", tt.strat, tt.req, got, err, tt.want, ex)
		}
		full, err := Explain(s, tt.req, tt.strat)
		if err != nil || full.Chosen != got || full.Load != ex.Load || full.Feasible != ex.Feasible {
			t.Errorf("%v %+v: Explain %+v (%v) disagrees with Place %+v", tt.strat, tt.req, full, err, ex)
		}
	}
}

func TestBinpackOverloadedRanksLast(t *testing.T) {
	nodes := []Node{node("a", 1000, 64*gib), node("b", 1000, 64*gib), node("c", 1000, 64*gib)}
	var cs []Container
	for i := range 12 { // 12 unlimited containers on a: load 1.2 CPUs
		cs = append(cs, Container{Name: "u" + string(rune('a'+i)), Node: "a"})
	}
	cs = append(cs, Container{Name: "v", Node: "b", CPUMillis: 500}, Container{Name: "w", Node: "c", CPUMillis: 600})
	s := mustSnapshot(t, nodes, cs)
	if got, _, _ := Place(s, Request{Name: "r"}, Binpack); got != "c" {
		t.Fatalf("binpack chose %q, want c (a is past full load)", got)
	}
	if err := s.SetStatus("b", StatusOffline); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStatus("c", StatusOffline); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := Place(s, Request{Name: "r"}, Binpack); got != "a" {
		t.Fatalf("binpack chose %q, want a (the only node left)", got)
	}
}

func TestDeterministicTieBreak(t *testing.T) {
	nodes := []Node{node("n3", 2000, 4*gib), node("n1", 2000, 4*gib), node("n2", 2000, 4*gib), node("n0", 1000, 4*gib)}
	s := mustSnapshot(t, nodes, []Container{{Name: "x", Node: "n0", CPUMillis: 10}})
	for _, strat := range []Strategy{Spread, Binpack} {
		want := map[Strategy]string{Spread: "n1", Binpack: "n0"}[strat]
		for i := range 100 {
			// A fresh snapshot from nodes in another order must not matter either.
			rot := append(append([]Node{}, nodes[i%4:]...), nodes[:i%4]...)
			s2 := mustSnapshot(t, rot, []Container{{Name: "x", Node: "n0", CPUMillis: 10}})
			for _, snap := range []*Snapshot{s, s2} {
				got, _, err := Place(snap, Request{Name: "c", CPUMillis: 100, Constraints: map[string]string{}}, strat)
				if err != nil || got != want {
					t.Fatalf("%v run %d: got %q (%v), want %q", strat, i, got, err, want)
				}
			}
		}
	}
}

func TestCheckRefusesOversubscription(t *testing.T) {
	s := mustSnapshot(t, []Node{node("n1", 2000, 2*gib), node("n2", 2000, 2*gib)}, nil)
	req := func(name string) Request { return Request{Name: name, CPUMillis: 1500, MemoryBytes: gib} }
	// Two launches decided on the same state pick the same node...
	a, _, _ := Place(s, req("a"), Spread)
	b, _, _ := Place(s, req("b"), Spread)
	if a != "n1" || b != "n1" {
		t.Fatalf("placed %q and %q", a, b)
	}
	// ...the FSM applies the first, then refuses the second.
	if err := Check(s, a, req("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(Container{Name: "a", Node: a, CPUMillis: 1500, MemoryBytes: gib}); err != nil {
		t.Fatal(err)
	}
	err := Check(s, b, req("b"))
	if !errors.Is(err, ErrNoFit) || err.Error() != "cannot run b on n1: needs 1.5 CPU, 0.5 free" {
		t.Fatalf("Check = %v", err)
	}
	// Placing again on the new state goes elsewhere, and then nothing fits.
	if got, _, _ := Place(s, req("b"), Spread); got != "n2" {
		t.Fatalf("second launch placed on %q, want n2", got)
	}
	if err := s.Add(Container{Name: "b", Node: "n2", CPUMillis: 1500, MemoryBytes: gib}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Place(s, req("c"), Spread); !errors.Is(err, ErrNoFit) {
		t.Fatalf("third launch: %v", err)
	}
	if err := Check(s, "n1", Request{Name: "c", Target: "n2"}); rejectedBy(t, err)["n1"] != FilterTarget {
		t.Fatalf("Check against another --target: %v", err)
	}
}

func TestLaunchesInARowNeverOversubscribe(t *testing.T) {
	s := mustSnapshot(t, []Node{node("n1", 4000, 8*gib), node("n2", 2000, 8*gib), node("n3", 3000, 2*gib)}, nil)
	for _, strat := range []Strategy{Spread, Binpack} {
		s := mustSnapshot(t, s.nodes, nil)
		placed := 0
		for i := 0; ; i++ {
			req := Request{Name: "c" + string(rune('A'+i)), CPUMillis: 700, MemoryBytes: 900 * mib}
			got, _, err := Place(s, req, strat)
			if errors.Is(err, ErrNoFit) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(s, got, req); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(Container{Name: req.Name, Node: got, CPUMillis: req.CPUMillis, MemoryBytes: req.MemoryBytes}); err != nil {
				t.Fatal(err)
			}
			placed++
		}
		// n1 takes 5 (cpu), n2 2 (cpu), n3 2 (memory).
		if placed != 9 {
			t.Errorf("%v: placed %d, want 9", strat, placed)
		}
		for _, n := range s.nodes {
			u, _ := s.Usage(n.Name)
			if u.FreeCPU < 0 || u.FreeMemory < 0 {
				t.Errorf("%v: %s oversubscribed: %+v", strat, n.Name, u)
			}
		}
	}
}

func TestNoFitErrorListsEveryNode(t *testing.T) {
	s := mustSnapshot(t, []Node{
		withStatus(node("node1", 2000, 4*gib, "zone=a"), StatusOffline),
		node("node2", 2000, 612*mib, "zone=a"),
		node("node3", 2000, 4*gib, "zone=b"),
		node("node4", 2000, 4*gib),
		node("node5", 1000, 256*mib, "zone=a"),
		node("node6", 2000, 4*gib, "zone=a"),
	}, []Container{
		{Name: "x", Node: "node2", MemoryBytes: 512 * mib},
		{Name: "w", Node: "node6", Group: "web"},
	})
	req := Request{Name: "c1", CPUMillis: 1500, MemoryBytes: 512 * mib, Constraints: map[string]string{"zone": "a"}, Group: "web", MaxPerNode: 1}
	_, ex, err := Place(s, req, Spread)
	want := "no node can run c1: node1: offline; node2: needs 512MiB memory, 100MiB free; " +
		"node3: label zone=b does not match zone=a; node4: no label zone (want zone=a); " +
		"node5: needs 1.5 CPU, 1 free, and 512MiB memory, 256MiB free; " +
		"node6: already runs 1 of group web (max 1 per node)"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got %v\nwant %s", err, want)
	}
	if len(ex.Rejections) != 6 || ex.Chosen != "" {
		t.Fatalf("explanation %+v", ex)
	}
	full, err2 := Explain(s, req, Spread)
	if err2 == nil || err2.Error() != want || len(full.Rejections) != 6 {
		t.Fatalf("Explain: %+v, %v", full, err2)
	}
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]Strategy{"": Spread, "spread": Spread, "binpack": Binpack} {
		if got, err := ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %v, %v", in, got, err)
		}
		if in != "" && want.String() != in {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	_, err := ParseStrategy("random")
	if !errors.Is(err, ErrUnknownStrategy) || !strings.Contains(err.Error(), "spread") || !strings.Contains(err.Error(), "binpack") {
		t.Errorf("ParseStrategy(random) = %v, want the allowed values named", err)
	}
}

func TestSnapshotUpdates(t *testing.T) {
	nodes := []Node{node("n1", 2000, 2*gib), node("n2", 2000, 2*gib)}
	if _, err := NewSnapshot(append(nodes, node("n1", 1, 1)), nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate node: %v", err)
	}
	if _, err := NewSnapshot([]Node{{CPUMillis: 1}}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("unnamed node: %v", err)
	}
	if _, err := NewSnapshot(nodes, []Container{{Name: "a", Node: "n9"}}); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("container on unknown node: %v", err)
	}
	s := mustSnapshot(t, nodes, nil)
	for _, tt := range []struct {
		c    Container
		want error
	}{
		{Container{Name: "a", Node: "n1", CPUMillis: 1000, MemoryBytes: gib, Group: "g"}, nil},
		{Container{Name: "a", Node: "n2"}, ErrDuplicate},
		{Container{Name: "b", Node: "n1", CPUMillis: -1}, ErrInvalid},
		{Container{Name: "b", Node: "zz"}, ErrUnknownNode},
		{Container{Name: "b", Node: "n1", Group: "g"}, nil},
	} {
		if err := s.Add(tt.c); !errors.Is(err, tt.want) {
			t.Errorf("Add(%+v) = %v, want %v", tt.c, err, tt.want)
		}
	}
	u, _ := s.Usage("n1")
	if u != (Usage{Containers: 2, CPUMillis: 1000, MemoryBytes: gib, FreeCPU: 1000, FreeMemory: gib}) {
		t.Errorf("usage %+v", u)
	}
	if n, _ := s.GroupCount("n1", "g"); n != 2 {
		t.Errorf("group count %d", n)
	}
	// Adding changes the next decision; removing restores it.
	if got, _, _ := Place(s, Request{Name: "c"}, Spread); got != "n2" {
		t.Errorf("after Add: %q", got)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("b"); !errors.Is(err, ErrUnknownContainer) {
		t.Errorf("Remove twice: %v", err)
	}
	if u, _ := s.Usage("n1"); u != (Usage{FreeCPU: 2000, FreeMemory: 2 * gib}) {
		t.Errorf("usage after Remove %+v", u)
	}
	if n, _ := s.GroupCount("n1", "g"); n != 0 || len(s.groups) != 0 {
		t.Errorf("group after Remove: %d, %v", n, s.groups)
	}
	if got, _, _ := Place(s, Request{Name: "c"}, Spread); got != "n1" {
		t.Errorf("after Remove: %q", got)
	}
	if err := s.SetStatus("n1", StatusEvacuated); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := Place(s, Request{Name: "c"}, Spread); got != "n2" {
		t.Errorf("after evacuating n1: %q", got)
	}
	if err := s.SetStatus("zz", StatusOnline); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("SetStatus(unknown) = %v", err)
	}
	if _, err := s.Usage("zz"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Usage(unknown) = %v", err)
	}
	// The snapshot copied its input.
	nodes[0].Name = "changed"
	if _, err := s.Usage("n1"); err != nil {
		t.Errorf("snapshot shares the caller's slice: %v", err)
	}
}

func TestUnlimitedContainersSpread(t *testing.T) {
	s := mustSnapshot(t, []Node{node("n1", 2000, 4*gib), node("n2", 2000, 4*gib), node("n3", 2000, 4*gib)}, nil)
	for i := range 30 {
		got, _, err := Place(s, Request{Name: "c"}, Spread)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Add(Container{Name: "c" + string(rune('A'+i)), Node: got}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if u, _ := s.Usage(n); u.Containers != 10 {
			t.Errorf("%s runs %d unlimited containers, want 10", n, u.Containers)
		}
	}
}

func TestGroupSpreadsUnderBinpack(t *testing.T) {
	s := mustSnapshot(t, []Node{node("n1", 8000, 16*gib), node("n2", 8000, 16*gib), node("n3", 8000, 16*gib)},
		[]Container{{Name: "heavy", Node: "n3", CPUMillis: 4000}})
	var got []string
	for i := range 6 {
		n, _, err := Place(s, Request{Name: "w", CPUMillis: 100, Group: "web"}, Binpack)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		if err := s.Add(Container{Name: "w" + string(rune('0'+i)), Node: n, CPUMillis: 100, Group: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	// Soft spread first (one per node), binpack among equals (n3 is fullest).
	if want := "n3 n1 n2 n3 n1 n2"; strings.Join(got, " ") != want {
		t.Errorf("group members went to %v, want %s", got, want)
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1KiB", 100 * mib: "100MiB", 3 * gib / 2: "1.5GiB", 5 << 40: "5TiB"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int64]string{0: "0", 500: "0.5", 2000: "2", 1250: "1.25"} {
		if got := formatCPU(in); got != want {
			t.Errorf("formatCPU(%d) = %q, want %q", in, got, want)
		}
	}
	if Filter(0).String() != "Filter(0)" || FilterCapacity.String() != "capacity" || Strategy(7).String() != "Strategy(7)" {
		t.Error("String methods")
	}
}

func TestNoFitErrorAllHost(t *testing.T) {
	s := mustSnapshot(t, []Node{withoutBFQ(node("n1", 1000, gib)), node("n2", 1000, gib)}, nil)
	req := Request{Name: "c", Keys: []string{"limits.disk.priority"}, CPUMillis: 2000}
	_, _, err := Place(s, req, Spread)
	var nf *NoFitError
	if !errors.As(err, &nf) || nf.AllHost() {
		t.Fatalf("n2 is too small, not unable: %v", err)
	}
	_, _, err = Place(s, Request{Name: "c", Target: "n1", Keys: req.Keys}, Spread)
	if !errors.As(err, &nf) || !nf.AllHost() {
		t.Fatalf("--target n1: %v", err)
	}
	want := "no node can run c: n1: limits.disk.priority: " + noBFQ
	if err.Error() != want {
		t.Fatalf("error\n%q\nwant\n%q", err, want)
	}
}
