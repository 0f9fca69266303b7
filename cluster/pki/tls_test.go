package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// cluster is one CA with a serving node and the certificates that dial it.
type cluster struct {
	ca     *CA
	server tls.Certificate // node1, role node, 127.0.0.1
	node   tls.Certificate // node2, role node
	client tls.Certificate // alice, role client
}

func newCluster(t *testing.T, name string) cluster {
	t.Helper()
	ca := newTestCA(t, name, time.Now())
	return cluster{
		ca:     ca,
		server: issue(t, ca, "node1", RoleNode, loopback),
		node:   issue(t, ca, "node2", RoleNode),
		client: issue(t, ca, "alice", RoleClient),
	}
}

func TestServerRequireClientCert(t *testing.T) {
	c := newCluster(t, "prod")
	foreign := newCluster(t, "other")
	srv := ServerTLS(c.ca.Pool(), c.server, true)

	t.Run("node certificate", func(t *testing.T) {
		r := handshake(t, srv, ClientTLS(c.ca.Pool(), &c.node, "127.0.0.1"))
		wantOK(t, r)
		role, name, err := Authenticate(r.serverState)
		if err != nil || role != RoleNode || name != "node2" {
			t.Fatalf("Authenticate = %q %q %v", role, name, err)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		wantFail(t, handshake(t, srv, ClientTLS(c.ca.Pool(), &foreign.node, "127.0.0.1")))
	})
	t.Run("no certificate", func(t *testing.T) {
		wantFail(t, handshake(t, srv, ClientTLS(c.ca.Pool(), nil, "127.0.0.1")))
	})
	t.Run("client role on a node-only listener", func(t *testing.T) {
		r := handshake(t, srv, ClientTLS(c.ca.Pool(), &c.client, "127.0.0.1"))
		wantFail(t, r)
		wantIs(t, r.serverErr, ErrUnauthenticated)
	})
}

func TestServerOptionalClientCert(t *testing.T) {
	c := newCluster(t, "prod")
	foreign := newCluster(t, "other")
	srv := ServerTLS(c.ca.Pool(), c.server, false)

	t.Run("no certificate: handshake succeeds, peer unauthenticated", func(t *testing.T) {
		r := handshake(t, srv, ClientTLS(c.ca.Pool(), nil, "127.0.0.1"))
		wantOK(t, r)
		if len(r.serverState.VerifiedChains) != 0 {
			t.Fatalf("server sees %d verified chains, want none", len(r.serverState.VerifiedChains))
		}
		_, _, err := Authenticate(r.serverState)
		wantIs(t, err, ErrUnauthenticated)
	})
	t.Run("client certificate", func(t *testing.T) {
		r := handshake(t, srv, ClientTLS(c.ca.Pool(), &c.client, "127.0.0.1"))
		wantOK(t, r)
		role, name, err := Authenticate(r.serverState)
		if err != nil || role != RoleClient || name != "alice" {
			t.Fatalf("Authenticate = %q %q %v", role, name, err)
		}
	})
	t.Run("certificate from another CA: not sent, peer unauthenticated", func(t *testing.T) {
		// A Go client offers only a certificate whose issuer the server
		// lists as acceptable, and CA subjects are unique per cluster.
		r := handshake(t, srv, ClientTLS(c.ca.Pool(), &foreign.client, "127.0.0.1"))
		wantOK(t, r)
		_, _, err := Authenticate(r.serverState)
		wantIs(t, err, ErrUnauthenticated)
	})
	t.Run("certificate from another CA, forced: handshake fails", func(t *testing.T) {
		cli := ClientTLS(c.ca.Pool(), nil, "127.0.0.1")
		cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &foreign.client, nil
		}
		wantFail(t, handshake(t, srv, cli))
	})
	t.Run("joiner with a pinned config", func(t *testing.T) {
		wantOK(t, handshake(t, srv, PinnedTLS(c.ca.Fingerprint())))
	})
}

func TestClientTLSChecksServer(t *testing.T) {
	c := newCluster(t, "prod")
	foreign := newCluster(t, "other")

	t.Run("server name mismatch", func(t *testing.T) {
		r := handshake(t, ServerTLS(c.ca.Pool(), c.server, false), ClientTLS(c.ca.Pool(), &c.client, "node9.example"))
		if r.clientErr == nil {
			t.Fatal("client accepted a server certificate for another name")
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		r := handshake(t, ServerTLS(foreign.ca.Pool(), foreign.server, false), ClientTLS(c.ca.Pool(), &c.client, "127.0.0.1"))
		if r.clientErr == nil {
			t.Fatal("client accepted a server from another CA")
		}
	})
}

func TestClientCertCannotServe(t *testing.T) {
	c := newCluster(t, "prod")
	srv := ServerTLS(c.ca.Pool(), c.client, false)

	r := handshake(t, srv, ClientTLS(c.ca.Pool(), &c.node, "alice"))
	if r.clientErr == nil {
		t.Fatal("ClientTLS accepted a server using a client-role certificate")
	}
	// PinnedTLS checks no name, so the usage is what refuses it.
	r = handshake(t, srv, PinnedTLS(c.ca.Fingerprint()))
	wantIs(t, r.clientErr, ErrBadCertificate)
	var invalid x509.CertificateInvalidError
	if !errors.As(r.clientErr, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Fatalf("client error %v: want x509 IncompatibleUsage", r.clientErr)
	}
}

func TestPinnedTLS(t *testing.T) {
	c := newCluster(t, "prod")
	foreign := newCluster(t, "other")

	t.Run("fingerprint matches", func(t *testing.T) {
		pinned := PinnedTLS(c.ca.Fingerprint())
		r := handshake(t, ServerTLS(c.ca.Pool(), c.server, false), pinned)
		wantOK(t, r)
		got, err := CAFromChain(r.clientState.PeerCertificates, c.ca.Fingerprint())
		if err != nil || !got.Equal(c.ca.Cert) {
			t.Fatalf("CAFromChain: %v", err)
		}
	})
	t.Run("uppercase pin", func(t *testing.T) {
		fp := c.ca.Fingerprint()
		upper := "sha256:" + strings.ToUpper(fp[len("sha256:"):])
		wantOK(t, handshake(t, ServerTLS(c.ca.Pool(), c.server, false), PinnedTLS(upper)))
	})
	t.Run("another CA, otherwise valid", func(t *testing.T) {
		r := handshake(t, ServerTLS(foreign.ca.Pool(), foreign.server, false), PinnedTLS(c.ca.Fingerprint()))
		wantIs(t, r.clientErr, ErrFingerprintMismatch)
	})
	t.Run("pinned CA appended to a foreign leaf", func(t *testing.T) {
		// The attacker knows the public CA certificate and sends it after
		// its own leaf: the fingerprint matches but the leaf must verify.
		forged := foreign.server
		forged.Certificate = [][]byte{foreign.server.Certificate[0], c.ca.Cert.Raw}
		r := handshake(t, ServerTLS(foreign.ca.Pool(), forged, false), PinnedTLS(c.ca.Fingerprint()))
		wantIs(t, r.clientErr, ErrBadCertificate)
	})
	t.Run("self-signed leaf", func(t *testing.T) {
		r := handshake(t, ServerTLS(c.ca.Pool(), selfSigned(t), false), PinnedTLS(c.ca.Fingerprint()))
		wantIs(t, r.clientErr, ErrFingerprintMismatch)
	})
	t.Run("server sends the CA as its leaf", func(t *testing.T) {
		// Only a CA-key holder could do this, but the leaf is never the CA.
		caAsLeaf := tls.Certificate{Certificate: [][]byte{c.ca.Cert.Raw, c.ca.Cert.Raw}, PrivateKey: c.ca.Key}
		r := handshake(t, ServerTLS(c.ca.Pool(), caAsLeaf, false), PinnedTLS(c.ca.Fingerprint()))
		wantIs(t, r.clientErr, ErrBadCertificate)
	})
	t.Run("malformed pin", func(t *testing.T) {
		r := handshake(t, ServerTLS(c.ca.Pool(), c.server, false), PinnedTLS("md5:abcd"))
		wantIs(t, r.clientErr, ErrFingerprintMismatch)
	})
	t.Run("expired leaf at the config's time", func(t *testing.T) {
		pinned := PinnedTLS(c.ca.Fingerprint())
		pinned.Time = func() time.Time { return time.Now().Add(2 * DefaultValidity) }
		r := handshake(t, ServerTLS(c.ca.Pool(), c.server, false), pinned)
		wantIs(t, r.clientErr, ErrBadCertificate)
	})
}

// selfSigned returns a self-signed server certificate for 127.0.0.1 that
// carries a node role URI and valid usages: everything but the right issuer.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serialForTest(t),
		Subject:      pkix.Name{CommonName: "node1"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{loopback},
		URIs:         []*url.URL{RoleNode.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
