package btrfs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/shoal-dev/shoal/storage/btrfs"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func TestSnapshotsAreReadOnly(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t)
	if err := d.CreateVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(d.SnapshotPath("v", "s"), "x"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing into a snapshot: got %v, want EROFS", err)
	}
}

// Containers may create subvolumes inside their rootfs (systemd does);
// delete and restore must cope.
func TestNestedSubvolumes(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t)
	if err := d.CreateVolume(ctx, "containers/c1"); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateSnapshot(ctx, "containers/c1", "s"); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(d.Path("containers/c1"), "var", "lib", "machines")
	if err := os.MkdirAll(filepath.Dir(inner), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "btrfs", "subvolume", "create", inner)
	run(t, "btrfs", "subvolume", "create", filepath.Join(inner, "deeper"))
	if err := d.RestoreSnapshot(ctx, "containers/c1", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(inner); !os.IsNotExist(err) {
		t.Fatalf("restore kept the nested subvolume: %v", err)
	}
	run(t, "btrfs", "subvolume", "create", filepath.Join(d.Path("containers/c1"), "again"))
	if err := d.DeleteVolume(ctx, "containers/c1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.VolumeExists(ctx, "containers/c1"); err != nil || ok {
		t.Fatalf("VolumeExists after delete: %v %v", ok, err)
	}
}

// New cleans up what an interrupted receive or restore left behind.
func TestNewCleansStaging(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	d, err := btrfs.New(ctx, btrfs.Config{Path: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	leftovers := []string{
		filepath.Join(pool, ".staging", "restore-1"),
		filepath.Join(pool, "snapshots", "v", ".recv-1", "s"),
	}
	for _, p := range leftovers {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		run(t, "btrfs", "subvolume", "create", p)
	}
	if _, err := btrfs.New(ctx, btrfs.Config{Path: pool}); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived New: %v", p, err)
		}
	}
	if snaps, err := d.ListSnapshots(ctx, "v"); err != nil || len(snaps) != 0 {
		t.Fatalf("ListSnapshots = %v, %v", snaps, err)
	}
}
