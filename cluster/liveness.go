package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster/membership"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
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
	}
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
