package migration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadTar unpacks arbitrary bytes as a received checkpoint stream (a
// peer member sends it; a broken or hostile one must not reach past the
// checkpoint directory). Properties: no panic; everything readTar leaves
// is inside dir, and nothing appears beside it.
func FuzzReadTar(f *testing.F) {
	base := f.TempDir()
	src := filepath.Join(base, "src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o700); err != nil {
		f.Fatal(err)
	}
	for name, body := range map[string]string{"inventory.img": "inv", "pages-1.img": strings.Repeat("p", 4096), "sub/x": ""} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	var good bytes.Buffer
	if err := writeTar(f.Context(), src, &good); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:700])
	f.Add([]byte{})
	f.Add(sparseTar(f, "pages-1.img")) // found by this target: 10 KB that wrote 1 GiB
	dir := filepath.Join(base, "dst")
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	if err := readTar(dir, bytes.NewReader(sparseTar(f, "pages-1.img"))); !errors.Is(err, ErrCorrupt) {
		f.Fatalf("a sparse entry: readTar = %v, want ErrCorrupt", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		readTar(dir, bytes.NewReader(data))
		var written int64
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				written += fi.Size()
			}
			return nil
		})
		if written > int64(len(data)) {
			t.Fatalf("readTar wrote %d bytes from a %d-byte stream", written, len(data))
		}
		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 {
			t.Fatalf("readTar created names beside the checkpoint: %v", ents)
		}
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Type()&os.ModeSymlink != 0 {
				t.Fatalf("readTar made a symlink %s", p)
			}
			return nil
		})
	})
}

// sparseTar is what GNU tar writes for a 1 GiB sparse file named name
// (--sparse --format=pax): about ten kilobytes.
func sparseTar(tb testing.TB, name string) []byte {
	tb.Helper()
	dir := tb.TempDir()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("tar", "-C", dir, "--sparse", "--format=pax", "-cf", "-", name).Output()
	if err != nil {
		tb.Fatalf("tar --sparse (Debian package tar): %v", err)
	}
	return out
}
