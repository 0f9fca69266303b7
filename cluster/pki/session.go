package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// KeyPairPEM is a certificate and its private key, both PEM.
type KeyPairPEM struct {
	CertPEM, KeyPEM []byte
}

// Session is a TLS identity for one connection between two members: a CA
// made for it alone, which signed one server and one client certificate
// and whose key is then dropped. A peer that verifies against CAPEM
// accepts only the other end of this session — not the cluster's clients,
// whose certificates the cluster CA signs too. CRIU's page server checks
// no more than the chain, so post-copy's page traffic uses a Session.
type Session struct {
	// CAPEM is the session CA's certificate, what both ends trust.
	CAPEM []byte
	// Server is the listening end's pair, Client the connecting end's.
	Server, Client KeyPairPEM
}

// NewSession makes a Session valid from now (less ClockSkew) for validity.
// Purpose names it in the certificates' subjects (for CRIU's logs).
func NewSession(purpose string, now time.Time, validity time.Duration) (*Session, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: session %q: validity %v is not positive", purpose, validity)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: session %q: generate key: %w", purpose, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: session %q: %w", purpose, err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Shoal session CA " + purpose, SerialNumber: serial.Text(16)},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: session %q: create CA: %w", purpose, err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("pki: session %q: parse CA: %w", purpose, err)
	}
	s := &Session{CAPEM: encodePEM(pemCertificate, caDER)}
	for _, leaf := range []struct {
		out  *KeyPairPEM
		name string
		eku  x509.ExtKeyUsage
	}{
		{&s.Server, "server", x509.ExtKeyUsageServerAuth},
		{&s.Client, "client", x509.ExtKeyUsageClientAuth},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: session %q: generate %s key: %w", purpose, leaf.name, err)
		}
		serial, err := randomSerial()
		if err != nil {
			return nil, fmt.Errorf("pki: session %q: %w", purpose, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: purpose + " " + leaf.name},
			NotBefore:             now.Add(-ClockSkew),
			NotAfter:              now.Add(validity),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{leaf.eku},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			return nil, fmt.Errorf("pki: session %q: sign %s: %w", purpose, leaf.name, err)
		}
		keyPEM, err := MarshalKey(key)
		if err != nil {
			return nil, fmt.Errorf("pki: session %q: %w", purpose, err)
		}
		*leaf.out = KeyPairPEM{CertPEM: encodePEM(pemCertificate, der), KeyPEM: keyPEM}
	}
	return s, nil
}
