package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"
)

func signedLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		t.Fatalf("parse signed PEM: %v", err)
	}
	if len(certs) != 2 {
		t.Fatalf("signed PEM holds %d certificates, want leaf + CA", len(certs))
	}
	return certs[0]
}

func TestSignRoles(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	tests := []struct {
		name string
		role Role
		dns  []string
		ips  []net.IP
		eku  []x509.ExtKeyUsage
	}{
		{"node1", RoleNode, []string{"node1.example"}, []net.IP{loopback}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{"alice-laptop", RoleClient, nil, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tc := range tests {
		t.Run(string(tc.role), func(t *testing.T) {
			key, csr, err := NewKeyAndCSR(tc.name, tc.role, tc.dns, tc.ips)
			if err != nil {
				t.Fatal(err)
			}
			certPEM, err := ca.Sign(csr, tc.role, t0, 24*time.Hour)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			leaf := signedLeaf(t, certPEM)
			role, name, err := RoleOf(leaf)
			if err != nil || role != tc.role || name != tc.name {
				t.Fatalf("RoleOf = %q, %q, %v; want %q, %q", role, name, err, tc.role, tc.name)
			}
			if !slices.Equal(leaf.ExtKeyUsage, tc.eku) {
				t.Fatalf("ExtKeyUsage %v, want %v", leaf.ExtKeyUsage, tc.eku)
			}
			if leaf.IsCA || leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.Sign() <= 0 {
				t.Fatalf("IsCA=%v serial=%v", leaf.IsCA, leaf.SerialNumber)
			}
			if !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) || !leaf.NotBefore.Equal(t0.Add(-ClockSkew)) {
				t.Fatalf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
			}
			if !slices.Equal(leaf.DNSNames, tc.dns) || len(leaf.IPAddresses) != len(tc.ips) {
				t.Fatalf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
			}
			if _, err := TLSCertificate(certPEM, key); err != nil {
				t.Fatalf("TLSCertificate: %v", err)
			}
			gotLeaf, gotCA, err := VerifyIssued(certPEM, ca.Fingerprint(), t0)
			if err != nil || !gotLeaf.Equal(leaf) || !gotCA.Equal(ca.Cert) {
				t.Fatalf("VerifyIssued: %v", err)
			}
		})
	}
}

func TestSignCapsValidityAtCA(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	_, csr, err := NewKeyAndCSR("node1", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, RoleNode, t0, 20*CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	if got := signedLeaf(t, certPEM).NotAfter; !got.Equal(ca.Cert.NotAfter) {
		t.Fatalf("NotAfter %v, want capped at %v", got, ca.Cert.NotAfter)
	}
	if _, err := ca.Sign(csr, RoleNode, t0.Add(CAValidity+time.Hour), time.Hour); err == nil {
		t.Fatal("an expired CA signed")
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	_, nodeCSR, err := NewKeyAndCSR("node1", RoleNode, nil, []net.IP{loopback})
	if err != nil {
		t.Fatal(err)
	}
	_, clientCSR, err := NewKeyAndCSR("alice", RoleClient, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Tamper with the signed content: the signature no longer verifies.
	block, _ := pem.Decode(nodeCSR)
	der := bytes.Replace(block.Bytes, []byte("node1"), []byte("evil1"), 1)
	if bytes.Equal(der, block.Bytes) {
		t.Fatal("test setup: CN not found in CSR")
	}
	tampered := encodePEM(pemCSR, der)

	// A CSR asking for an extra URI.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	extraURI := mustCSR(t, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "node1"},
		URIs:    []*url.URL{RoleNode.URI(), {Scheme: "spiffe", Host: "x", Path: "/y"}},
	}, key)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	weakCurve := mustCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node1"}}, p224)

	tests := []struct {
		name string
		csr  []byte
		role Role
	}{
		{"bad signature", tampered, RoleNode},
		{"garbage", []byte("not a csr"), RoleNode},
		{"client CSR signed as node", clientCSR, RoleNode},
		{"node CSR signed as client", nodeCSR, RoleClient}, // role URI and IP SAN
		{"extra URI", extraURI, RoleNode},
		{"P-224 key", weakCurve, RoleNode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Sign(tc.csr, tc.role, t0, time.Hour)
			wantIs(t, err, ErrBadCSR)
		})
	}
	if _, err := ca.Sign(nodeCSR, "admin", t0, time.Hour); err == nil {
		t.Fatal("signed an unknown role")
	}
	if _, err := ca.Sign(nodeCSR, RoleNode, t0, 0); err == nil {
		t.Fatal("signed with zero validity")
	}
}

func TestSignAcceptsEd25519CSR(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr := mustCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, priv)
	certPEM, err := ca.Sign(csr, RoleClient, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if role, _, err := RoleOf(signedLeaf(t, certPEM)); err != nil || role != RoleClient {
		t.Fatalf("RoleOf = %q, %v", role, err)
	}
}

func TestSignFor(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	pt := PendingToken{Name: "node2", Role: RoleNode, Expires: t0.Add(time.Hour)}
	_, csr, err := NewKeyAndCSR("node2", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignFor(pt, csr, t0, time.Hour)
	if err != nil {
		t.Fatalf("SignFor: %v", err)
	}
	if role, name, err := RoleOf(signedLeaf(t, certPEM)); err != nil || role != RoleNode || name != "node2" {
		t.Fatalf("RoleOf = %q %q %v", role, name, err)
	}
	_, other, err := NewKeyAndCSR("node3", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.SignFor(pt, other, t0, time.Hour)
	wantIs(t, err, ErrBadCSR)
	// A client token cannot buy a node certificate.
	_, err = ca.SignFor(PendingToken{Name: "node2", Role: RoleClient}, csr, t0, time.Hour)
	wantIs(t, err, ErrBadCSR)
}

func TestRoleOfRefuses(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	if _, _, err := RoleOf(ca.Cert); err == nil {
		t.Fatal("RoleOf accepted the CA certificate")
	}
	if _, _, err := RoleOf(nil); err == nil {
		t.Fatal("RoleOf accepted nil")
	}
	// A client-role URI on a certificate with server usage is inconsistent.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: serialForTest(t),
		Subject:      pkix.Name{CommonName: "sneaky"},
		NotBefore:    t0,
		NotAfter:     t0.Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{RoleClient.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	_, _, err = RoleOf(c)
	wantIs(t, err, ErrBadCertificate)
}

func TestKeyPairFiles(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	key, csr, err := NewKeyAndCSR("node1", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, RoleNode, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := SaveKeyPair(dir, "node", certPEM, key); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKeyPair(dir, "node")
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if len(got.Certificate) != 2 || got.Leaf.Subject.CommonName != "node1" {
		t.Fatalf("loaded chain of %d, leaf %q", len(got.Certificate), got.Leaf.Subject.CommonName)
	}
	otherKey, _, err := NewKeyAndCSR("x", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = TLSCertificate(certPEM, otherKey)
	wantIs(t, err, ErrBadCertificate)
	_, _, err = VerifyIssued(certPEM, newTestCA(t, "other", t0).Fingerprint(), t0)
	wantIs(t, err, ErrFingerprintMismatch)
}

func mustCSR(t *testing.T, tmpl *x509.CertificateRequest, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return encodePEM(pemCSR, der)
}

func serialForTest(t *testing.T) *big.Int {
	t.Helper()
	n, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
