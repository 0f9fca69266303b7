package pki

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// TestJoinFlow walks the whole join: the bootstrap node issues a token, the
// joiner pins the CA over real TLS, redeems the token with a CSR, verifies
// what it receives, and then dials the node-only listener with it.
func TestJoinFlow(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, "prod", now)
	node1 := issue(t, ca, "node1", RoleNode, loopback)

	// `shoal cluster add node2` on node1.
	tok, err := NewToken("node2", ca, []string{"127.0.0.1:8443"}, 10*time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	pending := []PendingToken{tok.Pending(RoleNode)} // what the FSM replicates
	text := tok.Encode()

	// `shoald --join <text>` on host 2.
	joinTok, err := ParseToken(text)
	if err != nil {
		t.Fatal(err)
	}
	r := handshake(t, ServerTLS(ca.Pool(), node1, false), PinnedTLS(joinTok.CAFingerprint))
	wantOK(t, r)
	if _, _, err := Authenticate(r.serverState); err == nil {
		t.Fatal("the joiner is authenticated before it has a certificate")
	}
	key, csr, err := NewKeyAndCSR(joinTok.Name, RoleNode, nil, []net.IP{loopback})
	if err != nil {
		t.Fatal(err)
	}

	// The Join RPC on node1: redeem, sign, and (in the FSM) delete.
	pt, err := Redeem(pending, joinTok.Name, joinTok.Secret, now)
	if err != nil {
		t.Fatalf("Redeem: %v", err)
	}
	certPEM, err := ca.SignFor(pt, csr, now, DefaultValidity)
	if err != nil {
		t.Fatalf("SignFor: %v", err)
	}
	pending = nil
	if _, err := Redeem(pending, joinTok.Name, joinTok.Secret, now); err == nil {
		t.Fatal("a used token was redeemed again")
	}

	// Back on host 2: check what came back against the pin, then use it.
	_, caCert, err := VerifyIssued(certPEM, joinTok.CAFingerprint, now)
	if err != nil {
		t.Fatalf("VerifyIssued: %v", err)
	}
	node2, err := TLSCertificate(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	r = handshake(t, ServerTLS(ca.Pool(), node1, true), ClientTLS(pool, &node2, "127.0.0.1"))
	wantOK(t, r)
	if role, name, err := Authenticate(r.serverState); err != nil || role != RoleNode || name != "node2" {
		t.Fatalf("Authenticate = %q %q %v", role, name, err)
	}
	// And node2 can serve node1.
	wantOK(t, handshake(t, ServerTLS(pool, node2, true), ClientTLS(ca.Pool(), &node1, "127.0.0.1")))
}
