package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// CAValidity is the lifetime of a cluster CA created by NewCA.
	CAValidity = 10 * 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is back-dated, so that a peer whose
	// clock lags a little still accepts a certificate issued just now.
	ClockSkew = 5 * time.Minute

	// CACertFile and CAKeyFile are the file names Save and LoadCA use.
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
)

// CA is the cluster certificate authority: its certificate, its signing key
// and the PEM encoding of the certificate (what nodes and clients trust).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// NewCA creates a self-signed cluster CA for clusterName: an ECDSA P-256 key,
// valid from now (less ClockSkew) for CAValidity, CA:true with path length 0
// (it signs leaf certificates only, never intermediates).
func NewCA(clusterName string, now time.Time) (*CA, error) {
	if strings.TrimSpace(clusterName) == "" {
		return nil, errors.New("pki: new CA: cluster name is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	// The subject carries the serial too: two clusters of the same name
	// then never share an issuer name, so a Go client never offers one
	// cluster's certificate to the other (see ServerTLS).
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "Shoal cluster CA " + clusterName,
			Organization: []string{clusterName},
			SerialNumber: serial.Text(16),
		},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: parse certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: encodePEM(pemCertificate, der)}, nil
}

// ClusterName returns the cluster name recorded in the CA's subject.
func (ca *CA) ClusterName() string {
	if len(ca.Cert.Subject.Organization) == 0 {
		return ""
	}
	return ca.Cert.Subject.Organization[0]
}

// Fingerprint returns "sha256:" followed by the lowercase hex SHA-256 of the
// CA certificate's DER encoding. It is what join tokens pin.
func (ca *CA) Fingerprint() string { return FingerprintOf(ca.Cert) }

// FingerprintOf returns "sha256:" + lowercase hex SHA-256 of cert's DER.
func FingerprintOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Pool returns a certificate pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Save writes ca.crt (0644) and ca.key (0600) into dir, creating dir (0700)
// if needed. Each file is written to a temporary file, synced and renamed, so
// a crash leaves either the old or the new file, never a partial one.
func (ca *CA) Save(dir string) error {
	keyPEM, err := MarshalKey(ca.Key)
	if err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("pki: save CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), ca.PEM, 0o644); err != nil {
		return fmt.Errorf("pki: save CA certificate: %w", err)
	}
	return nil
}

// LoadCA reads ca.crt and ca.key from dir. It refuses a key file readable by
// group or others, a certificate that is not a CA, and a key that does not
// match the certificate.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("pki: load CA: %s has mode %v, want 0600", keyPath, st.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// ParseCA builds a CA from its PEM certificate and PKCS#8 PEM key (as the
// cluster replicates them), checking that they belong together.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("pki: CA certificate: %d certificates, want 1: %w", len(certs), ErrBadCertificate)
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: CA certificate: not a CA certificate: %w", ErrBadCertificate)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: CA key does not match certificate: %w", ErrBadCertificate)
	}
	return &CA{Cert: cert, Key: key, PEM: encodePEM(pemCertificate, cert.Raw)}, nil
}

// MarshalKey encodes a private key as PKCS#8 PEM ("PRIVATE KEY").
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return encodePEM(pemPrivateKey, der), nil
}

// ParseKey decodes a PKCS#8 PEM private key written by MarshalKey.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != pemPrivateKey {
		return nil, fmt.Errorf("pki: parse key: no %q PEM block: %w", pemPrivateKey, ErrBadCertificate)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse key: %w: %w", ErrBadCertificate, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: parse key: %T is not a signer: %w", k, ErrBadCertificate)
	}
	return s, nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertsPEM parses every CERTIFICATE block in data; other block types
// and trailing garbage are errors.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("unexpected PEM block %q: %w", block.Type, ErrBadCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
		certs = append(certs, c)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("trailing data after PEM blocks: %w", ErrBadCertificate)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate in PEM: %w", ErrBadCertificate)
	}
	return certs, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// randomSerial returns a random, positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// writeFileAtomic writes data to path through a synced temporary file in the
// same directory and a rename, then syncs the directory.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
