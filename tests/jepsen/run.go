package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// Image is the image the run's containers are created from (built once
// per cluster: `shoal image build busybox`).
const Image = "busybox"

// member is one shoald of the cluster with the workload's connection to
// it (a fresh one after each restart: gRPC's reconnect backoff would
// otherwise idle the clients for seconds).
type member struct {
	*harness.Member
	down atomic.Bool
	mu   sync.Mutex
	c    *client.Client
}

func (m *member) client() *client.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

func (m *member) redial() error {
	c, err := client.Dial(m.Socket)
	if err != nil {
		return fmt.Errorf("dial %s: %w", m.Host.Name, err)
	}
	m.mu.Lock()
	old := m.c
	m.c = c
	m.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Cluster is three members on simulated hosts that runs share.
type Cluster struct {
	t       harness.T
	U       *netns.Underlay
	members []*member

	mu     sync.Mutex
	paused map[int]bool // pids SIGSTOPped and not yet continued
}

// StartCluster starts three members on simulated hosts (tests/harness),
// builds the busybox image, and registers a cleanup (before the harness's
// own) that continues any paused shoald and heals every link.
func StartCluster(t harness.T, binDir string) *Cluster {
	t.Helper()
	u, ms := harness.StartCluster(t, binDir, 3)
	c := &Cluster{t: t, U: u, paused: map[int]bool{}}
	for _, m := range ms {
		mm := &member{Member: m}
		if err := mm.redial(); err != nil {
			t.Fatalf("%v", err)
		}
		c.members = append(c.members, mm)
	}
	t.Cleanup(c.undoFaults)
	t.Cleanup(func() {
		for _, m := range c.members {
			if cl := m.client(); cl != nil {
				cl.Close()
			}
		}
	})
	ms[0].MustShoal("image", "build", Image)
	return c
}

// undoFaults continues every paused shoald, heals every link and starts
// members that a failed run left killed.
func (c *Cluster) undoFaults() {
	c.mu.Lock()
	for pid := range c.paused {
		syscall.Kill(pid, syscall.SIGCONT)
		delete(c.paused, pid)
	}
	c.mu.Unlock()
	if err := c.U.Heal(); err != nil {
		c.t.Errorf("heal: %v", err)
	}
}

// Config is one run.
type Config struct {
	Seed     int64
	Duration time.Duration
	// ClientsPerMember are the concurrent clients through each member.
	ClientsPerMember int
	// Keys are the registers (config keys) per container (default 2:
	// writes to two keys of one container race each other).
	Keys int
	// CallTimeout is every call's deadline.
	CallTimeout time.Duration
	// Faults are the kinds drawn (nil: none).
	Faults []FaultKind
	// OutDir is where a violation's visualisation is written.
	OutDir string
	// CheckTimeout bounds porcupine (Unknown past it).
	CheckTimeout time.Duration
	// ConvergeTimeout bounds the wait after the faults for every member to
	// agree.
	ConvergeTimeout time.Duration
}

func (cfg *Config) defaults() {
	if cfg.ClientsPerMember == 0 {
		cfg.ClientsPerMember = 2
	}
	if cfg.Keys == 0 {
		cfg.Keys = 2
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = time.Minute
	}
	if cfg.ConvergeTimeout == 0 {
		cfg.ConvergeTimeout = 90 * time.Second
	}
	if cfg.OutDir == "" {
		cfg.OutDir = os.TempDir()
	}
}

// Result is what a run found.
type Result struct {
	Seed    int64
	Verdict Verdict
	Calls   []Call
	Events  []Event
	// Converged is how long the members took to agree after the last
	// fault was undone; NotConverged says what still differed.
	Converged    time.Duration
	NotConverged string
	// Visualization is the HTML file written for a violation.
	Visualization string
}

// Violation reports whether the run found a problem: a history that is
// not linearizable, a call past its deadline, or members that never
// agreed.
func (r *Result) Violation() bool {
	return r.Verdict.Result == porcupine.Illegal || len(r.Overdue()) > 0 || r.NotConverged != ""
}

// Overdue are the calls that did not answer within their deadline.
func (r *Result) Overdue() []Call {
	var out []Call
	for _, c := range r.Calls {
		if c.Overdue {
			out = append(out, c)
		}
	}
	return out
}

// Longest is the call that took longest.
func (r *Result) Longest() Call {
	var l Call
	for _, c := range r.Calls {
		if c.Took > l.Took {
			l = c
		}
	}
	return l
}

// DuringFaults are the latencies of the calls that overlapped a fault.
func (r *Result) DuringFaults() []time.Duration {
	var out []time.Duration
	for _, c := range r.Calls {
		for _, e := range r.Events {
			if c.Start <= e.End && c.Start+c.Took >= e.At {
				out = append(out, c.Took)
				break
			}
		}
	}
	return out
}

// Percentile returns the p-th percentile (0-100) of ds (0 when empty).
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// Report is a run's summary and, on a violation, the seed, the excerpt of
// the history and the visualisation's path.
func (r *Result) Report() string {
	var b strings.Builder
	during := r.DuringFaults()
	l := r.Longest()
	fmt.Fprintf(&b, "seed %d: %s; %d operations checked (%d pending), %d calls, %d faults; during faults p50 %s p99 %s max %s; longest call %s (%s via %s at %s)",
		r.Seed, r.Verdict.Result, r.Verdict.Ops, r.Verdict.Pending, len(r.Calls), len(r.Events),
		Percentile(during, 50).Round(time.Millisecond), Percentile(during, 99).Round(time.Millisecond),
		Percentile(during, 100).Round(time.Millisecond), l.Took.Round(time.Millisecond), l.Op, l.Member, fmtDur(l.Start))
	if r.NotConverged == "" {
		fmt.Fprintf(&b, "; converged %s after the faults\n", r.Converged.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "\nNEVER CONVERGED (seed %d): %s\n", r.Seed, r.NotConverged)
	}
	if r.Verdict.Result == porcupine.Illegal {
		fmt.Fprintf(&b, "NOT LINEARIZABLE (seed %d): %s\n%s", r.Seed, strings.Join(r.Verdict.Illegal, ", "), r.Verdict.Excerpt)
	}
	if r.Verdict.Result == porcupine.Unknown {
		what := "neither proven nor refuted"
		if r.Verdict.PerElement {
			what = "every set's elements, each checked alone, are linearizable"
		}
		fmt.Fprintf(&b, "the checker ran out of time on the whole history (seed %d): %s\n", r.Seed, what)
	}
	for _, c := range r.Overdue() {
		fmt.Fprintf(&b, "CALL PAST ITS DEADLINE (seed %d): client %d %s via %s at %s took %s: %s\n", r.Seed, c.Client, c.Op, c.Member,
			fmtDur(c.Start), c.Took.Round(time.Millisecond), c.Err)
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "visualisation: %s\n", r.Visualization)
	}
	return b.String()
}

// Run runs one seed on the cluster: creates the run's register containers
// (one per member), runs the clients and the fault schedule for
// cfg.Duration, undoes the last fault, waits for the members to agree,
// reads every object through every member, deletes the run's containers
// and checks the history.
func (c *Cluster) Run(ctx context.Context, cfg Config) *Result {
	c.t.Helper()
	cfg.defaults()
	w := &workload{prefix: fmt.Sprintf("j%s-", harness.RandHex(2)), keys: cfg.Keys, image: Image, timeout: cfg.CallTimeout}
	for i, m := range c.members {
		name := fmt.Sprintf("%sr%d", w.prefix, i)
		// Gossip may still call a member dead a while after the last
		// run's faults were undone (the FSM already says online): retry.
		var err error
		for start := time.Now(); time.Since(start) < 90*time.Second; time.Sleep(time.Second) {
			// AlreadyExists: an earlier attempt committed after all.
			if err = c.create(ctx, name, m.Host.Name); err == nil || status.Code(err) == codes.AlreadyExists {
				err = nil
				break
			}
		}
		if err != nil {
			c.t.Fatalf("create register container %s on %s for 90 s: %v", name, m.Host.Name, err)
		}
		w.registers = append(w.registers, name)
	}
	rec := NewRecorder()
	var stop atomic.Bool
	var wg sync.WaitGroup
	id := 0
	var idMu sync.Mutex
	newID := func() int { idMu.Lock(); defer idMu.Unlock(); id++; return id - 1 }
	for i := range len(c.members) * cfg.ClientsPerMember {
		m := c.members[i%len(c.members)]
		rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cid := newID()
			for !stop.Load() {
				if m.down.Load() {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				in := w.next(rng, i)
				call := rec.Now()
				out, err := w.do(context.Background(), m.client(), in)
				ret := rec.Now()
				o := classify(err)
				rec.Record(cid, m.Host.Name, in, call, ret, out, o, err, cfg.CallTimeout)
				if o == Unknown && in.Kind != Read && in.Kind != List {
					cid = newID() // a pending op stays open: a new lane
				}
				time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			}
		}()
	}
	faults := Schedule(cfg.Seed, cfg.Duration, len(c.members), cfg.Faults)
	for _, f := range faults {
		if wait := f.At - rec.Now(); wait > 0 {
			time.Sleep(wait)
		}
		c.inject(ctx, rec, f)
	}
	if wait := cfg.Duration - rec.Now(); wait > 0 {
		time.Sleep(wait)
	}
	stop.Store(true)
	wg.Wait()
	c.undoFaults()

	res := &Result{Seed: cfg.Seed}
	healed := rec.Now()
	res.NotConverged = c.converge(ctx, w.prefix, cfg.ConvergeTimeout)
	res.Converged = rec.Now() - healed
	// Final reads of every object through every member.
	var objects []Input
	for _, ct := range w.registers {
		for k := range cfg.Keys {
			objects = append(objects, Input{Kind: Read, Key: ct + "/" + keyName(k)})
		}
		objects = append(objects, Input{Kind: List, Key: snapSet(ct)})
	}
	objects = append(objects, Input{Kind: List, Key: containersSet})
	for _, m := range c.members {
		cid := newID()
		for _, in := range objects {
			call := rec.Now()
			out, err := w.do(ctx, m.client(), in)
			rec.Record(cid, m.Host.Name, in, call, rec.Now(), out, classify(err), err, cfg.CallTimeout)
		}
	}
	c.deletePrefix(ctx, w.prefix)

	res.Calls, res.Events = rec.Calls(), rec.Events()
	res.Verdict = Check(rec.History(), res.Events, cfg.CheckTimeout)
	if res.Verdict.Result == porcupine.Illegal {
		path := filepath.Join(cfg.OutDir, fmt.Sprintf("jepsen-seed%d-%s.html", cfg.Seed, harness.RandHex(2)))
		if err := res.Verdict.Visualize(path, res.Events); err != nil {
			c.t.Errorf("%v", err)
		} else {
			res.Visualization = path
		}
	}
	return res
}

// create makes a stopped container on a member (the run's setup, outside
// the history).
func (c *Cluster) create(ctx context.Context, name, target string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cl := c.members[0].client()
	resp, err := cl.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: name, Image: Image, NoStart: true, Target: target})
	if err != nil {
		return err
	}
	_, err = cl.Wait(ctx, resp.GetOperation(), nil)
	return err
}

// leader asks the members which of them leads (-1 when none says).
func (c *Cluster) leader(ctx context.Context) int {
	for _, m := range c.members {
		if m.down.Load() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := m.client().Cluster.ListMembers(cctx, &shoalv1.ListMembersRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, r := range resp.GetMembers() {
			if r.GetRole() == "leader" {
				for i, mm := range c.members {
					if mm.Host.Name == r.GetName() {
						return i
					}
				}
			}
		}
	}
	return -1
}

// inject runs one fault to its end and records it.
func (c *Cluster) inject(ctx context.Context, rec *Recorder, f Fault) {
	target := f.Target
	byLeader := f.Kind == KillLeader || f.Kind == PauseLeader || (f.Kind == Partition && f.Leader)
	if byLeader {
		if l := c.leader(ctx); l >= 0 {
			target = l
		}
	}
	m := c.members[target]
	what := fmt.Sprintf("%s %s", f.Kind, m.Host.Name)
	if byLeader {
		what += " (leader)"
	}
	at := rec.Now()
	switch f.Kind {
	case Kill, KillLeader:
		m.down.Store(true)
		m.Kill()
		time.Sleep(f.Hold)
		m.Start()
		if err := m.redial(); err != nil {
			c.t.Fatalf("%v", err)
		}
		m.down.Store(false)
	case Pause, PauseLeader:
		pid := m.Pid()
		c.mu.Lock()
		c.paused[pid] = true
		c.mu.Unlock()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			c.t.Errorf("SIGSTOP %s: %v", m.Host.Name, err)
		}
		time.Sleep(f.Hold)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			c.t.Errorf("SIGCONT %s: %v", m.Host.Name, err)
		}
		c.mu.Lock()
		delete(c.paused, pid)
		c.mu.Unlock()
	case Cut:
		if err := m.Host.Cut(); err != nil {
			c.t.Errorf("%v", err)
		}
		time.Sleep(f.Hold)
		if err := m.Host.Heal(); err != nil {
			c.t.Errorf("%v", err)
		}
	case Partition:
		var others []*netns.Host
		for i, o := range c.members {
			if i != target {
				others = append(others, o.Host)
			}
		}
		if err := c.U.Partition([]*netns.Host{m.Host}, others); err != nil {
			c.t.Errorf("%v", err)
		}
		time.Sleep(f.Hold)
		if err := c.U.Heal(); err != nil {
			c.t.Errorf("%v", err)
		}
	}
	rec.Event(at, rec.Now(), what)
}

// converge waits until every member sees three online members with one
// leader and lists the same containers of the run; it returns what still
// differed at the timeout ("" once they agree).
func (c *Cluster) converge(ctx context.Context, prefix string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		last = c.disagreement(ctx, prefix)
		if last == "" {
			return ""
		}
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

func (c *Cluster) disagreement(ctx context.Context, prefix string) string {
	var views []string
	for _, m := range c.members {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		mem, err := m.client().Cluster.ListMembers(cctx, &shoalv1.ListMembersRequest{})
		if err != nil {
			cancel()
			return fmt.Sprintf("%s: list members: %v", m.Host.Name, err)
		}
		leaders := 0
		for _, r := range mem.GetMembers() {
			if r.GetStatus() != "online" {
				cancel()
				return fmt.Sprintf("%s sees %s %s", m.Host.Name, r.GetName(), r.GetStatus())
			}
			if r.GetRole() == "leader" {
				leaders++
			}
		}
		if leaders != 1 || len(mem.GetMembers()) != len(c.members) {
			cancel()
			return fmt.Sprintf("%s sees %d members, %d leaders", m.Host.Name, len(mem.GetMembers()), leaders)
		}
		cts, err := m.client().Containers.ListContainers(cctx, &shoalv1.ListContainersRequest{})
		cancel()
		if err != nil {
			return fmt.Sprintf("%s: list containers: %v", m.Host.Name, err)
		}
		var names []string
		for _, info := range cts.GetContainers() {
			if strings.HasPrefix(info.GetContainer().GetName(), prefix) {
				names = append(names, info.GetContainer().GetName())
			}
		}
		sort.Strings(names)
		views = append(views, m.Host.Name+": "+strings.Join(names, " "))
	}
	for _, v := range views[1:] {
		_, a, _ := strings.Cut(views[0], ": ")
		_, b, _ := strings.Cut(v, ": ")
		if a != b {
			return "members list different containers: " + strings.Join(views, "; ")
		}
	}
	return ""
}

// deletePrefix deletes the run's containers (best effort: the harness's
// teardown deletes whatever is left).
func (c *Cluster) deletePrefix(ctx context.Context, prefix string) {
	cl := c.members[0].client()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := cl.Containers.ListContainers(lctx, &shoalv1.ListContainersRequest{})
	cancel()
	if err != nil {
		c.t.Logf("list for cleanup: %v", err)
		return
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, info := range resp.GetContainers() {
		name := info.GetContainer().GetName()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := cl.Containers.DeleteContainer(dctx, &shoalv1.DeleteContainerRequest{Name: name, Force: true}); err != nil {
				c.t.Logf("delete %s: %v", name, err)
			}
		}()
	}
	wg.Wait()
}
