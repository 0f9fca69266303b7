package migration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/dir"
)

// The unit-level fault matrix runs the engine between two fake members in
// one process: each has a real dir pool on a temporary directory, a fake
// runtime that records what it runs, and in-process streams to the other;
// one fake Raft log holds the records both read.

// fakeCluster is the Raft state both members see.
type fakeCluster struct {
	mu         sync.Mutex
	containers map[string]*shoalv1.Container
	nodes      map[string]*shoalv1.Node
	volumes    map[string]*shoalv1.StorageVolume // by POOL/NAME
	hosts      []*fakeHost
	// failPropose, when it returns an error for a command, fails the
	// proposal; applied says whether the command landed anyway.
	failPropose func(cmd proto.Message) (err error, applied bool)
}

func newCluster() *fakeCluster {
	return &fakeCluster{containers: map[string]*shoalv1.Container{}, volumes: map[string]*shoalv1.StorageVolume{}, nodes: map[string]*shoalv1.Node{
		"n1": {Name: "n1", Status: "online"}, "n2": {Name: "n2", Status: "online"},
	}}
}

func (c *fakeCluster) Sync(context.Context) error { return nil }

func (c *fakeCluster) Container(name string) (*shoalv1.Container, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct, ok := c.containers[name]
	if !ok {
		return nil, fmt.Errorf("container %q not found", name)
	}
	return proto.Clone(ct).(*shoalv1.Container), nil
}

func (c *fakeCluster) Volume(pool, name string) (*shoalv1.StorageVolume, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[pool+"/"+name]
	if !ok {
		return nil, fmt.Errorf("storage volume %s/%s not found", pool, name)
	}
	return proto.Clone(v).(*shoalv1.StorageVolume), nil
}

func (c *fakeCluster) Member(name string) (*shoalv1.Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return nil, fmt.Errorf("member %q not found", name)
	}
	return proto.Clone(n).(*shoalv1.Node), nil
}

func (c *fakeCluster) Containers() []*shoalv1.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*shoalv1.Container
	for _, ct := range c.containers {
		out = append(out, proto.Clone(ct).(*shoalv1.Container))
	}
	return out
}

// statusFor is what the owner would report for a desired state.
func statusFor(d shoalv1.DesiredState) string {
	if d == shoalv1.DesiredState_DESIRED_STATE_STOPPED {
		return "Stopped"
	}
	return "Running"
}

// Propose applies a command, then every member reconciles the container
// it names (as their reconcilers would on the applied entry).
func (c *fakeCluster) Propose(ctx context.Context, cmd proto.Message) error {
	if c.failPropose != nil {
		if err, applied := c.failPropose(cmd); err != nil {
			if applied {
				c.apply(cmd)
			}
			return err
		}
	}
	name := c.apply(cmd)
	for _, h := range c.hosts {
		_ = h.Reconcile(ctx, name)
	}
	return nil
}

func (c *fakeCluster) apply(cmd proto.Message) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := cmd.(type) {
	case *shoalv1.ContainerCreateCommand:
		ct := proto.Clone(m.GetContainer()).(*shoalv1.Container)
		ct.Status = statusFor(ct.GetDesiredState())
		c.containers[ct.GetName()] = ct
		return ct.GetName()
	case *shoalv1.ContainerMoveCommand:
		ct := c.containers[m.GetName()]
		ct.Node, ct.DesiredState, ct.Status = m.GetNode(), m.GetDesiredState(), statusFor(m.GetDesiredState())
		for _, k := range m.GetVolumes() {
			c.volumes[k].Node = m.GetNode()
		}
		return ct.GetName()
	case *shoalv1.VolumeCreateCommand:
		v := proto.Clone(m.GetVolume()).(*shoalv1.StorageVolume)
		c.volumes[v.GetPool()+"/"+v.GetName()] = v
		return ""
	case *shoalv1.VolumeMoveCommand:
		c.volumes[m.GetPool()+"/"+m.GetName()].Node = m.GetNode()
		return ""
	case *shoalv1.ContainerDesiredStateCommand:
		ct := c.containers[m.GetName()]
		ct.DesiredState, ct.Status = m.GetDesiredState(), statusFor(m.GetDesiredState())
		return ct.GetName()
	case *shoalv1.ContainerUpdateCommand:
		ct := c.containers[m.GetName()]
		if !m.GetKeepConfig() {
			ct.Config = m.GetConfig()
		}
		if ct.Config == nil {
			ct.Config = map[string]string{}
		}
		for k, v := range m.GetSetConfig() {
			ct.Config[k] = v
		}
		for _, k := range m.GetUnsetConfig() {
			delete(ct.Config, k)
		}
		return m.GetName()
	case *shoalv1.SnapshotCreateCommand:
		ct := c.containers[m.GetContainer()]
		ct.Snapshots = append(ct.Snapshots, m.GetSnapshot())
		return ct.GetName()
	case *shoalv1.NodeUpsertCommand:
		c.nodes[m.GetNode().GetName()] = proto.Clone(m.GetNode()).(*shoalv1.Node)
		return ""
	}
	panic(fmt.Sprintf("fake cluster: unexpected command %T", cmd))
}

// fakeHost is one member's runtime: which containers run, frozen or not,
// what was called, and its pool.
type fakeHost struct {
	t     *testing.T
	name  string
	pool  storage.Driver
	cl    *fakeCluster
	ckpts string

	mu       sync.Mutex
	state    map[string]string // running, frozen, stopped
	held     map[string]bool
	incoming map[string]bool
	calls    []string

	// fail makes the named call fail.
	fail     map[string]error
	postCopy bool
	memory   int64
	// pages is the page server of the last lazy checkpoint.
	pages *fakePages
}

func newHost(t *testing.T, name string, cl *fakeCluster) *fakeHost {
	t.Helper()
	d, err := dir.New(dir.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{t: t, name: name, pool: d, cl: cl, ckpts: t.TempDir(), state: map[string]string{},
		held: map[string]bool{}, incoming: map[string]bool{}, fail: map[string]error{}}
	cl.hosts = append(cl.hosts, h)
	return h
}

// call records a call and returns the failure armed for it.
func (h *fakeHost) call(what string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, what)
	return h.fail[what]
}

func (h *fakeHost) called(what string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.calls {
		if c == what {
			return true
		}
	}
	return false
}

func (h *fakeHost) stateOf(name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state[name]
}

func (h *fakeHost) Name() string    { return h.name }
func (h *fakeHost) Address() string { return "127.0.0.1:0" }

func (h *fakeHost) Pool(name string) (storage.Driver, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail["pool"]; err != nil {
		return nil, err
	}
	if name != "default" {
		return nil, fmt.Errorf("pool %q: %w", name, storage.ErrNotFound)
	}
	return h.pool, nil
}

func (h *fakeHost) VolumeName(name string) string { return "containers/" + name }

func (h *fakeHost) hasVolume(name string) bool {
	ok, _ := h.pool.VolumeExists(context.Background(), h.VolumeName(name))
	return ok
}

func (h *fakeHost) snapshots(name string) []string {
	s, _ := h.pool.ListSnapshots(context.Background(), h.VolumeName(name))
	return s
}

func (h *fakeHost) CopyVolume(ctx context.Context, src *shoalv1.Container, dst string, snaps []string) error {
	if err := h.call("copy-volume"); err != nil {
		return err
	}
	return h.pool.CloneVolume(ctx, h.VolumeName(src.GetName()), h.VolumeName(dst))
}

func (h *fakeHost) RemoveStale(ctx context.Context, name string) error {
	if _, err := h.cl.Container(name); err == nil {
		return nil
	}
	return h.drop(ctx, name)
}

func (h *fakeHost) drop(ctx context.Context, name string) error {
	h.mu.Lock()
	delete(h.state, name)
	h.mu.Unlock()
	if h.hasVolume(name) {
		return h.pool.DeleteVolume(ctx, h.VolumeName(name))
	}
	return nil
}

func (h *fakeHost) CustomVolumeName(name string) string { return "custom/" + name }

func (h *fakeHost) DropCustomVolume(ctx context.Context, pool, name string) error {
	if v, err := h.cl.Volume(pool, name); err == nil && v.GetNode() == h.name {
		return fmt.Errorf("storage volume %s/%s is on %s", pool, name, h.name)
	}
	if ok, _ := h.pool.VolumeExists(ctx, h.CustomVolumeName(name)); ok {
		return h.pool.DeleteVolume(ctx, h.CustomVolumeName(name))
	}
	return nil
}

func (h *fakeHost) KeepAsReplica(context.Context, string) error { return nil }

func (h *fakeHost) DropLocal(ctx context.Context, name string) error {
	h.call("drop-local")
	if ct, err := h.cl.Container(name); err == nil && ct.GetNode() == h.name {
		return nil
	}
	return h.drop(ctx, name)
}

// Reconcile runs or stops what this member owns, and removes the copies
// it does not own, leaving alone what a live move holds.
func (h *fakeHost) Reconcile(ctx context.Context, name string) error {
	h.mu.Lock()
	busy := h.held[name] || h.incoming[name]
	h.mu.Unlock()
	if busy || name == "" {
		return nil
	}
	ct, err := h.cl.Container(name)
	if err != nil || ct.GetNode() != h.name {
		if h.hasVolume(name) || h.stateOf(name) != "" {
			return h.drop(ctx, name)
		}
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_STOPPED {
		h.state[name] = "stopped"
	} else {
		h.state[name] = "running"
	}
	return nil
}

func (h *fakeHost) CanCheckpoint(context.Context) error                   { return h.call("can-checkpoint") }
func (h *fakeHost) CanPostCopy(*shoalv1.Container) bool                   { return h.postCopy }
func (h *fakeHost) CanPreCopy() bool                                      { return false }
func (h *fakeHost) MemoryBytes(context.Context, *shoalv1.Container) int64 { return h.memory }

func (h *fakeHost) StopHeld(_ context.Context, name string) error {
	if err := h.call("stop-held"); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.held[name] {
		h.t.Errorf("StopHeld(%s) of a container no move holds", name)
	}
	h.state[name] = "stopped"
	return nil
}

func (h *fakeHost) HoldForMove(name string) func() {
	h.mu.Lock()
	h.held[name] = true
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.held, name)
		h.mu.Unlock()
	}
}

func (h *fakeHost) setState(name, from, to string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from != "" && h.state[name] != from {
		return fmt.Errorf("%s: container %s is %q, not %s", h.name, name, h.state[name], from)
	}
	h.state[name] = to
	return nil
}

func (h *fakeHost) Freeze(_ context.Context, name string) error {
	if err := h.call("freeze"); err != nil {
		return err
	}
	return h.setState(name, "running", "frozen")
}

func (h *fakeHost) Thaw(_ context.Context, name string) error {
	h.call("thaw")
	if h.stateOf(name) != "frozen" {
		return nil
	}
	return h.setState(name, "frozen", "running")
}

func (h *fakeHost) NewCheckpointDir(name string) (string, error) {
	return filepath.Join(h.ckpts, fmt.Sprintf("%s.%d", name, time.Now().UnixNano())), nil
}

// dumpInto writes a checkpoint: a few image files.
func (h *fakeHost) dumpInto(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"core-1.img", "pages-1.img"} {
		if err := os.WriteFile(filepath.Join(dir, f), make([]byte, 64<<10), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (h *fakeHost) Checkpoint(_ context.Context, name, dir string) error {
	if err := h.call("checkpoint"); err != nil {
		return err
	}
	if h.stateOf(name) != "frozen" {
		return fmt.Errorf("checkpoint of %s: not frozen", name)
	}
	return h.dumpInto(dir)
}

func (h *fakeHost) StartLazyCheckpoint(_ context.Context, name, dir, addr string, port int) (PageServer, *shoalv1.PageServerKeys, error) {
	if err := h.call("lazy-checkpoint"); err != nil {
		return nil, nil, err
	}
	if err := h.dumpInto(dir); err != nil {
		return nil, nil, err
	}
	h.pages = &fakePages{}
	return h.pages, &shoalv1.PageServerKeys{CaPem: []byte("ca")}, nil
}

func (h *fakeHost) StartLazyPages(_ context.Context, dir, addr string, port int, keys *shoalv1.PageServerKeys) (LazyPages, error) {
	if err := h.call("lazy-pages"); err != nil {
		return nil, err
	}
	l := &fakeLazy{done: make(chan struct{})}
	close(l.done) // every page arrives at once
	return l, nil
}

func (h *fakeHost) RestoreIncoming(_ context.Context, ct *shoalv1.Container, dir string, lazy bool) error {
	h.mu.Lock()
	h.incoming[ct.GetName()] = true
	h.mu.Unlock()
	if err := h.call("restore"); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "core-1.img")); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return h.setState(ct.GetName(), "", "frozen")
}

func (h *fakeHost) CommitIncoming(ctx context.Context, name string, wait time.Duration) error {
	h.call("commit-incoming")
	deadline := time.Now().Add(wait)
	for {
		if ct, err := h.cl.Container(name); err == nil && ct.GetNode() == h.name {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %q: the move to %s was not committed: %w", name, h.name, ErrConflict)
		}
		time.Sleep(time.Millisecond)
	}
	h.mu.Lock()
	delete(h.incoming, name)
	h.mu.Unlock()
	return h.setState(name, "frozen", "running")
}

func (h *fakeHost) AbortIncoming(ctx context.Context, name string) error {
	h.call("abort-incoming")
	h.mu.Lock()
	delete(h.incoming, name)
	h.mu.Unlock()
	return h.DropLocal(ctx, name)
}

func (h *fakeHost) RebootFresh(ctx context.Context, name string) error {
	h.call("reboot-fresh")
	return h.setState(name, "", "running")
}

// fakePages is a post-copy source's page server.
type fakePages struct {
	mu             sync.Mutex
	aborted, waits int
}

func (p *fakePages) Abort() { p.mu.Lock(); p.aborted++; p.mu.Unlock() }
func (p *fakePages) Wait(time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waits++
	return nil
}

type fakeLazy struct{ done chan struct{} }

func (l *fakeLazy) Abort()                {}
func (l *fakeLazy) Done() <-chan struct{} { return l.done }
func (l *fakeLazy) Err() error            { return nil }

// pipePeers connects a member's engine to the others' in-process, with
// the semantics of a gRPC stream: cancelling the client's context ends
// both ends; the server's return value is what the client receives last.
type pipePeers struct{ targets map[string]*Target }

func (p *pipePeers) RestoreContainer(ctx context.Context, member string) (RestoreClient, error) {
	e, ok := p.targets[member]
	if !ok {
		return nil, fmt.Errorf("member %q is not reachable", member)
	}
	return serve[*shoalv1.RestoreContainerRequest, *shoalv1.RestoreContainerResponse](ctx, e.Restore), nil
}

func (p *pipePeers) ReceiveVolume(ctx context.Context, member string) (VolumeClient, error) {
	e, ok := p.targets[member]
	if !ok {
		return nil, fmt.Errorf("member %q is not reachable", member)
	}
	return serve[*shoalv1.ReceiveVolumeRequest, *shoalv1.ReceiveVolumeResponse](ctx, e.Receive), nil
}

// pipe is one stream: the client's end; pipeServer is the server's.
type pipe[Req, Resp any] struct {
	ctx       context.Context
	req       chan Req
	resp      chan Resp
	done      chan struct{}
	err       error
	closeOnce sync.Once
}

// serve runs handler on a new stream's server end and returns its client
// end.
func serve[Req, Resp any, S interface{ Recv() (Req, error) }](ctx context.Context, handler func(S) error) *pipe[Req, Resp] {
	p := &pipe[Req, Resp]{ctx: ctx, req: make(chan Req), resp: make(chan Resp, 4), done: make(chan struct{})}
	srv := any(pipeServer[Req, Resp]{p}).(S)
	go func() { p.err = handler(srv); close(p.done) }()
	return p
}

func (p *pipe[Req, Resp]) Send(m Req) error {
	select {
	case p.req <- m:
		return nil
	case <-p.done:
		return io.EOF
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *pipe[Req, Resp]) CloseSend() error { p.closeOnce.Do(func() { close(p.req) }); return nil }

func (p *pipe[Req, Resp]) Recv() (Resp, error) {
	var none Resp
	select {
	case r := <-p.resp:
		return r, nil
	case <-p.done:
		select {
		case r := <-p.resp:
			return r, nil
		default:
		}
		if p.err != nil {
			return none, p.err
		}
		return none, io.EOF
	case <-p.ctx.Done():
		return none, p.ctx.Err()
	}
}

func (p *pipe[Req, Resp]) CloseAndRecv() (Resp, error) {
	_ = p.CloseSend()
	return p.Recv()
}

type pipeServer[Req, Resp any] struct{ p *pipe[Req, Resp] }

func (s pipeServer[Req, Resp]) Context() context.Context { return s.p.ctx }

func (s pipeServer[Req, Resp]) Recv() (Req, error) {
	var none Req
	select {
	case m, ok := <-s.p.req:
		if !ok {
			return none, io.EOF
		}
		return m, nil
	case <-s.p.ctx.Done():
		return none, s.p.ctx.Err()
	}
}

func (s pipeServer[Req, Resp]) Send(r Resp) error {
	select {
	case s.p.resp <- r:
		return nil
	case <-s.p.ctx.Done():
		return s.p.ctx.Err()
	}
}

func (s pipeServer[Req, Resp]) SendAndClose(r Resp) error { return s.Send(r) }

// events records lifecycle events.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) Lifecycle(node, action, resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, node+" "+action+" "+resource)
}

// progress records phases.
type progress struct {
	mu     sync.Mutex
	phases []string
}

func (p *progress) Phase(phase string) { p.Set(phase, 0, -1, "") }
func (p *progress) Set(phase string, done, total int64, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.phases); n == 0 || p.phases[n-1] != phase {
		p.phases = append(p.phases, phase)
	}
}

// rig is two members, n1 and n2, and a container c on n1, running, with
// a user snapshot s1 and a file written after it.
type rig struct {
	t        *testing.T
	cl       *fakeCluster
	n1, n2   *fakeHost
	e1, e2   *Source
	ev       *events
	points   map[string]error // failpoints armed on both members
	phases   []Phase
	phasesMu sync.Mutex
	// onPhase, when set, runs as n1 enters each phase.
	onPhase func(Phase)
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, cl: newCluster(), ev: &events{}, points: map[string]error{}}
	r.n1, r.n2 = newHost(t, "n1", r.cl), newHost(t, "n2", r.cl)
	peers := &pipePeers{targets: map[string]*Target{}}
	mk := func(h *fakeHost) Deps {
		return Deps{Host: h, Cluster: r.cl, Peers: peers, Events: r.ev, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Failpoint: func(name string) error { return r.points[name] },
			Armed:     func(name string) bool { _, ok := r.points[name]; return ok },
			OnPhase: func(k Kind, p Phase) {
				if h == r.n1 {
					r.phasesMu.Lock()
					r.phases = append(r.phases, p)
					r.phasesMu.Unlock()
					if r.onPhase != nil {
						r.onPhase(p)
					}
				}
			}}
	}
	r.e1, r.e2 = NewSource(mk(r.n1)), NewSource(mk(r.n2))
	peers.targets["n1"], peers.targets["n2"] = NewTarget(mk(r.n1)), NewTarget(mk(r.n2))
	r.container("c", shoalv1.DesiredState_DESIRED_STATE_RUNNING, nil)
	return r
}

// container makes a container on n1 with a snapshot s1.
func (r *rig) container(name string, desired shoalv1.DesiredState, cfg map[string]string) {
	ctx := context.Background()
	vol := r.n1.VolumeName(name)
	if err := r.n1.pool.CreateVolume(ctx, vol); err != nil {
		r.t.Fatal(err)
	}
	r.write(r.n1, name, "before", "1")
	if err := r.n1.pool.CreateSnapshot(ctx, vol, "s1"); err != nil {
		r.t.Fatal(err)
	}
	r.write(r.n1, name, "after", "2")
	if err := r.cl.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{
		Name: name, Node: "n1", Pool: "default", DesiredState: desired, Config: cfg,
		Snapshots: []*shoalv1.Snapshot{{Name: "s1"}}}}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) write(h *fakeHost, name, file, body string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(h.pool.(*dir.Driver).Path(h.VolumeName(name)), file), []byte(body), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) read(h *fakeHost, name, file string) string {
	b, _ := os.ReadFile(filepath.Join(h.pool.(*dir.Driver).Path(h.VolumeName(name)), file))
	return string(b)
}

// host returns the fake member by name.
func (r *rig) host(name string) *fakeHost {
	if name == "n1" {
		return r.n1
	}
	return r.n2
}

// exactlyOnce asserts what a user would check after any move, failed or
// not: the cluster names one owner; the container is there, in the state
// it should be, with its volume; the other member holds nothing of it;
// and no transfer snapshot is left anywhere.
func (r *rig) exactlyOnce(name, owner string, want string) {
	r.t.Helper()
	ct, err := r.cl.Container(name)
	if err != nil {
		r.t.Fatalf("%s: no record: %v", name, err)
	}
	if ct.GetNode() != owner {
		r.t.Fatalf("%s is owned by %s, want %s", name, ct.GetNode(), owner)
	}
	other := "n2"
	if owner == "n2" {
		other = "n1"
	}
	o, x := r.host(owner), r.host(other)
	if got := o.stateOf(name); got != want {
		r.t.Errorf("%s on its owner %s is %q, want %q", name, owner, got, want)
	}
	if !o.hasVolume(name) {
		r.t.Errorf("%s has no volume on its owner %s", name, owner)
	}
	if got := x.stateOf(name); got != "" {
		r.t.Errorf("%s is %q on %s, which does not own it", name, got, other)
	}
	if x.hasVolume(name) {
		r.t.Errorf("%s has a volume left on %s, which does not own it", name, other)
	}
	for _, sn := range o.snapshots(name) {
		if sn != "s1" && sn != "s2" {
			r.t.Errorf("%s: transfer snapshot %q left on %s", name, sn, owner)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.held) != 0 || len(o.incoming) != 0 {
		r.t.Errorf("%s: holds left on %s: held %v incoming %v", name, owner, o.held, o.incoming)
	}
}

// targetSweeps stands for the target's own sweep of a volume it received
// for a move that never committed (node.sweepStaleVolumes): the fake's
// reconcile drops a copy of a container another member owns.
func (r *rig) targetSweeps(name string) {
	r.t.Helper()
	if err := r.n2.Reconcile(context.Background(), name); err != nil {
		r.t.Fatal(err)
	}
}
