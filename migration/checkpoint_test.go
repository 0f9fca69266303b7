package migration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// writeTree makes a small checkpoint-like directory.
func writeTree(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		"inventory.img":   []byte("inventory"),
		"pages-1.img":     bytes.Repeat([]byte{7}, 3*chunk+17),
		"sub/dump.log":    []byte("log"),
		"shoal-criu.args": []byte("restore: --lazy-pages\n"),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

func TestCheckpointRoundTrip(t *testing.T) {
	src, files := writeTree(t)
	dst := filepath.Join(t.TempDir(), "in")
	r, err := NewCheckpointReceiver(dst)
	if err != nil {
		t.Fatal(err)
	}
	n, err := SendCheckpoint(context.Background(), src, r.Apply)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Complete() || r.Bytes() != n {
		t.Fatalf("complete %v, received %d of %d bytes", r.Complete(), r.Bytes(), n)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
	}
}

// A flipped byte anywhere fails the end check and nothing is kept.
func TestCheckpointCorruptChunk(t *testing.T) {
	src, _ := writeTree(t)
	dst := filepath.Join(t.TempDir(), "in")
	r, err := NewCheckpointReceiver(dst)
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	_, err = SendCheckpoint(context.Background(), src, func(p *shoalv1.CheckpointPart) error {
		parts++
		if parts == 2 {
			p.Data[100] ^= 0xff
		}
		return r.Apply(p)
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt stream: err %v, want ErrCorrupt", err)
	}
	r.Abort()
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a corrupt checkpoint left %s behind (%v)", dst, err)
	}
}
