package migration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/dir"
)

func newDir(t *testing.T) storage.Driver {
	t.Helper()
	d, err := dir.New(dir.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// source makes a volume with two user snapshots and a transfer snapshot.
func source(t *testing.T, ctx context.Context) storage.Driver {
	src := newDir(t)
	if err := src.CreateVolume(ctx, "containers/c"); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(src.Path("containers/c"), name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "1")
	src.CreateSnapshot(ctx, "containers/c", "s1")
	write("b", "2")
	src.CreateSnapshot(ctx, "containers/c", "s2")
	write("c", "3")
	src.CreateSnapshot(ctx, "containers/c", "move")
	return src
}

func TestVolumeStream(t *testing.T) {
	ctx := context.Background()
	src, dst := source(t, ctx), newDir(t)
	snaps := []string{"s1", "s2", "move"}
	r, err := NewReceiver(dst, "containers/c", &shoalv1.VolumeHeader{Version: Version, Container: "c", Snapshots: snaps, DropLast: true})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := SendVolume(ctx, src, "containers/c", snaps, func(p *shoalv1.VolumePart) error { return r.Apply(ctx, p) })
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Finish(ctx)
	if err != nil || got != sent || sent == 0 {
		t.Fatalf("received %d of %d bytes: %v", got, sent, err)
	}
	for _, f := range []string{"a", "b", "c"} {
		if _, err := os.Stat(filepath.Join(dst.Path("containers/c"), f)); err != nil {
			t.Errorf("file %s missing after the transfer: %v", f, err)
		}
	}
	list, _ := dst.ListSnapshots(ctx, "containers/c")
	if len(list) != 2 || list[0] != "s1" || list[1] != "s2" {
		t.Fatalf("snapshots on the receiver = %v, want [s1 s2] (the transfer snapshot dropped)", list)
	}
}

func TestVolumeStreamCorruptChunk(t *testing.T) {
	ctx := context.Background()
	src, dst := source(t, ctx), newDir(t)
	snaps := []string{"s1", "s2", "move"}
	r, err := NewReceiver(dst, "containers/c", &shoalv1.VolumeHeader{Version: Version, Snapshots: snaps})
	if err != nil {
		t.Fatal(err)
	}
	flipped := false
	_, err = SendVolume(ctx, src, "containers/c", snaps, func(p *shoalv1.VolumePart) error {
		if !flipped && len(p.Data) > 100 {
			p.Data[100] ^= 0xff
			flipped = true
		}
		return r.Apply(ctx, p)
	})
	if err == nil {
		t.Fatal("a corrupted chunk went through")
	}
	r.Abort()
	if ok, _ := dst.VolumeExists(ctx, "containers/c"); ok {
		t.Fatal("a failed transfer left a volume behind")
	}
	// Bytes that still parse but differ from what was sent: the checksum
	// catches them.
	r, _ = NewReceiver(dst, "containers/c", &shoalv1.VolumeHeader{Version: Version, Snapshots: snaps})
	_, err = SendVolume(ctx, src, "containers/c", snaps, func(p *shoalv1.VolumePart) error {
		if p.End {
			p.Sha256 = "00" + p.Sha256[2:]
		}
		return r.Apply(ctx, p)
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a checksum mismatch: %v, want ErrCorrupt", err)
	}
	r.Abort()
	if _, err := NewReceiver(dst, "containers/c", &shoalv1.VolumeHeader{Version: 99, Snapshots: snaps}); err == nil {
		t.Fatal("an unknown protocol version was accepted")
	}
}
