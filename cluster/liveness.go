package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster/membership"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Node statuses the FSM records.
const (
	StatusOnline    = "online"
	StatusOffline   = "offline"   // failed: gossip declared it dead past the grace period
	StatusStopped   = "stopped"   // left gossip cleanly (daemon shut down)
	StatusEvacuated = "evacuated" // by an administrator
)

// RunLiveness turns gossip into node status while this member leads: a node
// gossip has declared dead for longer than grace becomes offline, a node
// that left cleanly becomes stopped (never failed), and a node gossip sees
// alive again becomes online. Evacuated nodes keep their status. It polls
// the gossip view, so a new leader picks up where the old one stopped, and
// installs it as the cluster's gossip view (SetGossip).
func (c *Cluster) RunLiveness(ctx context.Context, members func() []membership.Member, grace, every time.Duration) {
	c.SetGossip(members)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.IsLeader() {
			continue
		}
		seen := map[string]membership.Member{}
		for _, m := range members() {
			seen[m.Name] = m
		}
		for _, n := range c.fsm.Nodes() {
			m, ok := seen[n.GetName()]
			if !ok || n.GetName() == c.cfg.NodeName || n.GetStatus() == StatusEvacuated {
				continue
			}
			want := n.GetStatus()
			switch m.State {
			case membership.StateAlive:
				want = StatusOnline
			case membership.StateLeft:
				want = StatusStopped
			case membership.StateDead:
				if time.Since(m.Since) >= grace {
					want = StatusOffline
				}
			}
			if want == n.GetStatus() {
				continue
			}
			n.Status = want
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.Propose(pctx, &shoalv1.NodeUpsertCommand{Node: n})
			cancel()
			if err != nil {
				c.log.Warn("record node status", "node", n.GetName(), "status", want, "err", err)
				continue
			}
			c.log.Info("node status changed", "node", n.GetName(), "status", want)
		}
		c.replaceUnborn(ctx)
	}
}

// replaceUnborn places again, on the leader, every container recorded on
// an offline member that never came up there: the create's own wait does
// that, but the member that ran the wait may have died with the owner.
// Containers attaching custom volumes stay (their volumes are there).
func (c *Cluster) replaceUnborn(ctx context.Context) {
	for _, ct := range c.fsm.Containers() {
		if st := ct.GetStatus(); st != "" && st != "Pulling" {
			continue
		}
		n, err := c.fsm.Node(ct.GetNode())
		if err != nil || n.GetStatus() != StatusOffline || len(VolumeDevices(ct.GetExpandedDevices())) > 0 {
			continue
		}
		to, err := c.placeElsewhere(ct)
		if err != nil {
			c.log.Warn("an unborn container's member is offline, and no other member can take it", "container", ct.GetName(), "member", ct.GetNode(), "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = c.Propose(pctx, &shoalv1.ContainerReplaceCommand{Name: ct.GetName(), From: ct.GetNode(), To: to})
		cancel()
		if err != nil {
			c.log.Warn("place an unborn container again", "container", ct.GetName(), "from", ct.GetNode(), "to", to, "err", err)
			continue
		}
		c.log.Info("container placed again: its member went offline before it came up", "container", ct.GetName(), "from", ct.GetNode(), "to", to)
	}
}

// placeElsewhere picks a live member for a container, as a create would,
// its current placement taken out.
func (c *Cluster) placeElsewhere(ct *shoalv1.Container) (string, error) {
	snap, err := c.PlacementSnapshot()
	if err != nil {
		return "", err
	}
	if err := snap.Remove(ct.GetName()); err != nil && !errors.Is(err, scheduler.ErrUnknownContainer) {
		return "", err
	}
	req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
	if err != nil {
		return "", err
	}
	strat, _ := scheduler.ParseStrategy(c.fsm.ClusterConfig()["cluster.scheduler"])
	to, _, err := scheduler.Place(snap, req, strat)
	return to, err
}

// Sentinel errors of the liveness view.
var (
	// ErrUnreachable means a member that a call must reach is not
	// answering as far as this member can tell (gossip declared it dead,
	// it left, or the cluster marked it offline).
	ErrUnreachable = errors.New("member not answering")
	// ErrPlacementRefused means the leader refused to record a placement
	// on a member it knows is not alive: place again.
	ErrPlacementRefused = errors.New("placement refused")
)

// SetGossip gives the cluster this member's gossip view, which
// Unreachable and the leader's admission of placements consult. Without
// one (a single member with no gossip) every recorded member counts as
// alive unless the FSM says otherwise.
func (c *Cluster) SetGossip(members func() []membership.Member) {
	c.gossip.Store(&members)
}

// Unreachable says why the named member cannot be counted on to answer
// now ("member NAME is " + why reads well), from this member's gossip view (dead or left, at once: no grace
// period) and the FSM's status (offline or stopped); ok is false when
// nothing here says it is gone. This member itself is never unreachable.
func (c *Cluster) Unreachable(name string) (why string, ok bool) {
	if name == c.cfg.NodeName {
		return "", false
	}
	if f := c.gossip.Load(); f != nil {
		for _, m := range (*f)() {
			if m.Name != name {
				continue
			}
			switch m.State {
			case membership.StateDead:
				return fmt.Sprintf("not answering (gossip declared it dead %s ago)", time.Since(m.Since).Round(100*time.Millisecond)), true
			case membership.StateLeft:
				return fmt.Sprintf("shut down (it left gossip %s ago)", time.Since(m.Since).Round(100*time.Millisecond)), true
			}
			break
		}
	}
	if n, err := c.fsm.Node(name); err == nil {
		switch n.GetStatus() {
		case StatusOffline:
			return "offline", true
		case StatusStopped:
			return "stopped", true
		}
	}
	return "", false
}

// admit refuses, on the leader, a command that would place a container on
// a member this leader knows is not alive; the proposer places again.
// Only the leader decides, before the entry exists, so every replica
// applies the same log.
func (c *Cluster) admit(cmd proto.Message) error {
	var name, node string
	switch m := cmd.(type) {
	case *shoalv1.ContainerCreateCommand:
		name, node = m.GetContainer().GetName(), m.GetContainer().GetNode()
	case *shoalv1.ContainerReplaceCommand:
		name, node = m.GetName(), m.GetTo()
	default:
		return nil
	}
	if why, gone := c.Unreachable(node); gone {
		return fmt.Errorf("container %q: not placed on %s: the member is %s: %w", name, node, why, ErrPlacementRefused)
	}
	return nil
}

// PlacementSnapshot is the scheduler's view of the cluster with the
// members this one knows are not answering taken out: gossip sees a death
// in about two seconds, the FSM only after --offline-after, and nothing is
// placed on a member in between. It is a copy the caller may change
// (built from every container); a create only places, with Place.
func (c *Cluster) PlacementSnapshot() (*scheduler.Snapshot, error) {
	snap, err := c.fsm.SchedulerSnapshot()
	if err != nil {
		return nil, err
	}
	for name, why := range c.gossipDown() {
		if err := snap.SetStatus(name, why); err != nil && !errors.Is(err, scheduler.ErrUnknownNode) {
			return nil, err
		}
	}
	return snap, nil
}

// Place picks a member for a new container over the FSM's own view,
// without copying it, the members gossip here declares dead or gone
// rejected with why (the same view as PlacementSnapshot).
func (c *Cluster) Place(req scheduler.Request, strat scheduler.Strategy) (string, scheduler.Explanation, error) {
	return c.fsm.Place(req, strat, c.gossipDown())
}

// gossipDown lists the members the FSM records online that gossip here
// declares dead or left (Unreachable's gossip half, for every member in
// one pass over the gossip view): name → why. Members the FSM records
// offline or stopped are rejected by the scheduler's status filter
// already. It is nil when nobody is down, the common case.
func (c *Cluster) gossipDown() map[string]string {
	f := c.gossip.Load()
	if f == nil {
		return nil
	}
	var down map[string]string
	for _, m := range (*f)() {
		if m.Name == c.cfg.NodeName || (m.State != membership.StateDead && m.State != membership.StateLeft) {
			continue
		}
		if why, gone := c.Unreachable(m.Name); gone {
			if down == nil {
				down = map[string]string{}
			}
			down[m.Name] = why
		}
	}
	return down
}
