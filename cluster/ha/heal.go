package ha

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// FenceLease is how long a member may go without a Raft quorum behind it
// before it fences itself: it stops its HA containers, because the
// cluster may restart them elsewhere. The leader heals a member only once
// it is offline, which takes gossip's death verdict (1–4 s after the last
// answer) plus the offline grace (5 s by default): always past the lease.
const FenceLease = 3 * time.Second

// KeyHealingThreshold is the cluster key: how long a member stays offline
// before its HA containers are restarted elsewhere; 0 turns healing off.
const KeyHealingThreshold = "cluster.healing_threshold"

// DefaultHealingThreshold applies when the key is unset.
const DefaultHealingThreshold = 2 * time.Second

// FenceHost is what fencing does on this member (the node).
type FenceHost interface {
	SetFenced(bool)
	Fenced() bool
	// FenceContainer freezes then stops a container.
	FenceContainer(ctx context.Context, name string) error
	// Reconcile brings a container back to its recorded state.
	Reconcile(ctx context.Context, name string) error
}

// Fencer fences this member while it has no quorum behind it for longer
// than FenceLease, and lifts the fence once it has again (the containers
// it still owns start again; those healed elsewhere meanwhile are dropped
// by the reconciler, as their owner moved on).
//
// A member starts fenced (the node's default): its HA containers start
// only once Ready says the leader's state has reached it, so a member that
// comes back never starts a copy the cluster gave to another member.
type Fencer struct {
	Self    string
	Contact func() time.Duration // cluster.QuorumContact
	// Ready returns nil once this member has caught up with the leader
	// (cluster.Sync).
	Ready func(ctx context.Context) error
	View  View
	Host  FenceHost
	Event func(action, resource string)
	Log   *slog.Logger

	announced bool // member-fenced was reported for this cut
}

// Run fences and unfences until ctx ends.
func (f *Fencer) Run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.Check(ctx)
	}
}

// Check does one step: fence, keep fenced HA containers stopped, or lift.
func (f *Fencer) Check(ctx context.Context) {
	cut := f.Contact() > FenceLease
	switch {
	case cut:
		f.Host.SetFenced(true)
		if !f.announced {
			f.announced = true
			f.Log.Warn("fenced: no Raft quorum for longer than the lease; stopping this member's HA containers", "lease", FenceLease, "since", f.Contact().Round(time.Millisecond))
			f.event("member-fenced", f.Self)
		}
		for _, ct := range f.mine() {
			if err := f.Host.FenceContainer(ctx, ct.GetName()); err != nil {
				f.Log.Error("fence a container", "container", ct.GetName(), "err", err)
			}
		}
	case f.Host.Fenced():
		if f.Ready != nil {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := f.Ready(rctx)
			cancel()
			if err != nil {
				return // not caught up yet: stay fenced
			}
		}
		f.announced = false
		f.Host.SetFenced(false)
		f.Log.Info("fence lifted: a Raft quorum is back")
		f.event("member-unfenced", f.Self)
		for _, ct := range f.mine() {
			if err := f.Host.Reconcile(ctx, ct.GetName()); err != nil {
				f.Log.Warn("reconcile after the fence", "container", ct.GetName(), "err", err)
			}
		}
	}
}

func (f *Fencer) mine() []*shoalv1.Container {
	var out []*shoalv1.Container
	for _, ct := range f.View.Containers() {
		if ct.GetNode() == f.Self && PolicyOf(cluster.ExpandedConfig(ct)).Enabled {
			out = append(out, ct)
		}
	}
	return out
}

func (f *Fencer) event(action, resource string) {
	if f.Event != nil {
		f.Event(action, resource)
	}
}

// ConfigView adds the cluster-wide keys, and the scheduler's verdict, to
// View.
type ConfigView interface {
	View
	ClusterConfig() map[string]string
	// Fits says why ct could not run on member beside what the member
	// already runs (its CPU and memory reservations, constraints, the keys
	// its host cannot enforce), or nil when it can.
	Fits(ct *shoalv1.Container, member string) error
}

// Healer runs on every member and acts while it leads: an HA container
// whose owner has been offline for the healing threshold goes, in one Raft
// entry, to the online member holding its newest replica, which promotes
// the replica and starts it. Containers without HA stay where they are.
type Healer struct {
	IsLeader func() bool
	View     ConfigView
	Propose  func(ctx context.Context, cmd proto.Message) error
	// Event publishes an event with a one-line detail.
	Event func(action, resource, detail string)
	Log   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	since  map[string]time.Time // member → when this leader first saw it offline
	warned map[string]bool      // containers reported as not healable
}

// Threshold is the healing threshold the cluster config sets.
func Threshold(cfg map[string]string) time.Duration {
	d, err := time.ParseDuration(cfg[KeyHealingThreshold])
	if err != nil || d < 0 {
		return DefaultHealingThreshold
	}
	return d
}

// HealTarget is the replica of ct a heal promotes: the newest held by an
// online member where ct fits; when it fits nowhere, the newest held by an
// online member all the same, with why it does not fit there (an HA
// container running beyond a member's reservations beats one that is
// down; the caller says so). nil when no online member holds a replica.
func HealTarget(ct *shoalv1.Container, v ConfigView) (*shoalv1.Replica, error) {
	online := map[string]bool{}
	for _, n := range v.Nodes() {
		online[n.GetName()] = n.GetStatus() == cluster.StatusOnline
	}
	reps := slices.Clone(ct.GetReplicas())
	slices.SortStableFunc(reps, func(a, b *shoalv1.Replica) int { return cmp.Compare(b.GetTakenUnixNano(), a.GetTakenUnixNano()) })
	var newest *shoalv1.Replica
	var why error
	for _, r := range reps {
		if !online[r.GetMember()] {
			continue
		}
		err := v.Fits(ct, r.GetMember())
		if err == nil {
			return r, nil
		}
		if newest == nil {
			newest, why = r, err
		}
	}
	return newest, why
}

// Run heals until ctx ends.
func (h *Healer) Run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.Check(ctx)
	}
}

// Check does one pass.
func (h *Healer) Check(ctx context.Context) {
	if h.since == nil {
		h.since, h.warned = map[string]time.Time{}, map[string]bool{}
	}
	if !h.IsLeader() {
		clear(h.since)
		return
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	nodes := map[string]*shoalv1.Node{}
	for _, n := range h.View.Nodes() {
		nodes[n.GetName()] = n
		if n.GetStatus() != cluster.StatusOffline {
			delete(h.since, n.GetName())
		} else if _, ok := h.since[n.GetName()]; !ok {
			h.since[n.GetName()] = now
		}
	}
	threshold := Threshold(h.View.ClusterConfig())
	if threshold == 0 {
		return
	}
	for _, ct := range h.View.Containers() {
		since, offline := h.since[ct.GetNode()]
		if !offline || now.Sub(since) < threshold || !PolicyOf(cluster.ExpandedConfig(ct)).Enabled {
			continue
		}
		best, beyond := HealTarget(ct, h.View)
		if best == nil {
			if !h.warned[ct.GetName()] {
				h.warned[ct.GetName()] = true
				h.Log.Error("cannot heal: no online member holds a replica", "container", ct.GetName(), "member", ct.GetNode())
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := h.Propose(pctx, &shoalv1.ContainerHealCommand{Name: ct.GetName(), Node: best.GetMember(), From: ct.GetNode()})
		cancel()
		if err != nil {
			h.Log.Warn("heal", "container", ct.GetName(), "to", best.GetMember(), "err", err)
			continue
		}
		asOf := time.Unix(0, best.GetTakenUnixNano())
		// Its member died before it was marked offline: what the copy
		// misses is at most what was written between the snapshot and then.
		lost := since.Sub(asOf).Round(100 * time.Millisecond)
		h.Log.Info("container-healed", "container", ct.GetName(), "from", ct.GetNode(), "to", best.GetMember(),
			"data_as_of", asOf.Format(time.RFC3339Nano), "lost_at_most", lost, "offline_for", now.Sub(since).Round(time.Millisecond))
		detail := fmt.Sprintf("%s -> %s (data as of %s, lost ≤ %s)", ct.GetNode(), best.GetMember(), asOf.Format("15:04:05.000"), lost)
		if beyond != nil {
			h.Log.Warn("healed beyond the member's reservations: no member holding a replica has room", "container", ct.GetName(),
				"to", best.GetMember(), "why", beyond)
			detail += "; beyond its reservations: " + beyond.Error()
		}
		if h.Event != nil {
			h.Event("container-healed", ct.GetName(), detail)
		}
	}
}

// Errors HealMember returns for the caller to branch on.
var (
	// ErrUnknownMember: no member has that name.
	ErrUnknownMember = errors.New("unknown member")
	// ErrNotDead: the cluster does not see the member offline, and the
	// caller did not vouch that it is fenced.
	ErrNotDead = errors.New("member not offline")
)

// HealMember heals a member's HA containers now (shoal cluster heal),
// without waiting for the threshold. A member the cluster does not see
// offline is refused unless fenced is set (the operator vouches that it
// is dead or fenced); then it is first recorded offline. It returns the
// containers healed ("name:member") and those it could not heal
// ("name: why").
func HealMember(ctx context.Context, v ConfigView, propose func(context.Context, proto.Message) error, self, name string, fenced bool) (healed, skipped []string, err error) {
	var node *shoalv1.Node
	for _, n := range v.Nodes() {
		if n.GetName() == name {
			node = proto.Clone(n).(*shoalv1.Node)
		}
	}
	if node == nil {
		return nil, nil, fmt.Errorf("member %q: %w", name, ErrUnknownMember)
	}
	if name == self {
		return nil, nil, fmt.Errorf("member %s is the one answering this call: %w", name, ErrNotDead)
	}
	if node.GetStatus() != cluster.StatusOffline {
		if !fenced {
			return nil, nil, fmt.Errorf("member %s is %s, so it may still run its containers; if you know it is dead or fenced, pass --i-know-it-is-fenced: %w", name, node.GetStatus(), ErrNotDead)
		}
		node.Status = cluster.StatusOffline
		if err := propose(ctx, &shoalv1.NodeUpsertCommand{Node: node}); err != nil {
			return nil, nil, fmt.Errorf("record %s offline: %w", name, err)
		}
	}
	for _, ct := range v.Containers() {
		if ct.GetNode() != name || !PolicyOf(cluster.ExpandedConfig(ct)).Enabled {
			continue
		}
		best, beyond := HealTarget(ct, v)
		if best == nil {
			skipped = append(skipped, ct.GetName()+": no online member holds a replica")
			continue
		}
		if err := propose(ctx, &shoalv1.ContainerHealCommand{Name: ct.GetName(), Node: best.GetMember(), From: name}); err != nil {
			skipped = append(skipped, ct.GetName()+": "+err.Error())
			continue
		}
		h := ct.GetName() + ":" + best.GetMember()
		if beyond != nil {
			h += " (beyond its reservations: " + beyond.Error() + ")"
		}
		healed = append(healed, h)
	}
	return healed, skipped, nil
}
