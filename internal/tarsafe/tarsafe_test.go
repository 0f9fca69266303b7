package tarsafe

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSparse reads sparse entries GNU tar wrote (old GNU and PAX 1.0
// formats) and a plain one.
func TestSparse(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Fatal("tar is needed (Debian package tar)")
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(filepath.Join(dir, "plain"), []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		args   []string
		sparse bool
	}{
		{[]string{"--sparse", "--format=gnu", "big"}, true},
		{[]string{"--sparse", "--format=pax", "big"}, true},
		{[]string{"--format=pax", "plain"}, false},
	} {
		out, err := exec.Command("tar", append([]string{"-C", dir, "-cf", "-"}, tc.args...)...).Output()
		if err != nil {
			t.Fatalf("tar %v: %v", tc.args, err)
		}
		h, err := tar.NewReader(bytes.NewReader(out)).Next()
		if err != nil {
			t.Fatal(err)
		}
		if got := Sparse(h); got != tc.sparse {
			t.Errorf("tar %v (%d bytes, header size %d): Sparse = %v, want %v", tc.args, len(out), h.Size, got, tc.sparse)
		}
	}
}
