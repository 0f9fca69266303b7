package api

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster/pki"
)

// Callers of the TLS listener are authenticated by their certificate; the
// unix socket is the root-only admin path and needs none.

// open are the methods a caller without a certificate may use.
var open = map[string]bool{
	"/shoal.v1.ClusterService/Join": true,
}

// nodeOnly are the methods only other members (node certificates) may use.
var nodeOnly = map[string]bool{
	"/shoal.v1.ClusterService/Apply":              true,
	"/shoal.v1.ClusterService/ReadIndex":          true,
	"/shoal.v1.MigrationService/ReceiveVolume":    true,
	"/shoal.v1.MigrationService/RestoreContainer": true,
}

func authorize(ctx context.Context, method string) error {
	if open[method] || strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return status.Error(codes.Unauthenticated, "a client certificate of this cluster is required")
	}
	role, name, err := pki.Authenticate(ti.State)
	if err != nil {
		return status.Error(codes.Unauthenticated, "a client certificate of this cluster is required: use `shoal remote add` with a join token")
	}
	if nodeOnly[method] && role != pki.RoleNode {
		return status.Errorf(codes.PermissionDenied, "%s %q may not call %s", role, name, method)
	}
	return nil
}

func authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
