package cluster

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Files of a member's identity under its pki directory.
const (
	nodeKeyPair = "node"
	gossipFile  = "gossip.key"
)

// Credentials are this member's TLS identity in the cluster: its node
// certificate and the cluster CA it trusts.
type Credentials struct {
	Cert      tls.Certificate
	CACert    *x509.Certificate
	Pool      *x509.CertPool
	GossipKey []byte
}

// RaftTLS returns the Raft transport's configs: peers must present node
// certificates of this cluster.
func (c *Credentials) RaftTLS() (server, client *tls.Config) {
	return pki.ServerTLS(c.Pool, c.Cert, true), pki.ClientTLS(c.Pool, &c.Cert, "")
}

// ServerTLS is the gRPC listener's config: client certificates are verified
// when given; calls without one are refused by the API (Unauthenticated),
// except the token-authenticated Join.
func (c *Credentials) ServerTLS() *tls.Config { return pki.ServerTLS(c.Pool, c.Cert, false) }

// ClientTLS is the config for dialling another member's gRPC listener.
func (c *Credentials) ClientTLS() *tls.Config { return pki.ClientTLS(c.Pool, &c.Cert, "") }

// HasCredentials reports whether dir holds a member identity.
func HasCredentials(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, nodeKeyPair+".crt"))
	return err == nil
}

// LoadCredentials loads a member identity from dir.
func LoadCredentials(dir string) (*Credentials, error) {
	cert, err := pki.LoadKeyPair(dir, nodeKeyPair)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load cluster CA: %w", err)
	}
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return nil, fmt.Errorf("load cluster CA: %s holds no PEM certificate", pki.CACertFile)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load cluster CA: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, gossipFile))
	if err != nil {
		return nil, fmt.Errorf("load gossip key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Credentials{Cert: cert, CACert: ca, Pool: pool, GossipKey: key}, nil
}

// PrepareBootstrap creates, under dir, the identity of the first member of
// a new cluster: the CA (with its key), a gossip key and this member's node
// certificate for the given addresses. Existing files are kept.
func PrepareBootstrap(dir, clusterName, nodeName string, ips []net.IP, now time.Time) (*Credentials, error) {
	if HasCredentials(dir) {
		return LoadCredentials(dir)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		if ca, err = pki.NewCA(clusterName, now); err != nil {
			return nil, err
		}
		if err := ca.Save(dir); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, gossipFile)); errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, gossipFile), key, 0o600); err != nil {
			return nil, fmt.Errorf("save gossip key: %w", err)
		}
	}
	if err := issueNodeCert(dir, ca, nodeName, ips, now); err != nil {
		return nil, err
	}
	return LoadCredentials(dir)
}

func issueNodeCert(dir string, ca *pki.CA, name string, ips []net.IP, now time.Time) error {
	key, csr, err := pki.NewKeyAndCSR(name, pki.RoleNode, []string{name}, ips)
	if err != nil {
		return err
	}
	certPEM, err := ca.Sign(csr, pki.RoleNode, now, pki.DefaultValidity)
	if err != nil {
		return err
	}
	return pki.SaveKeyPair(dir, nodeKeyPair, certPEM, key)
}

// InitIdentity records the bootstrap member's CA and gossip key in the FSM,
// unless the cluster already has an identity.
func (c *Cluster) InitIdentity(ctx context.Context, dir string) error {
	if c.fsm.Identity() != nil {
		return nil
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return fmt.Errorf("record cluster identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		return fmt.Errorf("record cluster identity: %w", err)
	}
	gossip, err := os.ReadFile(filepath.Join(dir, gossipFile))
	if err != nil {
		return fmt.Errorf("record cluster identity: %w", err)
	}
	err = c.Propose(ctx, &shoalv1.ClusterInitCommand{Name: ca.ClusterName(), CaCertPem: ca.PEM, CaKeyPem: keyPEM, GossipKey: gossip})
	// A restarted member may not have replayed the identity yet; the
	// leader's "already exists" is then the answer we wanted.
	if errors.Is(err, ErrExists) || status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}

// SaveJoined stores the identity a member received when it joined.
func SaveJoined(dir string, key crypto.Signer, certPEM, caPEM, gossipKey []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := pki.SaveKeyPair(dir, nodeKeyPair, certPEM, key); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), caPEM, 0o644); err != nil {
		return fmt.Errorf("save cluster CA: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, gossipFile), gossipKey, 0o600); err != nil {
		return fmt.Errorf("save gossip key: %w", err)
	}
	return nil
}
