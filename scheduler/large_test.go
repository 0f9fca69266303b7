package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// bigCluster builds a deterministic cluster: 5,000 nodes in 5 zones and 50
// racks (5% with gpu=true, 2% offline, 1% evacuated) and 100,000 containers,
// a third of them unlimited and 30% in one of 1,000 spread groups.
func bigCluster(tb testing.TB) *Snapshot {
	tb.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	nodes := make([]Node, 5000)
	for i := range nodes {
		n := node(fmt.Sprintf("node%04d", i), int64(16+16*r.IntN(4))*1000, int64(64<<r.IntN(3))*gib,
			fmt.Sprintf("zone=%c", 'a'+i%5), fmt.Sprintf("rack=r%02d", i%50))
		if i%20 == 7 {
			n.Labels["gpu"] = "true"
		}
		switch {
		case i%50 == 3:
			n.Status = StatusOffline
		case i%100 == 11:
			n.Status = StatusEvacuated
		}
		nodes[i] = n
	}
	cpus := []int64{0, 250, 500, 1000}
	mems := []int64{0, 256 * mib, gib, 2 * gib}
	cs := make([]Container, 100_000)
	for i := range cs {
		c := Container{
			Name:        fmt.Sprintf("c%06d", i),
			Node:        nodes[r.IntN(len(nodes))].Name,
			CPUMillis:   cpus[r.IntN(4)],
			MemoryBytes: mems[r.IntN(4)],
		}
		if r.IntN(10) < 3 {
			c.Group = fmt.Sprintf("g%03d", r.IntN(1000))
		}
		cs[i] = c
	}
	return mustSnapshot(tb, nodes, cs)
}

var bigRequests = []struct {
	name string
	req  Request
}{
	{"plain", Request{Name: "x", CPUMillis: 2000, MemoryBytes: 4 * gib}},
	{"unlimited", Request{Name: "x"}},
	{"constraint", Request{Name: "x", CPUMillis: 2000, MemoryBytes: 4 * gib, Constraints: map[string]string{"zone": "c"}}},
	{"constraints2", Request{Name: "x", CPUMillis: 500, Constraints: map[string]string{"zone": "c", "gpu": "true"}}},
	{"group", Request{Name: "x", CPUMillis: 500, MemoryBytes: gib, Group: "g042"}},
	{"group-hard+constraint", Request{Name: "x", CPUMillis: 500, Group: "g042", MaxPerNode: 1, Constraints: map[string]string{"rack": "r07"}}},
	{"target", Request{Name: "x", CPUMillis: 500, Target: "node2500"}},
}

func TestBigCluster(t *testing.T) {
	s := bigCluster(t)
	if n, c := s.Len(); n != 5000 || c != 100_000 {
		t.Fatalf("snapshot holds %d nodes, %d containers", n, c)
	}
	for _, strat := range []Strategy{Spread, Binpack} {
		for _, br := range bigRequests {
			got, ex, err := Place(s, br.req, strat)
			if err != nil {
				t.Fatalf("%v %s: %v", strat, br.name, err)
			}
			full, err := Explain(s, br.req, strat)
			if err != nil || full.Chosen != got || full.Feasible != ex.Feasible || full.Feasible+len(full.Rejections) != 5000 {
				t.Fatalf("%v %s: Place chose %q (%d feasible), Explain %q (%d feasible, %d rejected), %v",
					strat, br.name, got, ex.Feasible, full.Chosen, full.Feasible, len(full.Rejections), err)
			}
			if err := Check(s, got, br.req); err != nil {
				t.Fatalf("%v %s: %v", strat, br.name, err)
			}
		}
	}
	// A new group of 300 spreads over 300 distinct nodes, soft or hard,
	// within a constraint too.
	for _, tt := range []struct {
		req   Request
		strat Strategy
	}{
		{Request{CPUMillis: 250, MemoryBytes: 512 * mib, Group: "fresh-soft"}, Binpack},
		{Request{CPUMillis: 250, Group: "fresh-hard", MaxPerNode: 1, Constraints: map[string]string{"zone": "b"}}, Spread},
	} {
		seen := map[string]bool{}
		for i := range 300 {
			req := tt.req
			req.Name = fmt.Sprintf("%s-%d", req.Group, i)
			got, _, err := Place(s, req, tt.strat)
			if err != nil {
				t.Fatal(err)
			}
			if seen[got] {
				t.Fatalf("%s member %d placed on %s again", req.Group, i, got)
			}
			seen[got] = true
			if err := Check(s, got, req); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(Container{Name: req.Name, Node: got, CPUMillis: req.CPUMillis, MemoryBytes: req.MemoryBytes, Group: req.Group}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// BenchmarkPlace5000Nodes100kContainers measures one placement decision over
// 5,000 nodes holding 100,000 containers. The snapshot is built once.
func BenchmarkPlace5000Nodes100kContainers(b *testing.B) {
	s := bigCluster(b)
	for _, strat := range []Strategy{Spread, Binpack} {
		for _, br := range bigRequests {
			b.Run(strat.String()+"/"+br.name, func(b *testing.B) {
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					if _, _, err := Place(s, br.req, strat); err != nil {
						b.Fatal(err)
					}
					n++
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
			})
		}
	}
}

// BenchmarkLeaderLaunch measures what the leader does per launch: Place,
// Check, then Add to the same snapshot, so each decision sees the last.
func BenchmarkLeaderLaunch(b *testing.B) {
	s := bigCluster(b)
	seq := 0 // container names stay unique however often a sub-benchmark runs
	for _, strat := range []Strategy{Spread, Binpack} {
		b.Run(strat.String(), func(b *testing.B) {
			n := 0
			for b.Loop() {
				seq++
				req := Request{Name: fmt.Sprintf("launch-%d", seq), CPUMillis: 10, MemoryBytes: 16 * mib, Group: "bench"}
				node, _, err := Place(s, req, strat)
				if err != nil {
					b.Fatal(err)
				}
				if err := Check(s, node, req); err != nil {
					b.Fatal(err)
				}
				if err := s.Add(Container{Name: req.Name, Node: node, CPUMillis: 10, MemoryBytes: 16 * mib, Group: "bench"}); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// checkAgreement is the property: Place agrees with Explain, its choice
// passes Check, and when nothing fits Check refuses every node considered.
func checkAgreement(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 99))
	statuses := []string{StatusOnline, StatusOnline, StatusOnline, StatusOffline, StatusEvacuated}
	nodes := make([]Node, 1+r.IntN(12))
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("n%d", r.IntN(1000)*100+i), Status: statuses[r.IntN(5)],
			CPUMillis: int64(r.IntN(4)) * 1000, MemoryBytes: int64(r.IntN(4)) * gib,
			Labels: map[string]string{"zone": fmt.Sprint(r.IntN(3))}}
		if r.IntN(2) == 0 {
			nodes[i].Labels["ssd"] = "true"
		}
		if r.IntN(3) == 0 {
			nodes[i].Unenforceable = map[string]string{"limits.disk.priority": "no BFQ"}
		}
	}
	groups := []string{"", "", "g1", "g2"}
	var cs []Container
	for i := range r.IntN(40) {
		cs = append(cs, Container{Name: fmt.Sprint(i), Node: nodes[r.IntN(len(nodes))].Name,
			CPUMillis: int64(r.IntN(5)) * 250, MemoryBytes: int64(r.IntN(5)) * 256 * mib, Group: groups[r.IntN(4)]})
	}
	s := mustSnapshot(t, nodes, cs)
	for range 20 {
		req := Request{Name: "r", CPUMillis: int64(r.IntN(5)) * 250, MemoryBytes: int64(r.IntN(5)) * 256 * mib,
			Group: groups[r.IntN(4)], MaxPerNode: r.IntN(3)}
		if r.IntN(3) == 0 {
			req.Constraints = map[string]string{"zone": fmt.Sprint(r.IntN(3))}
			if r.IntN(2) == 0 {
				req.Constraints["ssd"] = "true"
			}
		}
		if r.IntN(5) == 0 {
			req.Target = nodes[r.IntN(len(nodes))].Name
		}
		if r.IntN(3) == 0 {
			req.Keys = []string{"limits.disk.priority", "limits.memory"}
		}
		strat := Strategy(r.IntN(2))
		got, ex, err := Place(s, req, strat)
		full, ferr := Explain(s, req, strat)
		if got != full.Chosen || ex.Feasible != full.Feasible || (err == nil) != (ferr == nil) {
			t.Fatalf("seed %d: Place %q/%d/%v, Explain %q/%d/%v for %+v", seed, got, ex.Feasible, err, full.Chosen, full.Feasible, ferr, req)
		}
		if err == nil {
			if cerr := Check(s, got, req); cerr != nil {
				t.Fatalf("seed %d: Place chose %s but Check says %v", seed, got, cerr)
			}
			continue
		}
		if !errors.Is(err, ErrNoFit) {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, n := range s.nodes {
			if Check(s, n.Name, req) == nil {
				t.Fatalf("seed %d: nothing fits, yet Check accepts %s for %+v", seed, n.Name, req)
			}
		}
		if want := 1; req.Target == "" {
			want = len(nodes)
			if len(ex.Rejections) != want {
				t.Fatalf("seed %d: %d rejections, want %d", seed, len(ex.Rejections), want)
			}
		} else if len(ex.Rejections) != want {
			t.Fatalf("seed %d: %d rejections for --target, want 1", seed, len(ex.Rejections))
		}
	}
}

func TestPlaceAgreesWithCheck(t *testing.T) {
	for seed := range uint64(2000) {
		checkAgreement(t, seed)
	}
}

func FuzzPlaceAgreesWithCheck(f *testing.F) {
	for seed := range uint64(8) {
		f.Add(seed)
	}
	f.Fuzz(checkAgreement)
}

// PlaceAvoiding over a snapshot agrees with Place over the same snapshot
// whose down nodes were set to their reason, choice and rejections alike,
// and leaves the snapshot as it was.
func TestPlaceAvoidingAgreesWithSetStatus(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		nodes := make([]Node, 1+r.IntN(10))
		for i := range nodes {
			nodes[i] = node(fmt.Sprintf("n%d", i), int64(1+r.IntN(3))*1000, int64(1+r.IntN(3))*gib, fmt.Sprintf("zone=%d", r.IntN(2)))
			if r.IntN(5) == 0 {
				nodes[i].Status = StatusOffline
			}
		}
		var cs []Container
		for i := range r.IntN(20) {
			cs = append(cs, Container{Name: fmt.Sprint(i), Node: nodes[r.IntN(len(nodes))].Name, CPUMillis: int64(r.IntN(3)) * 500, Group: []string{"", "g"}[r.IntN(2)]})
		}
		down := map[string]string{}
		for _, n := range nodes {
			if r.IntN(3) == 0 {
				down[n.Name] = "not answering"
			}
		}
		shared := mustSnapshot(t, nodes, cs)
		marked := mustSnapshot(t, nodes, cs)
		for name, why := range down {
			if marked.nodes[marked.ids[name]].Status == StatusOnline {
				if err := marked.SetStatus(name, why); err != nil {
					t.Fatal(err)
				}
			}
		}
		for range 10 {
			req := Request{Name: "x", CPUMillis: int64(r.IntN(4)) * 500, Group: []string{"", "g"}[r.IntN(2)], MaxPerNode: r.IntN(2)}
			if r.IntN(3) == 0 {
				req.Constraints = map[string]string{"zone": fmt.Sprint(r.IntN(2))}
			}
			strat := Strategy(r.IntN(2))
			got, gex, gerr := PlaceAvoiding(shared, req, strat, down)
			want, wex, werr := Place(marked, req, strat)
			if got != want || (gerr == nil) != (werr == nil) || fmt.Sprint(gex.Rejections) != fmt.Sprint(wex.Rejections) {
				t.Fatalf("seed %d: PlaceAvoiding %q %v %v, Place after SetStatus %q %v %v", seed, got, gex.Rejections, gerr, want, wex.Rejections, werr)
			}
			if got, _, _ := Place(shared, req, strat); got == "" && werr == nil {
				t.Fatalf("seed %d: the shared snapshot lost a node", seed)
			}
		}
	}
}
