package cluster

import (
	"context"
	"time"

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
// the gossip view, so a new leader picks up where the old one stopped.
func (c *Cluster) RunLiveness(ctx context.Context, members func() []membership.Member, grace, every time.Duration) {
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
