package node

import (
	"context"
	"sync"

	"github.com/shoal-dev/shoal/node/metrics"
)

// MetricsContainers lists the containers this member owns with their init
// pids (0 for those not running), for the metrics collector: one LXC
// round trip per container, eight at a time, nothing else read.
func (n *Node) MetricsContainers(ctx context.Context) ([]metrics.Container, error) {
	var out []metrics.Container
	for _, ct := range n.fsm.Containers() {
		if ct.GetNode() == n.cfg.Name {
			out = append(out, metrics.Container{Name: ct.GetName()})
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Not defined here yet (being created) or gone: not running.
			out[i].PID, _ = n.rt.InitPid(ctx, out[i].Name)
		}()
	}
	wg.Wait()
	return out, nil
}
