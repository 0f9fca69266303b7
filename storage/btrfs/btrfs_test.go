package btrfs_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/storage/storagetest"
)

// poolSize is the sparse size of each test pool's image.
const poolSize = 512 << 20

// requirePrereqs skips (or, with CI=true, fails) when the host cannot run
// loop-backed btrfs pools, saying exactly what is missing.
func requirePrereqs(tb testing.TB) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (euid 0)")
	}
	for _, bin := range []string{"btrfs", "mkfs.btrfs", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH")
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "/dev/loop-control")
	}
	if len(missing) == 0 {
		return
	}
	msg := "btrfs tests need: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// newPool creates a loop-backed btrfs pool in a fresh temp dir and returns
// its mountpoint. Cleanup unmounts it (also when the test failed) and
// fails the test if the loop device was leaked.
func newPool(tb testing.TB) string {
	tb.Helper()
	requirePrereqs(tb)
	ctx := context.Background()
	dir := tb.TempDir()
	img, mnt := filepath.Join(dir, "pool.img"), filepath.Join(dir, "mnt")
	tb.Cleanup(func() {
		if err := btrfs.UnmountPool(ctx, mnt); err != nil {
			tb.Errorf("unmount pool: %v", err)
		}
		if leaked := loopDevices(tb, img); leaked != "" {
			tb.Errorf("loop device leaked for %s: %s", img, leaked)
		}
	})
	if err := btrfs.CreateLoopPool(ctx, img, poolSize, mnt); err != nil {
		tb.Fatal(err)
	}
	return mnt
}

// loopDevices is `losetup -j img`: the loop devices bound to img.
func loopDevices(tb testing.TB, img string) string {
	out, err := exec.Command("losetup", "-j", img).CombinedOutput()
	if err != nil {
		tb.Errorf("losetup -j %s: %v: %s", img, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newDriver(tb testing.TB) *btrfs.Driver {
	tb.Helper()
	d, err := btrfs.New(context.Background(), btrfs.Config{Path: newPool(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	requirePrereqs(t)
	storagetest.Run(t, func(t *testing.T) storage.Driver { return newDriver(t) })
}

func TestInfo(t *testing.T) {
	d := newDriver(t)
	info := d.Info()
	if info.Name != "btrfs" || !info.CoWClone || !info.OptimizedSend || !info.Quotas {
		t.Fatalf("Info() = %+v, want btrfs with CoW clones, optimized send and quotas", info)
	}
}

func TestNewRejectsNonBtrfs(t *testing.T) {
	requirePrereqs(t)
	_, err := btrfs.New(context.Background(), btrfs.Config{Path: t.TempDir()})
	if err == nil {
		t.Fatal("New on a non-btrfs directory succeeded")
	}
}

func TestLoopPoolLifecycle(t *testing.T) {
	requirePrereqs(t)
	ctx := context.Background()
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "p.img"), filepath.Join(dir, "mnt")
	t.Cleanup(func() { _ = btrfs.UnmountPool(ctx, mnt) })
	if err := btrfs.CreateLoopPool(ctx, img, poolSize, mnt); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.CreateLoopPool(ctx, img, poolSize, mnt); err == nil {
		t.Fatal("CreateLoopPool over an existing image succeeded")
	}
	if err := os.WriteFile(filepath.Join(mnt, "marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Mounting again where it is mounted is a no-op.
	if err := btrfs.MountLoopPool(ctx, img, mnt); err != nil {
		t.Fatalf("idempotent mount: %v", err)
	}
	if err := btrfs.UnmountPool(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	if l := loopDevices(t, img); l != "" {
		t.Fatalf("loop device left after unmount: %s", l)
	}
	if err := btrfs.UnmountPool(ctx, mnt); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	if err := btrfs.MountLoopPool(ctx, img, mnt); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "marker")); err != nil || string(b) != "x" {
		t.Fatalf("pool content after remount: %q %v", b, err)
	}
	// Another image cannot be mounted over it.
	other := filepath.Join(dir, "other.img")
	if err := btrfs.CreateLoopPool(ctx, other, poolSize, mnt); err == nil {
		t.Fatal("CreateLoopPool onto a busy mountpoint succeeded")
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("failed CreateLoopPool left its image: %v", err)
	}
	if err := btrfs.UnmountPool(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	for _, i := range []string{img, other} {
		if l := loopDevices(t, i); l != "" {
			t.Fatalf("loop device leaked: %s", l)
		}
	}
}

// benchVolume creates a volume holding n small files in a few directories.
func benchVolume(b *testing.B, d *btrfs.Driver, vol string, n int) {
	ctx := context.Background()
	if err := d.CreateVolume(ctx, vol); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		sub := filepath.Join(d.Path(vol), fmt.Sprintf("d%02d", i%16))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", i)), []byte(strings.Repeat("x", 512+i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSnapshot(b *testing.B) {
	for _, quotas := range []bool{true, false} {
		b.Run(fmt.Sprintf("quotas=%v", quotas), func(b *testing.B) {
			d := newBenchDriver(b, quotas)
			ctx := context.Background()
			benchVolume(b, d, "containers/bench", 300)
			for i := 0; b.Loop(); i++ {
				if err := d.CreateSnapshot(ctx, "containers/bench", fmt.Sprintf("s%d", i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkClone(b *testing.B) {
	for _, quotas := range []bool{true, false} {
		b.Run(fmt.Sprintf("quotas=%v", quotas), func(b *testing.B) {
			d := newBenchDriver(b, quotas)
			ctx := context.Background()
			benchVolume(b, d, "images/base", 300)
			for i := 0; b.Loop(); i++ {
				if err := d.CloneVolume(ctx, "images/base", fmt.Sprintf("containers/c%d", i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func newBenchDriver(b *testing.B, quotas bool) *btrfs.Driver {
	d, err := btrfs.New(context.Background(), btrfs.Config{Path: newPool(b), DisableQuotas: !quotas})
	if err != nil {
		b.Fatal(err)
	}
	if d.Info().Quotas != quotas {
		b.Fatalf("Info().Quotas = %v, want %v", d.Info().Quotas, quotas)
	}
	return d
}
