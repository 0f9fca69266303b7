package api

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Server implements every Shoal gRPC service.
type Server struct {
	shoalv1.UnimplementedContainerServiceServer
	shoalv1.UnimplementedImageServiceServer
	shoalv1.UnimplementedStorageServiceServer
	shoalv1.UnimplementedNetworkServiceServer
	shoalv1.UnimplementedOperationServiceServer
	shoalv1.UnimplementedEventServiceServer
	shoalv1.UnimplementedClusterServiceServer
	shoalv1.UnimplementedMigrationServiceServer
	shoalv1.UnimplementedProfileServiceServer

	cl    *cluster.Cluster
	fsm   *cluster.FSM
	node  *node.Node
	ops   *operations.Registry
	bus   *operations.Bus
	log   *slog.Logger
	peers *peers
	// source runs every transfer that starts here (moves, copies,
	// refreshes, evacuations); target takes the ones that arrive.
	source *migration.Source
	target *migration.Target
	// strategy is how the scheduler scores nodes (cluster.scheduler).
	strategy scheduler.Strategy
	// calls are the open calls of certificate holders (auth.go).
	calls calls
}

var (
	_ shoalv1.ContainerServiceServer = (*Server)(nil)
	_ shoalv1.ImageServiceServer     = (*Server)(nil)
	_ shoalv1.StorageServiceServer   = (*Server)(nil)
	_ shoalv1.NetworkServiceServer   = (*Server)(nil)
	_ shoalv1.OperationServiceServer = (*Server)(nil)
	_ shoalv1.EventServiceServer     = (*Server)(nil)
	_ shoalv1.ClusterServiceServer   = (*Server)(nil)
	_ shoalv1.ProfileServiceServer   = (*Server)(nil)
)

// NewServer returns the API over a cluster member and its node; peers (may
// be nil) reach the other members.
func NewServer(cl *cluster.Cluster, n *node.Node, p *Peers, ops *operations.Registry, bus *operations.Bus, log *slog.Logger) *Server {
	s := &Server{cl: cl, fsm: cl.FSM(), node: n, peers: p, ops: ops, bus: bus, log: log.With("component", "api")}
	s.source, s.target = migration.NewSource(s.engineDeps()), migration.NewTarget(s.engineDeps())
	return s
}

// SetStrategy sets the scheduler's strategy for new placements.
func (s *Server) SetStrategy(st scheduler.Strategy) { s.strategy = st }

// Register registers every service on a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	shoalv1.RegisterContainerServiceServer(g, s)
	shoalv1.RegisterImageServiceServer(g, s)
	shoalv1.RegisterStorageServiceServer(g, s)
	shoalv1.RegisterNetworkServiceServer(g, s)
	shoalv1.RegisterOperationServiceServer(g, s)
	shoalv1.RegisterEventServiceServer(g, s)
	shoalv1.RegisterClusterServiceServer(g, s)
	shoalv1.RegisterMigrationServiceServer(g, s)
	shoalv1.RegisterProfileServiceServer(g, s)
}

// propose writes a command through Raft and converts its verdict.
func (s *Server) propose(ctx context.Context, m proto.Message) error {
	return toStatus(s.cl.Propose(ctx, m))
}

func now() int64 { return time.Now().UnixNano() }
