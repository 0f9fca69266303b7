package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boltdb/bolt"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster/membership"
	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// ErrNotLeader is returned when a write reaches a node that is not the leader
// and cannot forward it.
var ErrNotLeader = errors.New("not the cluster leader")

// Config configures the local Raft member.
type Config struct {
	// NodeName is this member's Raft server ID and node name.
	NodeName string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the Raft transport's TCP address; port 0 picks one.
	BindAddr string
	// AdvertiseAddr is the address other members dial; empty means the
	// listener's own address.
	AdvertiseAddr string
	// ServerTLS and ClientTLS, when set, wrap the Raft transport in mutual
	// TLS: the listener accepts only peers with node certificates
	// (pki.ServerTLS with requireClientCert) and dials present this member's
	// certificate and verify the peer's (pki.ClientTLS with an empty server
	// name: the dialled host is checked).
	ServerTLS, ClientTLS *tls.Config
	// Join makes a fresh member wait to be added by the leader instead of
	// bootstrapping a cluster of its own.
	Join bool
	// SnapshotThreshold and TrailingLogs tune log compaction (0: defaults,
	// 4096 and 10240): a snapshot is taken after SnapshotThreshold new
	// entries, keeping TrailingLogs entries for followers that lag a little;
	// one that lags more catches up from the snapshot.
	SnapshotThreshold, TrailingLogs uint64
	Logger                          *slog.Logger
}

// Cluster is the local member of the Raft cluster and its FSM.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *FSM
	store *raftboltdb.BoltStore
	trans *raft.NetworkTransport
	// started is when this member opened its log.
	started time.Time

	fwdMu     sync.Mutex
	fwd       Forwarder
	readIndex ReadIndexer

	// gossip is this member's gossip view (nil until SetGossip).
	gossip atomic.Pointer[func() []membership.Member]

	// batch takes the creates proposed on this leader to the batcher,
	// which gathers those waiting into one entry; stop ends it.
	batch    chan proposal
	stop     chan struct{}
	stopOnce sync.Once
}

// Open starts the local Raft member. On a fresh data dir it bootstraps a
// one-node cluster; otherwise it recovers its log and snapshots.
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "raft")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft data dir: %w", err)
	}
	// Bolt waits for its file lock without end by default; another
	// process holding it gets named instead of a daemon that never starts.
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bolt.Options{Timeout: 30 * time.Second}})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open raft store %s: still locked after 30 s: another shoald (or a process it left) holds it", dbPath)
		}
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	hlog := newHCLogger(log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	fsm := NewFSM()
	stream, err := newStreamLayer(cfg.BindAddr, cfg.AdvertiseAddr, refuseRevoked(cfg.ServerTLS, fsm), cfg.ClientTLS)
	if err != nil {
		store.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hlog)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.Logger = hlog
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = 4096
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}

	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	if !has && !cfg.Join {
		conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, store, store, snaps, trans, conf); err != nil {
			trans.Close()
			store.Close()
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		log.Info("bootstrapped a new one-node cluster", "node", cfg.NodeName)
	}
	// The newest entries stay in memory: the leader sends them to its
	// followers without reading them back from bolt (GetLog was 8% of the
	// CPU of concurrent creates: bench/c1m's profile).
	logs, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, fsm, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	c := &Cluster{cfg: cfg, log: log, raft: r, fsm: fsm, store: store, trans: trans, started: time.Now(),
		batch: make(chan proposal, maxBatch), stop: make(chan struct{})}
	go c.runBatcher()
	if has || !cfg.Join {
		if err := c.WaitLeader(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// logCacheSize is how many of the newest log entries stay in memory.
const logCacheSize = 4096

// refuseRevoked makes a Raft listener's TLS config also refuse peers whose
// certificate the trust store revoked (a removed member).
func refuseRevoked(cfg *tls.Config, fsm *FSM) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) > 0 && fsm.Revoked(pki.FingerprintOf(cs.PeerCertificates[0])) {
			return fmt.Errorf("raft: the peer's certificate %q was revoked", cs.PeerCertificates[0].Subject.CommonName)
		}
		return nil
	}
	return cfg
}

// Addr returns the address other members use to reach this one.
func (c *Cluster) Addr() string { return string(c.trans.LocalAddr()) }

// IsLeader reports whether this member leads the cluster right now.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// RaftStats are hashicorp/raft's own figures ("term", "commit_index",
// "last_log_index", ...), for metrics.
func (c *Cluster) RaftStats() map[string]string { return c.raft.Stats() }

// QuorumContact is how long ago this member last knew a Raft quorum stood
// behind it: 0 on the leader (which steps down within LeaderLeaseTimeout
// once it cannot reach a quorum), else the time since the leader's last
// contact (a long time when there never was one).
func (c *Cluster) QuorumContact() time.Duration {
	if c.IsLeader() {
		return 0
	}
	last := c.raft.LastContact()
	if last.IsZero() {
		return time.Since(c.started)
	}
	return time.Since(last)
}

// Leader returns the current leader's name and Raft address ("" when none).
func (c *Cluster) Leader() (name, addr string) {
	a, id := c.raft.LeaderWithID()
	return string(id), string(a)
}

// Server is a member of the Raft configuration.
type Server struct {
	Name    string
	Address string
	Voter   bool
}

// Servers returns the Raft configuration.
func (c *Cluster) Servers() ([]Server, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{Name: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddMember adds a member to the Raft configuration, as a voter or as a
// non-voting standby. Only the leader can.
func (c *Cluster) AddMember(ctx context.Context, name, addr string, voter bool) error {
	timeout := deadline(ctx)
	var f raft.IndexFuture
	if voter {
		f = c.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0, timeout)
	} else {
		f = c.raft.AddNonvoter(raft.ServerID(name), raft.ServerAddress(addr), 0, timeout)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("add %s to raft: %w", name, leaderErr(err))
	}
	return nil
}

// RemoveMember removes a member from the Raft configuration.
func (c *Cluster) RemoveMember(ctx context.Context, name string) error {
	if err := c.raft.RemoveServer(raft.ServerID(name), 0, deadline(ctx)).Error(); err != nil {
		return fmt.Errorf("remove %s from raft: %w", name, leaderErr(err))
	}
	return nil
}

// VerifyLeader confirms this member still leads (a quorum answered), for
// reads that must be linearizable.
func (c *Cluster) VerifyLeader() error {
	return leaderErr(c.raft.VerifyLeader().Error())
}

func deadline(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return 10 * time.Second
}

func leaderErr(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return err
}

// FSM returns the local replica of the desired state.
func (c *Cluster) FSM() *FSM { return c.fsm }

// NodeName returns this member's name.
func (c *Cluster) NodeName() string { return c.cfg.NodeName }

// WaitLeader blocks until the cluster has a leader and this replica has
// applied everything committed before it became known.
func (c *Cluster) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := c.raft.LeaderWithID(); addr != "" {
			if c.raft.State() == raft.Leader {
				return c.raft.Barrier(10 * time.Second).Error()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for raft leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Forwarder sends an encoded command to the leader (by name) and returns
// the leader's verdict. The API layer provides it (over the members' mutual
// TLS gRPC); without one, writes on a follower fail with ErrNotLeader.
type Forwarder func(ctx context.Context, leader string, command []byte) (index uint64, err error)

// ReadIndexer asks the leader (by name) for its applied index after it has
// confirmed its leadership.
type ReadIndexer func(ctx context.Context, leader string) (uint64, error)

// SetForwarder installs the functions that forward writes to the leader and
// ask it for its read index.
func (c *Cluster) SetForwarder(f Forwarder, r ReadIndexer) {
	c.fwdMu.Lock()
	c.fwd, c.readIndex = f, r
	c.fwdMu.Unlock()
}

// LeaderReadIndex is the leader's side of a linearizable read: it confirms
// it still leads and returns the index a reader must have applied.
func (c *Cluster) LeaderReadIndex() (uint64, error) {
	if err := c.VerifyLeader(); err != nil {
		return 0, err
	}
	return c.fsm.Applied(), nil
}

// Sync makes this member's FSM at least as new as the leader's at the time
// of the call, so the reads that follow are linearizable. On the leader it
// only confirms leadership.
func (c *Cluster) Sync(ctx context.Context) error {
	if c.raft.State() == raft.Leader {
		// A leader cut off from its quorum keeps its state until its lease
		// runs out: wait for the quorum's answer within the caller's time.
		done := make(chan error, 1)
		go func() { done <- c.VerifyLeader() }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%w: no quorum confirmed member %s still leads: %v", ErrNotLeader, c.cfg.NodeName, ctx.Err())
		}
	}
	c.fwdMu.Lock()
	ri := c.readIndex
	c.fwdMu.Unlock()
	if ri == nil {
		return ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(ctx, deadline(ctx))
	defer cancel()
	// The leader this member knows may just have died: ask it briefly,
	// then whoever leads next, within the caller's time.
	var lastErr error
	for {
		if name, _ := c.Leader(); name != "" && name != c.cfg.NodeName {
			tctx, tcancel := context.WithTimeout(ctx, syncTry)
			idx, err := ri(tctx, name)
			tcancel()
			if err == nil {
				return c.waitApplied(ctx, idx)
			}
			lastErr = fmt.Errorf("leader %s: %w", name, err)
		} else if c.raft.State() == raft.Leader {
			return c.Sync(ctx)
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return lastErr
			}
			return fmt.Errorf("%w: no leader known: %v", ErrNotLeader, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// syncTry bounds one read-index question to the leader a member knows.
const syncTry = time.Second

// Propose replicates a command and applies it, forwarding it to the leader
// when this member is not the leader. It returns the FSM's verdict (for
// example ErrExists) or a replication error.
func (c *Cluster) Propose(ctx context.Context, m proto.Message) error {
	data, err := Encode(m)
	if err != nil {
		return err
	}
	return c.ProposeEncoded(ctx, data)
}

// ProposeEncoded is Propose for a command already encoded (a forwarded one).
func (c *Cluster) ProposeEncoded(ctx context.Context, data []byte) error {
	_, err := c.ProposeIndex(ctx, data)
	return err
}

// ProposeIndex applies an encoded command and returns its Raft index. On a
// follower it forwards the command and returns once this member has applied
// it too, so a caller reads its own write anywhere.
func (c *Cluster) ProposeIndex(ctx context.Context, data []byte) (uint64, error) {
	if c.raft.State() != raft.Leader {
		return c.forward(ctx, data)
	}
	_, cmd, err := Decode(data)
	if err != nil {
		return 0, err
	}
	if err := c.admit(cmd); err != nil {
		return 0, err
	}
	if _, ok := cmd.(*shoalv1.ContainerCreateCommand); ok {
		return c.proposeBatched(ctx, data)
	}
	f := c.raft.Apply(data, deadline(ctx))
	// f.Error has no deadline of its own, and an entry still queued when
	// raft shuts down is never answered: wait within the caller's.
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	wctx, cancel := context.WithTimeout(ctx, deadline(ctx))
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			return 0, fmt.Errorf("replicate command: %w", leaderErr(err))
		}
	case <-wctx.Done():
		return 0, fmt.Errorf("replicate command: no commit within the deadline (the entry may still apply): %w", ErrNotLeader)
	}
	if resp, ok := f.Response().(error); ok && resp != nil {
		return f.Index(), resp
	}
	return f.Index(), nil
}

// maxBatch is the most commands the batcher puts in one entry.
const maxBatch = 256

// proposal is a command waiting for the batcher, and where its verdict goes.
type proposal struct {
	data []byte
	done chan proposed // buffered: the batcher never waits on a caller
}

type proposed struct {
	index uint64
	err   error
}

// proposeBatched hands an admitted create to the batcher and waits for its
// own verdict within the caller's deadline, as ProposeIndex does for an
// entry of its own.
func (c *Cluster) proposeBatched(ctx context.Context, data []byte) (uint64, error) {
	p := proposal{data: data, done: make(chan proposed, 1)}
	wctx, cancel := context.WithTimeout(ctx, deadline(ctx))
	defer cancel()
	select {
	case c.batch <- p:
	case <-c.stop:
		return 0, fmt.Errorf("replicate command: member %s is shutting down: %w", c.cfg.NodeName, ErrNotLeader)
	case <-wctx.Done():
		return 0, fmt.Errorf("replicate command: not proposed within the deadline: %w", ErrNotLeader)
	}
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-wctx.Done():
		return 0, fmt.Errorf("replicate command: no commit within the deadline (the entry may still apply): %w", ErrNotLeader)
	}
}

// runBatcher proposes the creates handed to it: one alone as its own
// entry, several waiting at once as one CommandBatch entry, which the FSM
// applies in order with a verdict for each. It does not wait for an entry
// to commit before it proposes the next (raft.Apply blocks only until the
// leader's loop takes the entry, and creates gather meanwhile).
func (c *Cluster) runBatcher() {
	for {
		var props []proposal
		select {
		case p := <-c.batch:
			props = append(props, p)
		case <-c.stop:
			return
		}
	gather:
		for len(props) < maxBatch {
			select {
			case p := <-c.batch:
				props = append(props, p)
			default:
				break gather
			}
		}
		data := props[0].data
		if len(props) > 1 {
			b := &shoalv1.CommandBatch{Commands: make([][]byte, len(props))}
			for i, p := range props {
				b.Commands[i] = p.data
			}
			var err error
			if data, err = Encode(b); err != nil {
				for _, p := range props {
					p.done <- proposed{err: err}
				}
				continue
			}
		}
		f := c.raft.Apply(data, 10*time.Second)
		go answer(f, props)
	}
}

// answer waits for a batcher's entry and gives each proposal its verdict.
func answer(f raft.ApplyFuture, props []proposal) {
	err := f.Error()
	var res BatchResult
	if err == nil && len(props) > 1 {
		var ok bool
		if res, ok = f.Response().(BatchResult); !ok || len(res) != len(props) {
			err = fmt.Errorf("batch of %d commands answered with %T: %w", len(props), f.Response(), ErrInvalidCommand)
		}
	}
	for i, p := range props {
		r := proposed{index: f.Index()}
		switch {
		case err != nil:
			r = proposed{err: fmt.Errorf("replicate command: %w", leaderErr(err))}
		case len(props) == 1:
			if e, ok := f.Response().(error); ok && e != nil {
				r.err = e
			}
		default:
			r.err = res[i]
		}
		p.done <- r
	}
}

// ApplyForwarded applies a command another member forwarded here as to
// the leader. A member that does not lead refuses it at once rather than
// forwarding it on: two members that each take the other for the leader
// (one restarting, its API not up yet) would otherwise wait on each other
// until the caller's deadline. The caller looks up the leader again.
func (c *Cluster) ApplyForwarded(ctx context.Context, data []byte) (uint64, error) {
	if c.raft.State() != raft.Leader {
		return 0, fmt.Errorf("member %s does not lead (any more): %w", c.cfg.NodeName, ErrNotLeader)
	}
	return c.ProposeIndex(ctx, data)
}

// forward sends a write to the leader, waiting briefly for one to be
// known, then waits until this member has applied it.
func (c *Cluster) forward(ctx context.Context, data []byte) (uint64, error) {
	c.fwdMu.Lock()
	fwd := c.fwd
	c.fwdMu.Unlock()
	if fwd == nil {
		return 0, ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(ctx, deadline(ctx))
	defer cancel()
	wait := time.NewTicker(50 * time.Millisecond)
	defer wait.Stop()
	var lastErr error
	for {
		if name, _ := c.Leader(); name != "" && name != c.cfg.NodeName {
			idx, err := fwd(ctx, name, data)
			if err == nil {
				return idx, c.waitApplied(ctx, idx)
			}
			// An unreachable leader may just have died: retry with whoever
			// leads next, within the caller's deadline.
			if status.Code(err) != codes.Unavailable {
				return idx, err
			}
			lastErr = err
		} else if c.raft.State() == raft.Leader {
			return c.ProposeIndex(ctx, data)
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return 0, lastErr
			}
			return 0, fmt.Errorf("%w: no leader known: %v", ErrNotLeader, ctx.Err())
		case <-wait.C:
		}
	}
}

// WaitApplied waits until this member's FSM has applied index, as a
// member that another forwarded a read to must before it answers.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) error {
	return c.waitApplied(ctx, index)
}

// waitApplied waits until this member's FSM has applied index (an entry
// the FSM sees: a command, or what a leader's read index names).
func (c *Cluster) waitApplied(ctx context.Context, index uint64) error {
	for c.fsm.Applied() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d to apply here: %w", index, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// Snapshot forces a Raft snapshot (log compaction).
func (c *Cluster) Snapshot() error { return c.raft.Snapshot().Error() }

// Close stops the local member. It does not touch the host's containers.
func (c *Cluster) Close() error {
	err := c.raft.Shutdown().Error()
	c.stopOnce.Do(func() { close(c.stop) })
	c.trans.Close()
	if cerr := c.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// newHCLogger adapts slog for hashicorp libraries (warnings and errors only).
func newHCLogger(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: slogWriter{log},
	})
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "[ERROR]"):
		w.log.Error(msg)
	default:
		w.log.Warn(msg)
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
