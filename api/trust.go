package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// The trust store: every certificate the cluster issues is recorded in the
// FSM (a TrustEntry by fingerprint) before the holder gets it; revoking one
// is one Raft entry that every member applies, after which it refuses the
// certificate, on open calls too (auth.go).

// trustIssued records a certificate just signed (certPEM: leaf first).
func (s *Server) trustIssued(ctx context.Context, certPEM []byte, grant *shoalv1.Grant, supersedes string, now time.Time) error {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return status.Error(codes.Internal, "issued certificate: no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return status.Errorf(codes.Internal, "issued certificate: %v", err)
	}
	return s.propose(ctx, &shoalv1.TrustAddCommand{Entry: TrustEntryOf(leaf, grant, supersedes), Supersedes: supersedes, NowUnix: now.Unix()})
}

// TrustEntryOf is the trust store's record of a certificate.
func TrustEntryOf(leaf *x509.Certificate, grant *shoalv1.Grant, renewedFrom string) *shoalv1.TrustEntry {
	role, name, _ := pki.RoleOf(leaf)
	return &shoalv1.TrustEntry{Fingerprint: pki.FingerprintOf(leaf), Name: name, Role: string(role),
		IssuedUnix: leaf.NotBefore.Unix(), ExpiresUnix: leaf.NotAfter.Unix(), Grant: grant, RenewedFrom: renewedFrom}
}

// EnsureTrusted records this member's own certificate in the trust store
// when it is missing (a cluster bootstrapped before the trust store
// existed, or the bootstrap member's first start), retrying until ctx ends.
func (s *Server) EnsureTrusted(ctx context.Context, leaf *x509.Certificate) {
	fp := pki.FingerprintOf(leaf)
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		if s.fsm.Trust(fp) != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.propose(pctx, &shoalv1.TrustAddCommand{Entry: TrustEntryOf(leaf, nil, ""), NowUnix: time.Now().Unix()})
		cancel()
		if err == nil {
			return
		}
		s.log.Warn("recording this member's certificate in the trust store", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// certsOf returns the fingerprints of the unrevoked certificates of a name
// (of one role, or of any when role is "").
func certsOf(entries []*shoalv1.TrustEntry, name string, role pki.Role) []string {
	var out []string
	for _, e := range entries {
		if e.GetName() == name && !e.GetRevoked() && (role == "" || e.GetRole() == string(role)) {
			out = append(out, e.GetFingerprint())
		}
	}
	return out
}

// ListTokens lists the pending join tokens.
func (s *Server) ListTokens(ctx context.Context, _ *shoalv1.ListTokensRequest) (*shoalv1.ListTokensResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	out := &shoalv1.ListTokensResponse{}
	for _, t := range s.fsm.Tokens() {
		out.Tokens = append(out.Tokens, &shoalv1.PendingToken{Name: t.GetName(), Role: t.GetRole(), ExpiresUnix: t.GetExpiresUnix(), Grant: t.GetGrant()})
	}
	return out, nil
}

// RevokeToken drops a pending join token.
func (s *Server) RevokeToken(ctx context.Context, req *shoalv1.RevokeTokenRequest) (*shoalv1.RevokeTokenResponse, error) {
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.propose(ctx, &shoalv1.TokenRevokeCommand{Name: req.GetName()}); err != nil {
		return nil, err
	}
	return &shoalv1.RevokeTokenResponse{}, nil
}

// ListTrust lists the trust store.
func (s *Server) ListTrust(ctx context.Context, _ *shoalv1.ListTrustRequest) (*shoalv1.ListTrustResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	return &shoalv1.ListTrustResponse{Entries: s.fsm.TrustEntries()}, nil
}

// minFingerprintPrefix is how many hex digits name a certificate.
const minFingerprintPrefix = 12

// RevokeTrust revokes the certificates of a name, or one by fingerprint.
// A current member's node certificate is refused: `cluster remove` takes
// the member out and revokes its certificates in one go.
func (s *Server) RevokeTrust(ctx context.Context, req *shoalv1.RevokeTrustRequest) (*shoalv1.RevokeTrustResponse, error) {
	s.catchUp(ctx)
	arg := strings.ToLower(strings.TrimSpace(req.GetNameOrFingerprint()))
	if arg == "" {
		return nil, invalid("name_or_fingerprint", "required: a certificate's name or fingerprint (shoal cluster trust list)")
	}
	hexPart := strings.TrimPrefix(arg, "sha256:")
	byFingerprint := len(hexPart) >= minFingerprintPrefix && strings.Trim(hexPart, "0123456789abcdef") == ""
	var hit []*shoalv1.TrustEntry
	for _, e := range s.fsm.TrustEntries() {
		if e.GetRevoked() {
			continue
		}
		if e.GetName() == req.GetNameOrFingerprint() || byFingerprint && strings.HasPrefix(strings.TrimPrefix(e.GetFingerprint(), "sha256:"), hexPart) {
			hit = append(hit, e)
		}
	}
	if len(hit) == 0 {
		return nil, status.Errorf(codes.NotFound, "no trusted certificate named or with fingerprint %q (shoal cluster trust list)", req.GetNameOrFingerprint())
	}
	names := map[string]bool{}
	var fps []string
	for _, e := range hit {
		names[e.GetName()] = true
		if e.GetRole() == string(pki.RoleNode) {
			if _, err := s.fsm.Node(e.GetName()); err == nil {
				return nil, precondition(fmt.Sprintf("%q is a member of the cluster: remove it with `shoal cluster remove %s`, which revokes its certificate", e.GetName(), e.GetName()))
			}
		}
		fps = append(fps, e.GetFingerprint())
	}
	if byFingerprint && len(names) > 1 {
		return nil, invalid("name_or_fingerprint", fmt.Sprintf("fingerprint prefix %q matches certificates of %d names: give more digits", hexPart, len(names)))
	}
	if err := s.propose(ctx, &shoalv1.TrustRevokeCommand{Fingerprints: fps, NowUnix: time.Now().Unix()}); err != nil {
		return nil, err
	}
	out := &shoalv1.RevokeTrustResponse{}
	for _, fp := range fps {
		out.Revoked = append(out.Revoked, s.fsm.Trust(fp))
	}
	return out, nil
}

// RenewCertificate signs a fresh certificate for the caller's own: same
// name, role and grant, a new validity; the old certificate is revoked in
// the same Raft entry. Only a certificate that is still valid can renew:
// an expired one fails the TLS handshake and needs a new token.
func (s *Server) RenewCertificate(ctx context.Context, req *shoalv1.RenewCertificateRequest) (*shoalv1.RenewCertificateResponse, error) {
	id := callerOf(ctx)
	if id.fingerprint == "" {
		return nil, precondition("only a certificate holder can renew (the local socket needs no certificate)")
	}
	if id.kind != callerClient {
		return nil, precondition(fmt.Sprintf("%s: members renew by joining again", id))
	}
	old := s.fsm.Trust(id.fingerprint)
	ca, err := s.clusterCA()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	validity := time.Duration(old.GetExpiresUnix()-old.GetIssuedUnix()) * time.Second
	if validity <= 0 || validity > pki.DefaultValidity {
		validity = pki.DefaultValidity
	}
	certPEM, err := ca.SignFor(pki.PendingToken{Name: id.name, Role: pki.RoleClient}, req.GetCsrPem(), now, validity)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	if err := s.trustIssued(ctx, certPEM, old.GetGrant(), id.fingerprint, now); err != nil {
		return nil, err
	}
	return &shoalv1.RenewCertificateResponse{CertPem: certPEM, CaCertPem: s.fsm.Identity().GetCaCertPem(), ExpiresUnix: now.Add(validity).Unix()}, nil
}
