package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// JoinParams describe a node joining a cluster with a token.
type JoinParams struct {
	Token string
	Name  string
	// Addresses this node serves gRPC, Raft and gossip on (host:port).
	Address, RaftAddress, GossipAddress string
	CPUMillis, MemoryBytes              int64
	Labels                              map[string]string
	// IPs go into the node certificate (the hosts of the addresses above).
	IPs []net.IP
	// Dir receives the node's key, certificate, the CA and the gossip key.
	Dir string
}

// Join redeems a join token at one of the members it names: it sends a CSR
// (the key never leaves this node), checks that the certificate it gets back
// chains to the CA pinned in the token, and stores the identity in Dir.
func Join(ctx context.Context, p JoinParams) (*Credentials, *shoalv1.JoinResponse, error) {
	tok, err := pki.ParseToken(p.Token)
	if err != nil {
		return nil, nil, err
	}
	if tok.Name != p.Name {
		return nil, nil, fmt.Errorf("join token is for %q, this node is %q (--name)", tok.Name, p.Name)
	}
	if tok.Expired(time.Now()) {
		return nil, nil, fmt.Errorf("join token for %q expired at %s", tok.Name, tok.Expires.Format(time.RFC3339))
	}
	key, csr, err := pki.NewKeyAndCSR(p.Name, pki.RoleNode, []string{p.Name}, p.IPs)
	if err != nil {
		return nil, nil, err
	}
	req := &shoalv1.JoinRequest{
		Name: p.Name, Secret: tok.Secret, CsrPem: csr,
		Address: p.Address, RaftAddress: p.RaftAddress, GossipAddress: p.GossipAddress,
		CpuMillis: p.CPUMillis, MemoryBytes: p.MemoryBytes, Labels: p.Labels,
	}
	var errs []error
	for _, addr := range tok.Addresses {
		resp, err := joinAt(ctx, addr, tok.CAFingerprint, req)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		if _, _, err := pki.VerifyIssued(resp.GetCertPem(), tok.CAFingerprint, time.Now()); err != nil {
			return nil, nil, fmt.Errorf("certificate from %s: %w", addr, err)
		}
		if err := SaveJoined(p.Dir, key, resp.GetCertPem(), resp.GetCaCertPem(), resp.GetGossipKey()); err != nil {
			return nil, nil, err
		}
		creds, err := LoadCredentials(p.Dir)
		return creds, resp, err
	}
	return nil, nil, fmt.Errorf("join: no member accepted the token: %w", errors.Join(errs...))
}

func joinAt(ctx context.Context, addr, fingerprint string, req *shoalv1.JoinRequest) (*shoalv1.JoinResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(fingerprint))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return shoalv1.NewClusterServiceClient(conn).Join(ctx, req)
}
