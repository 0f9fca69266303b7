package api

import (
	"context"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// The move engine (migration.Source and Target) runs every transfer; what
// follows only wires it to this member's node, Raft and peer connections.

// engineDeps is what the move engine is built from on this member.
func (s *Server) engineDeps() migration.Deps {
	deps := migration.Deps{Host: engineHost{s.node}, Cluster: engineCluster{s.cl}, Events: s.bus, Log: s.log}
	if s.peers != nil {
		deps.Peers = enginePeers{s}
	}
	return deps
}

// engineHost is the node as the engine's Host (the runtime's lazy-page
// handles as the engine's interfaces).
type engineHost struct{ *node.Node }

func (h engineHost) VolumeName(name string) string { return node.VolumeName(name) }

func (h engineHost) CustomVolumeName(name string) string { return node.CustomVolumeName(name) }

func (h engineHost) MemoryBytes(ctx context.Context, ct *shoalv1.Container) int64 {
	return h.State(ctx, ct, false).GetMemoryBytes()
}

func (h engineHost) StartLazyCheckpoint(ctx context.Context, name, dir, addr string, port int) (migration.PageServer, *shoalv1.PageServerKeys, error) {
	d, keys, err := h.Node.StartLazyCheckpoint(ctx, name, dir, addr, port)
	if err != nil {
		return nil, nil, err
	}
	return d, keys, nil
}

func (h engineHost) StartLazyPages(ctx context.Context, dir, addr string, port int, keys *shoalv1.PageServerKeys) (migration.LazyPages, error) {
	l, err := h.Node.StartLazyPages(ctx, dir, addr, port, keys)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// engineCluster is Raft and this member's view of it.
type engineCluster struct{ *cluster.Cluster }

func (c engineCluster) Container(name string) (*shoalv1.Container, error) {
	return c.FSM().Container(name)
}

func (c engineCluster) Volume(pool, name string) (*shoalv1.StorageVolume, error) {
	return c.FSM().Volume(pool, name)
}

// Member and Containers serve evacuations.
func (c engineCluster) Member(name string) (*shoalv1.Node, error) { return c.FSM().Node(name) }

func (c engineCluster) Containers() []*shoalv1.Container { return c.FSM().Containers() }

// enginePeers opens transfer streams over the member connections, marked
// as coming from this member.
type enginePeers struct{ s *Server }

func (p enginePeers) RestoreContainer(ctx context.Context, member string) (migration.RestoreClient, error) {
	conn, err := p.s.peers.conn(member)
	if err != nil {
		return nil, err
	}
	return shoalv1.NewMigrationServiceClient(conn).RestoreContainer(p.s.outgoing(ctx))
}

func (p enginePeers) ReceiveVolume(ctx context.Context, member string) (migration.VolumeClient, error) {
	conn, err := p.s.peers.conn(member)
	if err != nil {
		return nil, err
	}
	return shoalv1.NewMigrationServiceClient(conn).ReceiveVolume(p.s.outgoing(ctx))
}

// fleet is how evacuations reach the cluster from this member.
func (s *Server) fleet() migration.Fleet {
	f := migration.Fleet{Members: engineCluster{s.cl}, Move: s.moveAndWait}
	if s.peers != nil {
		f.Place = func(ct *shoalv1.Container) (string, error) { return s.moveTarget(ct, "") }
	}
	return f
}

// Replicate sends an HA container's snapshot to a member as its replica
// (cluster/ha's Sender; migration.Source.Replicate).
func (s *Server) Replicate(ctx context.Context, ct *shoalv1.Container, member, base, snap string) (int64, error) {
	return s.source.Replicate(ctx, ct, member, base, snap)
}
