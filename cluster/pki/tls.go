package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// ServerTLS returns a TLS 1.3 server configuration presenting cert and
// trusting client certificates issued by the CA in caPool.
//
// requireClientCert=false is for the gRPC API listener: a client certificate
// is verified if one is given, but a client without one completes the
// handshake with no verified chain, so the API can answer
// codes.Unauthenticated through Authenticate, and the Join RPC can serve a
// joiner that has only its token. A Go client holding only another
// cluster's certificate does not offer it (its issuer is not among the
// server's acceptable CAs, and CA subjects are unique), so it too gets
// Unauthenticated; a client that forces an untrusted certificate on the
// server fails the handshake instead.
//
// requireClientCert=true is for node-only listeners (the Raft transport,
// migration streams): the handshake fails unless the client presents a
// certificate issued by the CA with role node.
//
// In both modes a presented certificate must carry a valid Shoal role.
func ServerTLS(caPool *x509.CertPool, cert tls.Certificate, requireClientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    caPool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			if requireClientCert {
				return fmt.Errorf("pki: server: no verified client certificate: %w", ErrUnauthenticated)
			}
			return nil
		}
		role, name, err := RoleOf(cs.VerifiedChains[0][0])
		if err != nil {
			return fmt.Errorf("pki: server: client certificate: %w", err)
		}
		if requireClientCert && role != RoleNode {
			return fmt.Errorf("pki: server: %s %q may not use a node-only listener: %w", role, name, ErrUnauthenticated)
		}
		return nil
	}
	return cfg
}

// ClientTLS returns a TLS 1.3 client configuration that trusts servers
// issued by the CA in caPool, checks serverName against the server's DNS or
// IP names, requires the server certificate to have role node, and presents
// cert if it is not nil.
func ClientTLS(caPool *x509.CertPool, cert *tls.Certificate, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    caPool,
		ServerName: serverName,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return fmt.Errorf("pki: client: server has no verified certificate: %w", ErrBadCertificate)
		}
		role, name, err := RoleOf(cs.VerifiedChains[0][0])
		if err != nil {
			return fmt.Errorf("pki: client: server certificate: %w", err)
		}
		if role != RoleNode {
			return fmt.Errorf("pki: client: server %q has role %s, want node: %w", name, role, ErrBadCertificate)
		}
		return nil
	}
	return cfg
}

// PinnedTLS returns a TLS 1.3 client configuration for a joiner, which has a
// token but no CA yet. Go's own chain verification is switched off
// (InsecureSkipVerify) and replaced by VerifyConnection, which runs on every
// connection, resumed ones included, and accepts the server only if all of
// these hold:
//
//  1. the fingerprint is well formed ("sha256:" + 64 hex digits, any case);
//  2. among the certificates the server sent after its leaf there is one
//     whose SHA-256 DER fingerprint equals the pin (else the error wraps
//     ErrFingerprintMismatch), and it is a CA certificate;
//  3. the leaf is not a CA and verifies against that CA alone (signature,
//     validity at the config's Time, or now, and ExtKeyUsage serverAuth);
//  4. the leaf carries role node (RoleOf).
//
// The server name is not checked: the pin already names the cluster, and any
// node of it may answer at any address. The caller reads the CA afterwards
// with CAFromChain(conn.ConnectionState().PeerCertificates, fingerprint).
func PinnedTLS(fingerprint string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pinned check below
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		now := time.Now()
		if cfg.Time != nil {
			now = cfg.Time()
		}
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("pki: pinned: server sent no certificate: %w", ErrFingerprintMismatch)
		}
		ca, err := CAFromChain(cs.PeerCertificates, fingerprint)
		if err != nil {
			return fmt.Errorf("pki: pinned: %w", err)
		}
		leaf := cs.PeerCertificates[0]
		if err := verifyLeaf(leaf, ca, now, x509.ExtKeyUsageServerAuth); err != nil {
			return fmt.Errorf("pki: pinned: server certificate: %w", err)
		}
		role, name, err := RoleOf(leaf)
		if err != nil {
			return fmt.Errorf("pki: pinned: server certificate: %w", err)
		}
		if role != RoleNode {
			return fmt.Errorf("pki: pinned: server %q has role %s, want node: %w", name, role, ErrBadCertificate)
		}
		return nil
	}
	return cfg
}

// CAFromChain returns the CA certificate in chain[1:] whose fingerprint
// equals the pinned one. The leaf, chain[0], is never taken as the CA.
func CAFromChain(chain []*x509.Certificate, fingerprint string) (*x509.Certificate, error) {
	pin, err := normalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	var seen []string
	for i, c := range chain {
		if i == 0 {
			continue
		}
		fp := FingerprintOf(c)
		if fp != pin {
			seen = append(seen, fp)
			continue
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %s is not a CA: %w", fp, ErrFingerprintMismatch)
		}
		return c, nil
	}
	return nil, fmt.Errorf("server chain has no CA %s (it has [%s]): %w", pin, strings.Join(seen, " "), ErrFingerprintMismatch)
}

// Authenticate reads the verified peer of a TLS connection on a server
// configured by ServerTLS. It returns ErrUnauthenticated (wrapped) when the
// peer presented no certificate or one without a valid role; the API edge
// maps that to codes.Unauthenticated. With gRPC:
//
//	p, _ := peer.FromContext(ctx)
//	ti, _ := p.AuthInfo.(credentials.TLSInfo)
//	role, name, err := pki.Authenticate(ti.State)
func Authenticate(cs tls.ConnectionState) (Role, string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", fmt.Errorf("pki: peer presented no trusted certificate: %w", ErrUnauthenticated)
	}
	role, name, err := RoleOf(cs.VerifiedChains[0][0])
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return role, name, nil
}

func normalizeFingerprint(fp string) (string, error) {
	const prefix = "sha256:"
	fp = strings.ToLower(strings.TrimSpace(fp))
	hexPart, ok := strings.CutPrefix(fp, prefix)
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", fmt.Errorf("fingerprint %q is not sha256:<64 hex digits>: %w", fp, ErrFingerprintMismatch)
	}
	return fp, nil
}
