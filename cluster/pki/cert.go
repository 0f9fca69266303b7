package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Role is what a certificate holder may do: a node serves and dials other
// nodes, a client only dials.
type Role string

// The roles.
const (
	RoleNode   Role = "node"
	RoleClient Role = "client"
)

// DefaultValidity is the lifetime IssueSelf gives a certificate.
const DefaultValidity = 365 * 24 * time.Hour

// roleURIPrefix starts the SAN URI that records a certificate's role:
// "shoal:role:node" or "shoal:role:client".
const (
	roleScheme       = "shoal"
	roleOpaquePrefix = "role:"
)

// Valid reports whether r is RoleNode or RoleClient.
func (r Role) Valid() bool { return r == RoleNode || r == RoleClient }

// URI returns the SAN URI that records r in a certificate.
func (r Role) URI() *url.URL {
	return &url.URL{Scheme: roleScheme, Opaque: roleOpaquePrefix + string(r)}
}

// NewKeyAndCSR generates an ECDSA P-256 key and a PEM certificate signing
// request for commonName with the requested role URI, DNS names and IPs. The
// key stays with the caller; only the CSR travels.
func NewKeyAndCSR(commonName string, role Role, dnsNames []string, ips []net.IP) (crypto.Signer, []byte, error) {
	if err := checkName(commonName); err != nil {
		return nil, nil, fmt.Errorf("pki: new CSR: %w", err)
	}
	if !role.Valid() {
		return nil, nil, fmt.Errorf("pki: new CSR: %q: %w", role, ErrInvalidRole)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new CSR: generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: commonName},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		URIs:        []*url.URL{role.URI()},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new CSR: %w", err)
	}
	return key, encodePEM(pemCSR, der), nil
}

// ParseCSR decodes a PEM CSR and checks its signature. Use it to read the
// requested name before signing (see SignFor).
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != pemCSR {
		return nil, fmt.Errorf("pki: parse CSR: no %q PEM block: %w", pemCSR, ErrBadCSR)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("pki: parse CSR: trailing data: %w", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CSR: %w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: parse CSR: signature: %w: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// Sign issues a certificate for the CSR with the given role, valid from now
// (less ClockSkew) for validity, capped at the CA's own expiry. It checks the
// CSR's signature and refuses a CSR that asks for another role, for URIs or
// e-mail addresses, for DNS or IP names on a client certificate, or that uses
// a key type other than ECDSA P-256/P-384 or Ed25519. Node certificates get
// ExtKeyUsage server+client, client certificates client only; the role is the
// SAN URI "shoal:role:<role>", the name the subject CN. The serial number is
// random, 128 bits.
//
// certPEM holds the leaf followed by the CA certificate, so a server built
// from it presents the CA, which is what PinnedTLS checks.
func (ca *CA) Sign(csrPEM []byte, role Role, now time.Time, validity time.Duration) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.sign(csr, role, now, validity)
}

// SignFor signs a CSR for the holder of a redeemed token: the CSR's Common
// Name must be the token's name, and the role is the token's role.
func (ca *CA) SignFor(pt PendingToken, csrPEM []byte, now time.Time, validity time.Duration) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != pt.Name {
		return nil, fmt.Errorf("pki: sign: CSR is for %q but the token is for %q: %w", csr.Subject.CommonName, pt.Name, ErrBadCSR)
	}
	return ca.sign(csr, pt.Role, now, validity)
}

func (ca *CA) sign(csr *x509.CertificateRequest, role Role, now time.Time, validity time.Duration) ([]byte, error) {
	name := csr.Subject.CommonName
	if !role.Valid() {
		return nil, fmt.Errorf("pki: sign %q: %q: %w", name, role, ErrInvalidRole)
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("pki: sign: %w: %w", ErrBadCSR, err)
	}
	if err := checkCSRKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", name, err)
	}
	for _, u := range csr.URIs {
		if u.String() != role.URI().String() {
			return nil, fmt.Errorf("pki: sign %q as %s: CSR asks for URI %q: %w", name, role, u, ErrBadCSR)
		}
	}
	if len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("pki: sign %q: CSR asks for e-mail addresses: %w", name, ErrBadCSR)
	}
	if role == RoleClient && (len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0) {
		return nil, fmt.Errorf("pki: sign %q: a client certificate carries no DNS or IP names: %w", name, ErrBadCSR)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("pki: sign %q: validity %v is not positive", name, validity)
	}
	if now.Before(ca.Cert.NotBefore) || !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("pki: sign %q: CA is not valid at %v (valid %v to %v)", name, now, ca.Cert.NotBefore, ca.Cert.NotAfter)
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", name, err)
	}
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if role == RoleNode {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   name,
			Organization: ca.Cert.Subject.Organization,
		},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              csr.DNSNames,
		IPAddresses:           csr.IPAddresses,
		URIs:                  []*url.URL{role.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", name, err)
	}
	out := encodePEM(pemCertificate, der)
	return append(out, ca.PEM...), nil
}

// RoleOf reads the role and name (subject CN) of a Shoal certificate. It
// requires exactly one role URI, a non-empty name, and ExtKeyUsages that
// match the role (node: server and client; client: client and not server).
// It does not verify the chain: call it on a verified leaf.
func RoleOf(cert *x509.Certificate) (Role, string, error) {
	if cert == nil {
		return "", "", fmt.Errorf("pki: role of nil certificate: %w", ErrBadCertificate)
	}
	var roles []Role
	for _, u := range cert.URIs {
		if u.Scheme == roleScheme && strings.HasPrefix(u.Opaque, roleOpaquePrefix) {
			roles = append(roles, Role(strings.TrimPrefix(u.Opaque, roleOpaquePrefix)))
		}
	}
	name := cert.Subject.CommonName
	if len(roles) != 1 {
		return "", "", fmt.Errorf("pki: certificate %q has %d role URIs, want 1: %w", name, len(roles), ErrBadCertificate)
	}
	role := roles[0]
	if !role.Valid() {
		return "", "", fmt.Errorf("pki: certificate %q: role %q: %w", name, role, ErrInvalidRole)
	}
	if name == "" {
		return "", "", fmt.Errorf("pki: %s certificate has no name: %w", role, ErrBadCertificate)
	}
	var server, client bool
	for _, u := range cert.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		}
	}
	if !client || server != (role == RoleNode) {
		return "", "", fmt.Errorf("pki: %s certificate %q has the wrong key usages: %w", role, name, ErrBadCertificate)
	}
	return role, name, nil
}

// IssueSelf generates a key, signs a certificate for it with ca and returns
// it ready for tls.Config (chain: leaf then CA). It is the bootstrap node's
// shortcut for NewKeyAndCSR + Sign; its validity is DefaultValidity.
func IssueSelf(ca *CA, name string, role Role, dnsNames []string, ips []net.IP, now time.Time) (tls.Certificate, error) {
	key, csrPEM, err := NewKeyAndCSR(name, role, dnsNames, ips)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, err := ca.Sign(csrPEM, role, now, DefaultValidity)
	if err != nil {
		return tls.Certificate{}, err
	}
	return TLSCertificate(certPEM, key)
}

// TLSCertificate combines a PEM chain returned by Sign with the private key
// that made the CSR. It fails if the key does not match the leaf.
func TLSCertificate(certPEM []byte, key crypto.Signer) (tls.Certificate, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: TLS certificate: %w", err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return tls.Certificate{}, fmt.Errorf("pki: TLS certificate %q: key does not match: %w", certs[0].Subject.CommonName, ErrBadCertificate)
	}
	out := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// VerifyIssued checks a PEM chain returned by Sign (for example to a joiner):
// the chain must contain the CA with the pinned fingerprint, and the leaf must
// verify against that CA at now and carry a valid role. It returns the leaf
// and the CA, which the caller then trusts for ServerTLS and ClientTLS.
func VerifyIssued(certPEM []byte, fingerprint string, now time.Time) (leaf, ca *x509.Certificate, err error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: verify issued certificate: %w", err)
	}
	ca, err = CAFromChain(certs, fingerprint)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: verify issued certificate: %w", err)
	}
	leaf = certs[0]
	if err := verifyLeaf(leaf, ca, now, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, nil, fmt.Errorf("pki: verify issued certificate: %w", err)
	}
	if _, _, err := RoleOf(leaf); err != nil {
		return nil, nil, fmt.Errorf("pki: verify issued certificate: %w", err)
	}
	return leaf, ca, nil
}

// SaveKeyPair writes <base>.crt (0644) and <base>.key (0600) into dir
// atomically, creating dir (0700) if needed.
func SaveKeyPair(dir, base string, certPEM []byte, key crypto.Signer) error {
	keyPEM, err := MarshalKey(key)
	if err != nil {
		return fmt.Errorf("pki: save key pair %q: %w", base, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save key pair %q: %w", base, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, base+".key"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("pki: save key pair %q: %w", base, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, base+".crt"), certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: save key pair %q: %w", base, err)
	}
	return nil
}

// LoadKeyPair reads what SaveKeyPair wrote.
func LoadKeyPair(dir, base string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, base+".crt"))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load key pair: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, base+".key"))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load key pair: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load key pair %q: %w", base, err)
	}
	return TLSCertificate(certPEM, key)
}

// checkName accepts names of 1 to 253 printable, non-space ASCII characters.
func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("name %q: want 1 to 253 characters", name)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("name %q: only printable ASCII without spaces", name)
		}
	}
	return nil
}

func checkCSRKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA curve %s not accepted: %w", k.Curve.Params().Name, ErrBadCSR)
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("key type %T not accepted: %w", pub, ErrBadCSR)
	}
}

// verifyLeaf verifies leaf against ca alone (no intermediates) at now for
// the given key usage.
func verifyLeaf(leaf, ca *x509.Certificate, now time.Time, usage x509.ExtKeyUsage) error {
	if leaf.IsCA {
		return fmt.Errorf("leaf %q is a CA: %w", leaf.Subject.CommonName, ErrBadCertificate)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("leaf %q: %w: %w", leaf.Subject.CommonName, ErrBadCertificate, err)
	}
	return nil
}
