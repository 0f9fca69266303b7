package cluster

import (
	"context"
	"sort"
	"strconv"
	"time"
)

// RunAutopilot keeps up to cluster.max_voters voters (defaultVoters when
// unset): while this member leads, it
// promotes standbys that are recorded as online and answer healthy(name),
// lowest name first. New members join as standbys (so that adding one never
// costs the cluster its quorum); a voter that is removed is replaced by a
// standby the same way. It returns when ctx ends.
func (c *Cluster) RunAutopilot(ctx context.Context, defaultVoters int, every time.Duration, healthy func(ctx context.Context, name string) bool) {
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
		maxVoters := defaultVoters
		if v, err := strconv.Atoi(c.fsm.ClusterConfig()["cluster.max_voters"]); err == nil && v > 0 {
			maxVoters = v
		}
		servers, err := c.Servers()
		if err != nil {
			continue
		}
		voters := 0
		var standbys []Server
		for _, s := range servers {
			if s.Voter {
				voters++
			} else {
				standbys = append(standbys, s)
			}
		}
		sort.Slice(standbys, func(i, j int) bool { return standbys[i].Name < standbys[j].Name })
		for _, s := range standbys {
			if voters >= maxVoters {
				break
			}
			n, err := c.fsm.Node(s.Name)
			if err != nil || n.GetStatus() == "offline" {
				continue
			}
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok := healthy(hctx, s.Name)
			cancel()
			if !ok {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = c.AddMember(actx, s.Name, s.Address, true)
			cancel()
			if err != nil {
				c.log.Warn("promote standby", "node", s.Name, "err", err)
				continue
			}
			c.log.Info("promoted standby to voter", "node", s.Name)
			voters++
		}
	}
}
