package ha

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// SnapshotPrefix starts the names of the owner's replication snapshots.
const SnapshotPrefix = "ha-"

// View is the cluster state the replicator reads (this member's FSM).
type View interface {
	Containers() []*shoalv1.Container
	Nodes() []*shoalv1.Node
	Container(name string) (*shoalv1.Container, error)
}

// Host is the volume work replication does on this member (the node).
type Host interface {
	// SnapshotVolume takes a read-only snapshot of the container's volume.
	SnapshotVolume(ctx context.Context, ct *shoalv1.Container, snap string) error
	// VolumeSnapshots lists the volume's snapshots starting with prefix.
	VolumeSnapshots(ctx context.Context, ct *shoalv1.Container, prefix string) ([]string, error)
	// DeleteVolumeSnapshot deletes one (a missing one is not an error).
	DeleteVolumeSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error
	// Replicas lists the containers this member holds a replica of.
	Replicas(ctx context.Context) ([]string, error)
	// DeleteReplica deletes this member's replica of a container; it
	// fails with ErrReplicaPending, deleting nothing, while the replica is
	// yet to become the volume of a container healed here.
	DeleteReplica(ctx context.Context, container string) error
}

// Sender sends snapshot snap of ct's volume to member, incrementally on
// base when set, and returns the bytes sent (migration.Source.Replicate).
type Sender func(ctx context.Context, ct *shoalv1.Container, member, base, snap string) (int64, error)

// Replicator keeps the replicas of the HA containers this member owns
// within their RPO: each is snapshotted and the snapshot sent to every
// member ChooseReplicas names, incrementally on the snapshot that member
// already holds, and the FSM records each replica. It also deletes the
// replicas this member holds of containers the cluster no longer has.
// Replication runs beside everything else, a few containers at a time;
// it never holds a container or the API up.
type Replicator struct {
	Self    string
	View    View
	Host    Host
	Send    Sender
	Propose func(ctx context.Context, cmd proto.Message) error
	Log     *slog.Logger
	// Every is how often it looks for work (default 250 ms).
	Every time.Duration
	// Parallel bounds the containers replicated at once (default 2).
	Parallel int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Fits, when set, says why a container would not fit on a member
	// (FSM.Fits); new replicas prefer members where it would.
	Fits func(ct *shoalv1.Container, member string) error
	// Disk, when set, says why member's pool lacks the room for a new
	// replica of ct (nil when it has it or nobody knows): such a member
	// is not chosen.
	Disk func(ct *shoalv1.Container, member string) error

	mu      sync.Mutex
	running map[string]bool
	failed  map[string]time.Time // last failure per container: back off
	// unrecorded: replicas held here that no record named at the last
	// collect (deleted if still so at the next).
	unrecorded map[string]bool
}

// sendTimeout bounds one replication to one member.
const sendTimeout = 2 * time.Minute

// Run replicates until ctx ends.
func (r *Replicator) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	sem := make(chan struct{}, max(r.Parallel, 2))
	r.running, r.failed = map[string]bool{}, map[string]time.Time{}
	t := time.NewTicker(every)
	defer t.Stop()
	gc := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, ct := range r.due() {
			r.mu.Lock()
			r.running[ct.GetName()] = true
			r.mu.Unlock()
			go func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				err := r.Replicate(ctx, ct)
				r.mu.Lock()
				delete(r.running, ct.GetName())
				if err != nil {
					r.failed[ct.GetName()] = r.now()
				} else {
					delete(r.failed, ct.GetName())
				}
				r.mu.Unlock()
			}()
		}
		if time.Since(gc) > 5*time.Second {
			gc = time.Now()
			r.collect(ctx)
		}
	}
}

func (r *Replicator) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Replicator) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

// due lists the HA containers this member owns whose replicas are older
// than their RPO allows (or missing), and that are not being replicated.
func (r *Replicator) due() []*shoalv1.Container {
	nodes, all := r.View.Nodes(), r.View.Containers()
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*shoalv1.Container
	for _, ct := range all {
		p := PolicyOf(cluster.ExpandedConfig(ct))
		if !p.Enabled || ct.GetNode() != r.Self || r.running[ct.GetName()] {
			continue
		}
		if st := ct.GetStatus(); st != "Running" && st != "Stopped" && st != "Frozen" {
			continue // not on this host yet (pulling, failed)
		}
		if f, ok := r.failed[ct.GetName()]; ok && now.Sub(f) < min(p.RPO, 5*time.Second) {
			continue
		}
		if Due(ct, r.choose(ct, nodes, all), nodes, p, now) {
			out = append(out, ct)
		}
	}
	return out
}

// choose is ChooseReplicas with this replicator's Fits.
func (r *Replicator) choose(ct *shoalv1.Container, nodes []*shoalv1.Node, all []*shoalv1.Container) []string {
	var fits func(string) error
	if r.Fits != nil {
		fits = func(member string) error { return r.Fits(ct, member) }
	}
	var disk func(string) error
	if r.Disk != nil {
		disk = func(member string) error { return r.Disk(ct, member) }
	}
	return ChooseReplicas(ct, nodes, all, fits, disk)
}

// Due reports whether a container needs replicating now: a chosen member
// holds no replica from this owner, or one older than the RPO less the
// time a replication takes (a quarter of the RPO, so the newest copy
// stays within it), or a replica is held by a member no longer chosen
// (but not Parked).
func Due(ct *shoalv1.Container, chosen []string, nodes []*shoalv1.Node, p Policy, now time.Time) bool {
	have := map[string]*shoalv1.Replica{}
	for _, r := range ct.GetReplicas() {
		have[r.GetMember()] = r
	}
	for _, m := range chosen {
		rep, ok := have[m]
		if !ok || rep.GetFrom() != ct.GetNode() || Lag(rep, now) >= p.RPO-p.RPO/4 {
			return true
		}
		delete(have, m)
	}
	for _, rep := range have {
		if !Parked(rep, nodes) {
			return true
		}
	}
	return false
}

// Replicate makes one round for ct: a snapshot, sent to each chosen
// member; replicas on members no longer chosen are forgotten; the owner's
// replication snapshots that no replica is based on are deleted.
func (r *Replicator) Replicate(ctx context.Context, ct *shoalv1.Container) error {
	ct, err := r.View.Container(ct.GetName())
	if err != nil || ct.GetNode() != r.Self {
		return err
	}
	nodes := r.View.Nodes()
	chosen := r.choose(ct, nodes, r.View.Containers())
	taken := r.now()
	snap := SnapshotPrefix + strconv.FormatInt(taken.UnixNano(), 36)
	if err := r.Host.SnapshotVolume(ctx, ct, snap); err != nil {
		r.log().Warn("replication snapshot", "container", ct.GetName(), "err", err)
		return err
	}
	held := map[string]*shoalv1.Replica{}
	for _, rep := range ct.GetReplicas() {
		held[rep.GetMember()] = rep
	}
	mine, err := r.Host.VolumeSnapshots(ctx, ct, SnapshotPrefix)
	if err != nil {
		return err
	}
	var firstErr error
	for _, m := range chosen {
		base := ""
		if rep, ok := held[m]; ok {
			if slices.Contains(mine, rep.GetSnapshot()) {
				base = rep.GetSnapshot()
			} else if i := slices.Index(mine, snap); i > 0 {
				// This owner lacks the recorded base: it was promoted at a
				// round whose stream arrived but whose record did not (the
				// old owner died between). The member may hold that round
				// too (the old owner took it); if not, it says so and the
				// round goes in full.
				base = mine[i-1]
			}
		}
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		start := time.Now()
		n, err := r.Send(sctx, ct, m, base, snap)
		cancel()
		if err != nil {
			r.log().Warn("replication failed", "container", ct.GetName(), "member", m, "err", err)
			firstErr = cmpErr(firstErr, err)
			continue
		}
		rep := &shoalv1.Replica{Member: m, Snapshot: snap, TakenUnixNano: taken.UnixNano(), LastBytes: n, From: r.Self}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = r.Propose(pctx, &shoalv1.ContainerReplicaSetCommand{Container: ct.GetName(), Replica: rep})
		cancel()
		if err != nil {
			r.log().Warn("record replica", "container", ct.GetName(), "member", m, "err", err)
			firstErr = cmpErr(firstErr, err)
			continue
		}
		held[m] = rep
		if base == "" {
			// Rare (a new replica, or one that lost its base): worth a line.
			r.log().Info("replicated in full", "container", ct.GetName(), "member", m, "snapshot", snap,
				"bytes", n, "took", time.Since(start))
		} else {
			r.log().Debug("replicated", "container", ct.GetName(), "member", m, "snapshot", snap, "base", base,
				"bytes", n, "took", time.Since(start))
		}
	}
	for m, rep := range held {
		if !slices.Contains(chosen, m) && !Parked(rep, nodes) {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := r.Propose(pctx, &shoalv1.ContainerReplicaDropCommand{Container: ct.GetName(), Member: m}); err == nil {
				delete(held, m)
				r.log().Info("replica no longer wanted", "container", ct.GetName(), "member", m)
			}
			cancel()
		}
	}
	// Keep the snapshot each replica is based on (and the new one); the
	// rest are done with.
	keep := map[string]bool{snap: true}
	for _, rep := range held {
		keep[rep.GetSnapshot()] = true
	}
	for _, s := range mine {
		if !keep[s] {
			if err := r.Host.DeleteVolumeSnapshot(ctx, ct, s); err != nil {
				r.log().Warn("prune replication snapshot", "container", ct.GetName(), "snapshot", s, "err", err)
			}
		}
	}
	return firstErr
}

// ErrReplicaPending says a replica is not to be deleted: a heal made this
// member the container's owner, and the replica becomes its volume when
// the owner next reconciles it.
var ErrReplicaPending = errors.New("the replica is to become the volume of the container healed here")

// collect deletes the replicas this member holds of containers the
// cluster no longer has, or that this member now owns (a move brought the
// container here; the owner never holds its own replica), or whose record
// names this member no more (the owner chose another member), the last
// only when two collects in a row found it so: a new replica's record
// follows its stream.
func (r *Replicator) collect(ctx context.Context) {
	names, err := r.Host.Replicas(ctx)
	if err != nil {
		r.log().Warn("list replicas", "err", err)
		return
	}
	const (
		keep = iota + 1
		unrecorded
	)
	known := map[string]int{}
	for _, ct := range r.View.Containers() {
		switch {
		case ct.GetNode() == r.Self:
		case slices.ContainsFunc(ct.GetReplicas(), func(rep *shoalv1.Replica) bool { return rep.GetMember() == r.Self }):
			known[ct.GetName()] = keep
		default:
			known[ct.GetName()] = unrecorded
		}
	}
	seen := r.unrecorded
	r.unrecorded = map[string]bool{}
	for _, name := range names {
		switch known[name] {
		case keep:
			continue
		case unrecorded:
			if !seen[name] {
				r.unrecorded[name] = true
				continue
			}
		}
		if err := r.Host.DeleteReplica(ctx, name); errors.Is(err, ErrReplicaPending) {
			continue
		} else if err != nil {
			r.log().Warn("delete replica", "container", name, "err", err)
			continue
		}
		r.log().Info("deleted a replica this member no longer needs", "container", name)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
