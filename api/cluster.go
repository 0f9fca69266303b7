package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// defaultTokenTTL is how long a join token stays valid unless asked.
const defaultTokenTTL = time.Hour

// CreateJoinToken issues a one-time join token naming the members a joiner
// can reach; only its secret's hash is replicated.
func (s *Server) CreateJoinToken(ctx context.Context, req *shoalv1.CreateJoinTokenRequest) (*shoalv1.CreateJoinTokenResponse, error) {
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	role := pki.Role(req.GetRole())
	if role == "" {
		role = pki.RoleNode
	}
	if !role.Valid() {
		return nil, invalid("role", fmt.Sprintf("%q is not a role (allowed: node, client)", req.GetRole()))
	}
	if req.GetTtlSeconds() < 0 {
		return nil, invalid("ttl", "must not be negative")
	}
	if req.GetCertValiditySeconds() < 0 {
		return nil, invalid("cert_validity", "must not be negative")
	}
	if g := req.GetGrant(); g != nil {
		if role != pki.RoleClient {
			return nil, invalid("grant", "only client certificates can be restricted")
		}
		for _, p := range g.GetContainerPrefixes() {
			if p == "" || strings.ContainsAny(p, " /\x00") {
				return nil, invalid("grant", fmt.Sprintf("container prefix %q: want a non-empty name start without spaces or slashes", p))
			}
		}
	}
	if role == pki.RoleNode {
		if _, err := s.fsm.Node(req.GetName()); err == nil {
			return nil, status.Errorf(codes.AlreadyExists, "name: node %q is already a member", req.GetName())
		}
	}
	ca, err := s.clusterCA()
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, n := range s.fsm.Nodes() {
		if n.GetAddress() != "" && n.GetStatus() != "offline" {
			addrs = append(addrs, n.GetAddress())
		}
	}
	if len(addrs) == 0 {
		return nil, precondition("no member has a network address: start shoald with --listen HOST:PORT")
	}
	ttl := defaultTokenTTL
	if req.GetTtlSeconds() > 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	tok, err := pki.NewToken(req.GetName(), ca, addrs, ttl, time.Now())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.propose(ctx, &shoalv1.TokenAddCommand{Name: tok.Name, SecretHash: pki.HashSecret(tok.Secret),
		ExpiresUnix: tok.Expires.Unix(), Role: string(role), Grant: req.GetGrant(), CertValiditySeconds: req.GetCertValiditySeconds()}); err != nil {
		return nil, err
	}
	return &shoalv1.CreateJoinTokenResponse{Token: tok.Encode(), ExpiresUnix: tok.Expires.Unix()}, nil
}

// clusterCA returns the replicated cluster CA.
func (s *Server) clusterCA() (*pki.CA, error) {
	id := s.fsm.Identity()
	if id == nil {
		return nil, status.Error(codes.FailedPrecondition, "the cluster has no identity yet")
	}
	ca, err := pki.ParseCA(id.GetCaCertPem(), id.GetCaKeyPem())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "cluster CA: %v", err)
	}
	return ca, nil
}

// Join redeems a token and signs the joiner's CSR. It runs on the leader
// (a follower forwards it), because adding a Raft member needs the leader.
func (s *Server) Join(ctx context.Context, req *shoalv1.JoinRequest) (*shoalv1.JoinResponse, error) {
	if !s.cl.IsLeader() {
		c, err := s.leaderConn()
		if err != nil {
			return nil, err
		}
		return shoalv1.NewClusterServiceClient(c).Join(ctx, req)
	}
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	pending := s.fsm.Token(req.GetName())
	role := pki.Role(pending.GetRole())
	if role == pki.RoleNode {
		for field, addr := range map[string]string{"address": req.GetAddress(), "raft_address": req.GetRaftAddress()} {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return nil, invalid(field, fmt.Sprintf("%q is not host:port", addr))
			}
		}
	}
	ca, err := s.clusterCA()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// Consume the token first: two joiners racing with one token cannot both
	// get a certificate.
	if err := s.cl.Propose(ctx, &shoalv1.TokenRedeemCommand{Name: req.GetName(), SecretHash: pki.HashSecret(req.GetSecret()), NowUnix: now.Unix()}); err != nil {
		if errors.Is(err, cluster.ErrTokenInvalid) {
			return nil, status.Errorf(codes.Unauthenticated, "join token for %q is unknown, already used or expired", req.GetName())
		}
		return nil, toStatus(err)
	}
	validity := pki.DefaultValidity
	if v := pending.GetCertValiditySeconds(); v > 0 {
		validity = time.Duration(v) * time.Second
	}
	certPEM, err := ca.SignFor(pki.PendingToken{Name: req.GetName(), Role: role}, req.GetCsrPem(), now, validity)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	// The certificate is good only once the trust store holds it.
	if err := s.trustIssued(ctx, certPEM, pending.GetGrant(), "", now); err != nil {
		return nil, err
	}
	id := s.fsm.Identity()
	resp := &shoalv1.JoinResponse{CertPem: certPEM, CaCertPem: id.GetCaCertPem(), ClusterName: id.GetName()}
	if role != pki.RoleNode {
		return resp, nil
	}
	node := &shoalv1.Node{Name: req.GetName(), Address: req.GetAddress(), RaftAddress: req.GetRaftAddress(),
		GossipAddress: req.GetGossipAddress(), CpuMillis: req.GetCpuMillis(), MemoryBytes: req.GetMemoryBytes(),
		Labels: req.GetLabels(), Status: "online"}
	if err := s.propose(ctx, &shoalv1.NodeUpsertCommand{Node: node}); err != nil {
		return nil, err
	}
	// A standby first: it commits with the current quorum even before the
	// joiner's Raft is up; the autopilot promotes it once it answers.
	if err := s.cl.AddMember(ctx, req.GetName(), req.GetRaftAddress(), false); err != nil {
		return nil, toStatus(err)
	}
	for _, n := range s.fsm.Nodes() {
		if n.GetGossipAddress() != "" && n.GetName() != req.GetName() {
			resp.GossipAddresses = append(resp.GossipAddresses, n.GetGossipAddress())
		}
	}
	resp.GossipKey = id.GetGossipKey()
	s.bus.Lifecycle(s.node.Name(), "cluster-member-added", req.GetName())
	return resp, nil
}

// ListMembers lists members with their Raft role and placement figures.
func (s *Server) ListMembers(ctx context.Context, _ *shoalv1.ListMembersRequest) (*shoalv1.ListMembersResponse, error) {
	s.catchUp(ctx)
	servers, err := s.cl.Servers()
	if err != nil {
		return nil, toStatus(err)
	}
	roles := map[string]string{}
	leader, _ := s.cl.Leader()
	for _, sv := range servers {
		switch {
		case sv.Name == leader:
			roles[sv.Name] = "leader"
		case sv.Voter:
			roles[sv.Name] = "voter"
		default:
			roles[sv.Name] = "standby"
		}
	}
	counts := map[string]int32{}
	for _, ct := range s.fsm.Containers() {
		counts[ct.GetNode()]++
	}
	var out []*shoalv1.Member
	for _, n := range s.fsm.Nodes() {
		role := roles[n.GetName()]
		if role == "" {
			role = "none"
		}
		out = append(out, &shoalv1.Member{Name: n.GetName(), Address: n.GetAddress(), Role: role, Status: n.GetStatus(),
			CpuMillis: n.GetCpuMillis(), MemoryBytes: n.GetMemoryBytes(), Containers: counts[n.GetName()], Labels: n.GetLabels()})
	}
	return &shoalv1.ListMembersResponse{Members: out}, nil
}

// RemoveMember removes a member from Raft and the cluster's records. It
// runs on the leader; a follower forwards the whole request.
func (s *Server) RemoveMember(ctx context.Context, req *shoalv1.RemoveMemberRequest) (*shoalv1.RemoveMemberResponse, error) {
	if _, err := s.fsm.Node(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if !s.cl.IsLeader() {
		c, err := s.leaderConn()
		if err != nil {
			return nil, err
		}
		return shoalv1.NewClusterServiceClient(c).RemoveMember(ctx, req)
	}
	if req.GetName() == s.node.Name() && !req.GetForce() {
		return nil, precondition("a node cannot remove itself; run this on another member (or use force)")
	}
	var owned int
	for _, ct := range s.fsm.Containers() {
		if ct.GetNode() == req.GetName() {
			owned++
		}
	}
	if owned > 0 && !req.GetForce() {
		return nil, precondition(fmt.Sprintf("node %q owns %d containers: evacuate it first or use force", req.GetName(), owned))
	}
	if err := s.cl.RemoveMember(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.propose(ctx, &shoalv1.NodeRemoveCommand{Name: req.GetName()}); err != nil {
		return nil, err
	}
	// Its certificates go too: a removed member cannot come back with them.
	if fps := certsOf(s.fsm.TrustEntries(), req.GetName(), pki.RoleNode); len(fps) > 0 {
		if err := s.propose(ctx, &shoalv1.TrustRevokeCommand{Fingerprints: fps, NowUnix: time.Now().Unix()}); err != nil {
			return nil, err
		}
	}
	s.bus.Lifecycle(s.node.Name(), "cluster-member-removed", req.GetName())
	return &shoalv1.RemoveMemberResponse{}, nil
}

// leaderConn returns a connection to the current leader.
func (s *Server) leaderConn() (*grpc.ClientConn, error) {
	leader, _ := s.cl.Leader()
	if leader == "" || s.peers == nil {
		return nil, status.Error(codes.Unavailable, "no cluster leader is known; retry")
	}
	c, err := s.peers.conn(leader)
	if err != nil {
		return nil, toStatus(err)
	}
	return c, nil
}

// ReadIndex serves a member's linearizable read.
func (s *Server) ReadIndex(ctx context.Context, _ *shoalv1.ReadIndexRequest) (*shoalv1.ReadIndexResponse, error) {
	idx, err := s.cl.LeaderReadIndex()
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.ReadIndexResponse{Index: idx}, nil
}

// Apply applies a command forwarded by another member.
func (s *Server) Apply(ctx context.Context, req *shoalv1.ApplyRequest) (*shoalv1.ApplyResponse, error) {
	idx, err := s.cl.ApplyForwarded(ctx, req.GetCommand())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.ApplyResponse{Index: idx}, nil
}

// clusterKeys are the cluster-wide config keys and their allowed values.
var clusterKeys = map[string][]string{
	"cluster.scheduler":  {"spread", "binpack"},
	"cluster.max_voters": {"3", "5"},
	cluster.ShutdownKey:  {cluster.ShutdownStay, cluster.ShutdownEvacuate},
}

// knownClusterKeys names every cluster key, for errors.
const knownClusterKeys = "cluster.scheduler, cluster.max_voters, cluster.default_network, cluster.healing_threshold, cluster.shutdown, images.auto_update_interval"

// UpdateClusterConfig sets and unsets cluster-wide keys.
func (s *Server) UpdateClusterConfig(ctx context.Context, req *shoalv1.UpdateClusterConfigRequest) (*shoalv1.UpdateClusterConfigResponse, error) {
	set := map[string]string{}
	for k, v := range req.GetSet() {
		if k == cluster.DefaultNetworkKey {
			if _, err := s.fsm.Network(v); err != nil {
				return nil, invalid(k, fmt.Sprintf("%q is not a network (shoal network list)", v))
			}
			set[k] = v
			continue
		}
		if k == AutoUpdateKey {
			if _, err := parseAutoUpdate(v); err != nil {
				return nil, invalid(k, err.Error())
			}
			set[k] = v
			continue
		}
		if k == ha.KeyHealingThreshold {
			if d, err := time.ParseDuration(v); err != nil || d < 0 || d > time.Hour {
				return nil, invalid(k, fmt.Sprintf("%q is not a duration from 0 (healing off) to 1h", v))
			}
			set[k] = v
			continue
		}
		allowed, ok := clusterKeys[k]
		if !ok {
			return nil, invalid(k, "unknown cluster key (known: "+knownClusterKeys+")")
		}
		if !slices.Contains(allowed, v) {
			return nil, invalid(k, fmt.Sprintf("%q is not allowed (allowed: %s)", v, strings.Join(allowed, ", ")))
		}
		set[k] = v
	}
	for _, k := range req.GetUnset() {
		if _, ok := clusterKeys[k]; !ok && k != cluster.DefaultNetworkKey && k != ha.KeyHealingThreshold && k != AutoUpdateKey {
			return nil, invalid(k, "unknown cluster key (known: "+knownClusterKeys+")")
		}
		set[k] = ""
	}
	if err := s.propose(ctx, &shoalv1.ClusterConfigCommand{Set: set}); err != nil {
		return nil, err
	}
	return &shoalv1.UpdateClusterConfigResponse{Config: s.fsm.ClusterConfig()}, nil
}

// GetClusterConfig returns the cluster-wide keys.
func (s *Server) GetClusterConfig(ctx context.Context, _ *shoalv1.GetClusterConfigRequest) (*shoalv1.GetClusterConfigResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	return &shoalv1.GetClusterConfigResponse{Config: s.fsm.ClusterConfig()}, nil
}

// currentStrategy is cluster.scheduler, or the daemon's default.
func (s *Server) currentStrategy() scheduler.Strategy {
	if v := s.fsm.ClusterConfig()["cluster.scheduler"]; v != "" {
		if st, err := scheduler.ParseStrategy(v); err == nil {
			return st
		}
	}
	return s.strategy
}
