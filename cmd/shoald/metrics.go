package main

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/membership"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// metricsSource is what the collector reads of this member: its
// containers from the node, the Raft view from the cluster, gossip once it
// has started, running operations from the registry.
type metricsSource struct {
	n      *node.Node
	cl     *cluster.Cluster
	ops    *operations.Registry
	gossip atomic.Pointer[membership.Membership]
}

func (m *metricsSource) Containers(ctx context.Context) ([]metrics.Container, error) {
	return m.n.MetricsContainers(ctx)
}

func (m *metricsSource) Member(context.Context) metrics.Member {
	out := metrics.Member{Leader: m.cl.IsLeader(), AppliedIndex: m.cl.FSM().Applied(), LastContact: m.cl.QuorumContact(), Raft: m.cl.RaftStats()}
	if g := m.gossip.Load(); g != nil {
		out.Gossip = true
		for _, mb := range g.Members() {
			out.GossipMembers++
			if mb.State == membership.StateAlive {
				out.GossipAlive++
			}
		}
	}
	for _, o := range m.ops.List() {
		if o.GetStatus() == shoalv1.OperationStatus_OPERATION_STATUS_RUNNING {
			out.OperationsRunning++
		}
	}
	return out
}

// metricsRegistry is what /metrics serves: the member's collector, Raft's
// timings, and the Go runtime's and the process's standard metrics.
func metricsRegistry(src metrics.Source, sink *metrics.RaftSink) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(src), sink, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
