package pki

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Fatalf("CA constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if got, want := c.NotAfter, t0.Add(CAValidity); !got.Equal(want) {
		t.Fatalf("NotAfter %v, want %v", got, want)
	}
	if ca.ClusterName() != "prod" {
		t.Fatalf("ClusterName %q", ca.ClusterName())
	}
	if c.SerialNumber.BitLen() > 128 || c.SerialNumber.Sign() <= 0 {
		t.Fatalf("serial %v", c.SerialNumber)
	}
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(ca.Fingerprint()) {
		t.Fatalf("fingerprint %q", ca.Fingerprint())
	}
	if ca.Fingerprint() != ca.Fingerprint() {
		t.Fatal("fingerprint not stable")
	}
	if other := newTestCA(t, "prod", t0); other.Fingerprint() == ca.Fingerprint() {
		t.Fatal("two CAs share a fingerprint")
	}
	if _, err := NewCA(" ", t0); err == nil {
		t.Fatal("NewCA with an empty name succeeded")
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca := newTestCA(t, "prod", t0)
	if err := ca.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	// Saving twice replaces the files atomically.
	if err := ca.Save(dir); err != nil {
		t.Fatalf("second Save: %v", err)
	}
	modes := map[string]os.FileMode{CACertFile: 0o644, CAKeyFile: 0o600}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(modes) {
		t.Fatalf("dir holds %d entries, want only %v (temporary files left?)", len(entries), modes)
	}
	for name, want := range modes {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Fatalf("%s mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("fingerprint after load %s, want %s", loaded.Fingerprint(), ca.Fingerprint())
	}
	if !publicKeysEqual(loaded.Key.Public(), ca.Key.Public()) {
		t.Fatal("loaded key differs")
	}
	if string(loaded.PEM) != string(ca.PEM) {
		t.Fatal("loaded PEM differs")
	}
	// The loaded CA signs certificates the original's pool trusts.
	_, csr, err := NewKeyAndCSR("node2", RoleNode, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := loaded.Sign(csr, RoleNode, t0, DefaultValidity)
	if err != nil {
		t.Fatalf("Sign with loaded CA: %v", err)
	}
	if _, _, err := VerifyIssued(certPEM, ca.Fingerprint(), t0); err != nil {
		t.Fatalf("VerifyIssued: %v", err)
	}
}

func TestLoadCARefuses(t *testing.T) {
	ca := newTestCA(t, "prod", t0)

	t.Run("missing", func(t *testing.T) {
		if _, err := LoadCA(t.TempDir()); err == nil {
			t.Fatal("LoadCA of an empty dir succeeded")
		}
	})
	t.Run("readable key", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(dir); err == nil {
			t.Fatal("LoadCA accepted a world-readable key")
		}
	})
	t.Run("mismatched key", func(t *testing.T) {
		dir, otherDir := t.TempDir(), t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := newTestCA(t, "other", t0).Save(otherDir); err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(filepath.Join(otherDir, CAKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = LoadCA(dir)
		wantIs(t, err, ErrBadCertificate)
	})
	t.Run("leaf as CA", func(t *testing.T) {
		dir := t.TempDir()
		key, csr, err := NewKeyAndCSR("node1", RoleNode, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.Sign(csr, RoleNode, t0, DefaultValidity)
		if err != nil {
			t.Fatal(err)
		}
		leafOnly := certPEM[:len(certPEM)-len(ca.PEM)]
		if err := SaveKeyPair(dir, "ca", leafOnly, key); err != nil {
			t.Fatal(err)
		}
		_, err = LoadCA(dir)
		wantIs(t, err, ErrBadCertificate)
	})
}
