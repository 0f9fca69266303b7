package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Config sizes a dry run.
type Config struct {
	Members    int    // simulated members (node records, no daemons)
	Placements int    // containers to place
	Clients    int    // concurrent clients, spread over the three Raft members
	Floor      int    // no-op commands for the floor measured first (0: none)
	Dir        string // the Raft members' data directories go under it
	// Progress, when set, gets a line every tenth of the placements.
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is what a dry run measured and checked.
type Result struct {
	Placements, Retries        int
	Took                       time.Duration
	FloorOps                   int
	FloorTook                  time.Duration
	LogBytes                   int64  // the leader's raft.db
	LastIndex                  uint64 // the leader's last log index
	FSMBytes                   uint64 // heap held by one FSM restored from the snapshot
	SnapshotBytes              int64
	SnapshotTook               time.Duration // FSM.Snapshot + Persist to a file
	SnapshotLocked             time.Duration // of which FSM.Snapshot: the copy made under the FSM\'s read lock
	RestoreTook                time.Duration // FSM.Restore from that file
	PerMemberMin, PerMemberMax int
	SoftGroupMaxPerMember      int // the most members of one soft spread group on one member
	WentOffline                int // members set offline half-way
	LeaderRetries              int // proposals tried again after the leader changed
	Ambiguous                  int // of those, creates found landed by an earlier try (index unknown)
}

// sim is the simulated cluster: what each member offers.
type sim struct {
	nodes   []*shoalv1.Node
	byName  map[string]*shoalv1.Node
	offline map[string]uint64 // member set offline half-way → index of that entry
}

func newSim(n int) *sim {
	s := &sim{byName: map[string]*shoalv1.Node{}, offline: map[string]uint64{}}
	for i := range n {
		nd := &shoalv1.Node{
			Name:        fmt.Sprintf("m%04d", i),
			Status:      cluster.StatusOnline,
			CpuMillis:   int64(64+32*(i%3)) * 1000,
			MemoryBytes: int64(256+128*(i%3)) << 30,
			Labels:      map[string]string{"zone": fmt.Sprintf("z%d", i%5), "rack": fmt.Sprintf("r%02d", i%50)},
		}
		if i%20 == 7 {
			nd.Labels["gpu"] = "true"
		}
		switch {
		case i%50 == 3:
			nd.Status = cluster.StatusOffline
		case i%100 == 11:
			nd.Status = cluster.StatusEvacuated
		}
		s.nodes = append(s.nodes, nd)
		s.byName[nd.Name] = nd
	}
	return s
}

// containerConfig is container i's config: a third constrained to a zone,
// one in fifty to GPU members, 30% in one of 1,000 soft spread groups, 1%
// in groups of three that must run on distinct members; reservations of
// memory and (one in ten) a CPU.
func containerConfig(i int) map[string]string {
	cfg := map[string]string{}
	switch {
	case i%50 == 1:
		cfg[cluster.KeyConstraint] = "gpu=true"
	case i%3 == 0:
		cfg[cluster.KeyConstraint] = fmt.Sprintf("zone=z%d", (i/3)%5)
	}
	switch {
	case i%100 == 7:
		cfg[cluster.KeyGroup] = fmt.Sprintf("ha%05d", i/300)
		cfg[cluster.KeyGroupMaxPerNode] = "1"
	case i%10 < 3:
		cfg[cluster.KeyGroup] = fmt.Sprintf("g%03d", (i/10)%1000)
	}
	if m := []int{0, 128, 256, 512}[i%4]; m > 0 {
		cfg["limits.memory"] = fmt.Sprintf("%dMiB", m)
	}
	if i%10 == 0 {
		cfg["limits.cpu"] = "1"
	}
	return cfg
}

func containerName(i int) string { return fmt.Sprintf("c%07d", i) }

// Run forms the cluster, registers the members, measures the floor and
// the placements, then the FSM's snapshot and restore, and checks every
// placement.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	}
	cfg.Clients = max(cfg.Clients, 1)
	ms, err := startCluster(ctx, cfg.Dir, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range ms {
			_ = m.Close()
		}
	}()
	s := newSim(cfg.Members)
	if err := fanOut(ctx, len(s.nodes), cfg.Clients, func(i int) error {
		_, err := ms[i%3].ProposeIndex(ctx, mustEncode(&shoalv1.NodeUpsertCommand{Node: s.nodes[i]}))
		return err
	}); err != nil {
		return nil, fmt.Errorf("register members: %w", err)
	}
	res := &Result{Placements: cfg.Placements, FloorOps: cfg.Floor}

	// The floor: no-op entries (a cluster config change setting nothing)
	// through the same members and clients.
	noop := mustEncode(&shoalv1.ClusterConfigCommand{})
	start := time.Now()
	if err := fanOut(ctx, cfg.Floor, cfg.Clients, func(i int) error {
		_, err := ms[i%3].ProposeIndex(ctx, noop)
		return err
	}); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	res.FloorTook = time.Since(start)

	// The placements, as a create places: the scheduler over the
	// proposer's own view, the leader's admission and the FSM's re-check;
	// a refusal (the room went to a concurrent create, the member is
	// gone) places again, up to three times.
	indexes := make([]uint64, cfg.Placements)
	var retries, done, elections, ambiguous atomic.Int64
	var offMu sync.Mutex
	half := int64(cfg.Placements / 2)
	start = time.Now()
	err = fanOut(ctx, cfg.Placements, cfg.Clients, func(i int) error {
		m := ms[i%3]
		ct := &shoalv1.Container{Name: containerName(i), Config: containerConfig(i), DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED}
		req, err := cluster.PlacementRequest(ct.GetName(), ct.GetConfig(), "")
		if err != nil {
			return err
		}
		leaderless := 0
		for attempt := 0; ; attempt++ {
			node, _, err := m.Place(req, scheduler.Spread)
			if err != nil {
				return fmt.Errorf("place %s: %w", ct.GetName(), err)
			}
			ct.Node = node
			idx, err := m.ProposeIndex(ctx, mustEncode(&shoalv1.ContainerCreateCommand{Container: ct}))
			if err == nil {
				indexes[i] = idx
				break
			}
			if errors.Is(err, cluster.ErrExists) && leaderless > 0 {
				// An attempt made before the leader changed did land (only
				// this client creates this name); its index is unknown.
				ambiguous.Add(1)
				break
			}
			if errors.Is(err, cluster.ErrNotLeader) && leaderless < 50 {
				// The leader changed (an election under load): the create
				// may or may not have applied; try again with the next one,
				// as the API's forwarder does.
				leaderless++
				elections.Add(1)
				time.Sleep(100 * time.Millisecond)
				attempt--
				continue
			}
			if !errors.Is(err, scheduler.ErrNoFit) && !errors.Is(err, cluster.ErrPlacementRefused) || attempt == 2 {
				return fmt.Errorf("create %s on %s: %w", ct.GetName(), node, err)
			}
			retries.Add(1)
			if err := m.Sync(ctx); err != nil { // catch up with what took the room, as a create does
				return err
			}
		}
		n := done.Add(1)
		if n == half && cfg.Members >= 20 {
			// Half-way, ten online members go offline: nothing may be
			// placed on them once that entry has applied.
			offMu.Lock()
			defer offMu.Unlock()
			for _, nd := range s.nodes {
				if nd.GetStatus() != cluster.StatusOnline || len(s.offline) == 10 {
					continue
				}
				if k := nd.GetName(); k[len(k)-1] == '9' {
					off := &shoalv1.Node{Name: nd.GetName(), Status: cluster.StatusOffline, CpuMillis: nd.GetCpuMillis(), MemoryBytes: nd.GetMemoryBytes(), Labels: nd.GetLabels()}
					idx, err := m.ProposeIndex(ctx, mustEncode(&shoalv1.NodeUpsertCommand{Node: off}))
					if err != nil {
						return fmt.Errorf("set %s offline: %w", k, err)
					}
					s.offline[k] = idx
				}
			}
		}
		if cfg.Progress != nil && cfg.Placements >= 10 && n%int64(cfg.Placements/10) == 0 {
			fmt.Fprintf(cfg.Progress, "  %8d placed, %6.0f/s so far\n", n, float64(n)/time.Since(start).Seconds())
		}
		return nil
	})
	res.Took = time.Since(start)
	if err != nil {
		return nil, err
	}
	res.Retries = int(retries.Load())
	res.LeaderRetries, res.Ambiguous = int(elections.Load()), int(ambiguous.Load())
	res.WentOffline = len(s.offline)

	leader := leaderOf(ms)
	if leader == nil {
		return nil, errors.New("no leader at the end")
	}
	if st, err := os.Stat(filepath.Join(cfg.Dir, leader.NodeName(), "raft.db")); err == nil {
		res.LogBytes = st.Size()
	}
	fmt.Sscan(leader.RaftStats()["last_log_index"], &res.LastIndex)
	last := leader.FSM().Applied()
	for _, m := range ms {
		if err := m.WaitApplied(ctx, last); err != nil {
			return nil, err
		}
	}
	if err := measureSnapshot(leader.FSM(), cfg.Dir, res); err != nil {
		return nil, err
	}
	if err := check(ms, s, indexes, cfg.Placements, res); err != nil {
		return res, err
	}
	return res, nil
}

// startCluster opens three Raft members over loopback TCP, the first
// bootstrapping and adding the others as voters, and wires forwarding
// between them in-process (the API's gRPC forwarder in a real cluster).
// Log compaction is off during the run: the snapshot is measured at the end.
func startCluster(ctx context.Context, dir string, log *slog.Logger) ([]*cluster.Cluster, error) {
	ms := make([]*cluster.Cluster, 3)
	for i := range ms {
		c, err := cluster.Open(ctx, cluster.Config{
			NodeName: fmt.Sprintf("raft%d", i+1), DataDir: filepath.Join(dir, fmt.Sprintf("raft%d", i+1)),
			BindAddr: "127.0.0.1:0", Join: i > 0, Logger: log,
			SnapshotThreshold: 1 << 40, TrailingLogs: 1 << 40,
		})
		if err != nil {
			for _, m := range ms[:i] {
				_ = m.Close()
			}
			return nil, fmt.Errorf("open raft member %d: %w", i+1, err)
		}
		ms[i] = c
		if i > 0 {
			if err := ms[0].AddMember(ctx, c.NodeName(), c.Addr(), true); err != nil {
				for _, m := range ms[:i+1] {
					_ = m.Close()
				}
				return nil, err
			}
		}
	}
	byName := map[string]*cluster.Cluster{}
	for _, m := range ms {
		byName[m.NodeName()] = m
	}
	for _, m := range ms {
		m.SetForwarder(func(ctx context.Context, leader string, data []byte) (uint64, error) {
			return byName[leader].ApplyForwarded(ctx, data)
		}, func(ctx context.Context, leader string) (uint64, error) {
			return byName[leader].LeaderReadIndex()
		})
	}
	for _, m := range ms {
		if err := m.WaitLeader(ctx); err != nil {
			return nil, err
		}
	}
	return ms, nil
}

func leaderOf(ms []*cluster.Cluster) *cluster.Cluster {
	for _, m := range ms {
		if m.IsLeader() {
			return m
		}
	}
	return nil
}

// fanOut runs do(0..n-1) on workers goroutines and returns the first error.
func fanOut(ctx context.Context, n, workers int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first.Load() == nil && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

func mustEncode(m proto.Message) []byte {
	b, err := cluster.Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

// measureSnapshot times the FSM's snapshot persisted to a file and its
// restore into a fresh FSM, whose heap is the FSM's memory.
func measureSnapshot(f *cluster.FSM, dir string, res *Result) error {
	path := filepath.Join(dir, "fsm.snapshot")
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	start := time.Now()
	snap, err := f.Snapshot()
	if err != nil {
		file.Close()
		return err
	}
	res.SnapshotLocked = time.Since(start)
	if err := snap.Persist(&fileSink{file}); err != nil {
		return err
	}
	snap.Release()
	res.SnapshotTook = time.Since(start)
	if st, err := os.Stat(path); err == nil {
		res.SnapshotBytes = st.Size()
	}
	snap = nil
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rc, err := os.Open(path)
	if err != nil {
		return err
	}
	fresh := cluster.NewFSM()
	start = time.Now()
	if err := fresh.Restore(rc); err != nil {
		return err
	}
	res.RestoreTook = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc > before.HeapAlloc {
		res.FSMBytes = after.HeapAlloc - before.HeapAlloc
	}
	if n := len(fresh.Containers()); n != res.Placements {
		return fmt.Errorf("restored FSM holds %d containers, want %d", n, res.Placements)
	}
	runtime.KeepAlive(fresh)
	return os.Remove(path)
}

type fileSink struct{ *os.File }

func (s *fileSink) ID() string    { return "c1m" }
func (s *fileSink) Cancel() error { return s.File.Close() }

var _ raft.SnapshotSink = (*fileSink)(nil)

// check verifies every placement on every Raft member: each container
// recorded exactly once, the members agreeing; on a member that was online
// when it was placed; with every label its constraint names; at most one
// member of a distinct-members group per member; reservations within
// every member's capacity.
func check(ms []*cluster.Cluster, s *sim, indexes []uint64, n int, res *Result) error {
	var lead map[string]string
	for _, m := range ms {
		cts := m.FSM().Containers()
		if len(cts) != n {
			return fmt.Errorf("%s holds %d containers, want %d", m.NodeName(), len(cts), n)
		}
		got := make(map[string]string, n)
		for _, ct := range cts {
			got[ct.GetName()] = ct.GetNode()
		}
		if lead == nil {
			lead = got
			continue
		}
		for k, v := range got {
			if lead[k] != v {
				return fmt.Errorf("%s records %s on %s, %s on %s", m.NodeName(), k, v, ms[0].NodeName(), lead[k])
			}
		}
	}
	type usage struct{ cpu, mem int64 }
	used := map[string]*usage{}
	perMember := map[string]int{}
	hard := map[[2]string]int{}
	soft := map[[2]string]int{}
	for i := range n {
		name := containerName(i)
		node, ok := lead[name]
		if !ok {
			return fmt.Errorf("%s was not recorded", name)
		}
		nd := s.byName[node]
		if nd == nil {
			return fmt.Errorf("%s placed on %q, not a member", name, node)
		}
		if nd.GetStatus() != cluster.StatusOnline {
			return fmt.Errorf("%s placed on %s, which is %s", name, node, nd.GetStatus())
		}
		if off, ok := s.offline[node]; ok && indexes[i] != 0 && indexes[i] > off { // 0: a create found landed after a leader change, index unknown
			return fmt.Errorf("%s placed on %s at index %d, after it went offline at %d", name, node, indexes[i], off)
		}
		cfg := containerConfig(i)
		req, err := cluster.PlacementRequest(name, cfg, "")
		if err != nil {
			return err
		}
		for k, v := range req.Constraints {
			if nd.GetLabels()[k] != v {
				return fmt.Errorf("%s placed on %s, whose %s is %q: its constraint wants %q", name, node, k, nd.GetLabels()[k], v)
			}
		}
		if req.Group != "" {
			key := [2]string{req.Group, node}
			if req.MaxPerNode > 0 {
				if hard[key]++; hard[key] > req.MaxPerNode {
					return fmt.Errorf("%s: member %s runs %d of group %s (max %d)", name, node, hard[key], req.Group, req.MaxPerNode)
				}
			} else {
				soft[key]++
				res.SoftGroupMaxPerMember = max(res.SoftGroupMaxPerMember, soft[key])
			}
		}
		u := used[node]
		if u == nil {
			u = &usage{}
			used[node] = u
		}
		u.cpu += req.CPUMillis
		u.mem += req.MemoryBytes
		if u.cpu > nd.GetCpuMillis() || u.mem > nd.GetMemoryBytes() {
			return fmt.Errorf("member %s oversubscribed: %d mCPU, %d bytes reserved", node, u.cpu, u.mem)
		}
		perMember[node]++
	}
	res.PerMemberMin = -1
	for _, nd := range s.nodes {
		if nd.GetStatus() != cluster.StatusOnline {
			continue
		}
		c := perMember[nd.GetName()]
		if _, off := s.offline[nd.GetName()]; !off && (res.PerMemberMin < 0 || c < res.PerMemberMin) {
			res.PerMemberMin = c
		}
		res.PerMemberMax = max(res.PerMemberMax, c)
	}
	return nil
}

// Report prints the figures.
func (r *Result) Report(w io.Writer, cfg Config) {
	rate := float64(r.Placements) / r.Took.Seconds()
	fmt.Fprintf(w, "# C1M dry run: %d simulated members, 3 Raft members (loopback TCP, raft-boltdb), %d clients, GOMAXPROCS %d\n", cfg.Members, cfg.Clients, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "%-44s %10.0f /s  (%d in %s, %d placed again)\n", "placements committed", rate, r.Placements, r.Took.Round(time.Millisecond), r.Retries)
	if r.FloorOps > 0 {
		floor := float64(r.FloorOps) / r.FloorTook.Seconds()
		fmt.Fprintf(w, "%-44s %10.0f /s  (%d in %s; placements ÷ floor %.2f)\n", "floor: no-op entries, same clients", floor, r.FloorOps, r.FloorTook.Round(time.Millisecond), rate/floor)
	}
	if r.LeaderRetries > 0 {
		fmt.Fprintf(w, "%-44s %d proposals tried again, %d found landed\n", "leader changes during the run", r.LeaderRetries, r.Ambiguous)
	}
	fmt.Fprintf(w, "%-44s %10.1f MiB (%d entries)\n", "Raft log (leader's raft.db)", float64(r.LogBytes)/(1<<20), r.LastIndex)
	fmt.Fprintf(w, "%-44s %10.1f MiB\n", "FSM memory (heap of one restored FSM)", float64(r.FSMBytes)/(1<<20))
	fmt.Fprintf(w, "%-44s %10s (%.1f MiB; the copy under the FSM's lock %s)\n", "FSM snapshot + persist", r.SnapshotTook.Round(time.Millisecond), float64(r.SnapshotBytes)/(1<<20), r.SnapshotLocked.Round(time.Millisecond))
	fmt.Fprintf(w, "%-44s %10s\n", "FSM restore", r.RestoreTook.Round(time.Millisecond))
	fmt.Fprintf(w, "%-44s %d-%d per online member; soft group max %d on one member; %d members set offline half-way\n",
		"checked: exactly once, alive, constraints, caps", r.PerMemberMin, r.PerMemberMax, r.SoftGroupMaxPerMember, r.WentOffline)
}
