package zfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/storagetest"
	"github.com/shoal-dev/shoal/storage/zfs"
	"github.com/shoal-dev/shoal/tests/vm"
)

// TestZFS is the driver's whole suite. Where the host has no zfs module
// (these machines) it runs itself inside the VM of tests/vm with the ZFS
// overlay (scripts/vm.sh build-zfs); under CI=true a missing VM or
// overlay is a failure, not a skip.
func TestZFS(t *testing.T) {
	if !vm.InVM() && !haveZFS() {
		vm.RunTest(context.Background(), t, vm.Options{ZFS: true, Timeout: 10 * time.Minute})
		return
	}
	requirePrereqs(t)
	pool := sharedPool(t)
	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Driver { return newDriver(t, pool) })
	})
	t.Run("Info", func(t *testing.T) { testInfo(t, pool) })
	t.Run("PoolUsed", func(t *testing.T) { testPoolUsed(t, pool) })
	t.Run("ClonesOutliveOrigins", func(t *testing.T) { testClonesOutliveOrigins(t, pool) })
	t.Run("LongNames", func(t *testing.T) { testLongNames(t, pool) })
	t.Run("ReceiveOverLaterSnapshots", func(t *testing.T) { testReceiveOverLater(t, pool) })
	t.Run("FullReceiveReplaces", func(t *testing.T) { testFullReceiveReplaces(t, pool) })
	t.Run("Reopen", testReopen)
	t.Run("Device", testDevice)
}

func haveZFS() bool {
	_, err := os.Stat("/dev/zfs")
	return err == nil
}

// requirePrereqs skips (or, with CI=true, fails) when this host cannot
// run ZFS, saying what is missing.
func requirePrereqs(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (euid 0)")
	}
	for _, bin := range []string{"zfs", "zpool", "mount.zfs", "cp"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH")
		}
	}
	if !haveZFS() {
		missing = append(missing, "/dev/zfs (the zfs module)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "zfs tests need: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func randomName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// sharedPool makes one zpool on a file for the tests' drivers, each with
// a root dataset of its own in it, and destroys it when the test ends.
func sharedPool(t *testing.T) string {
	dir := t.TempDir()
	cfg := zfs.Config{Path: filepath.Join(dir, "base"), Pool: randomName("shoaltest"),
		File: filepath.Join(dir, "pool.img"), FileSize: 4 << 30}
	open(t, cfg)
	return cfg.Pool
}

// newDriver makes a fresh pool: a root dataset of its own in zpool pool,
// without compression (the quota case writes zeros).
func newDriver(t *testing.T, pool string) *zfs.Driver {
	t.Helper()
	return open(t, zfs.Config{Path: filepath.Join(t.TempDir(), "pool"), Pool: pool,
		Dataset: pool + "/" + randomName("t"), Compression: "off"})
}

// open opens a driver; cleanup destroys it and checks nothing is left:
// no root dataset (nor the zpool and its file when the driver made
// them), no mount.
func open(t *testing.T, cfg zfs.Config) *zfs.Driver {
	t.Helper()
	ctx := context.Background()
	d, err := zfs.New(ctx, cfg)
	t.Cleanup(func() {
		if d != nil {
			if err := d.Destroy(ctx); err != nil {
				t.Errorf("destroy pool: %v", err)
			}
		}
		checkGone(t, cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func checkGone(t *testing.T, cfg zfs.Config) {
	if cfg.File != "" || cfg.Device != "" {
		if out, err := exec.Command("zpool", "list", cfg.Pool).CombinedOutput(); err == nil {
			t.Errorf("zpool %s left: %s", cfg.Pool, out)
		}
		if cfg.File != "" {
			if _, err := os.Stat(cfg.File); err == nil {
				t.Errorf("pool file %s left", cfg.File)
			}
		}
	} else if out, err := exec.Command("zfs", "list", cfg.Dataset).CombinedOutput(); err == nil {
		t.Errorf("dataset %s left: %s", cfg.Dataset, out)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), cfg.Path) {
		t.Errorf("mounts left under %s", cfg.Path)
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func zfsOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("zfs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("zfs %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// listResult carries a list call's two results into wantList.
type listResult struct {
	got []string
	err error
}

func res(got []string, err error) listResult { return listResult{got, err} }

func wantList(t *testing.T, r listResult, want ...string) {
	t.Helper()
	ok(t, r.err)
	got := r.got
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	ok(t, err)
	return string(b)
}

func testInfo(t *testing.T, pool string) {
	if i := newDriver(t, pool).Info(); i.Name != "zfs" || !i.CoWClone || !i.Quotas || !i.OptimizedSend {
		t.Fatalf("Info() = %+v", i)
	}
}

// testPoolUsed: what the pool uses counts a volume's data and its
// snapshots' (the node's pool usage).
func testPoolUsed(t *testing.T, pool string) {
	ctx := context.Background()
	d := newDriver(t, pool)
	before, err := d.PoolUsed(ctx)
	ok(t, err)
	ok(t, d.CreateVolume(ctx, "v"))
	p := filepath.Join(d.Path("v"), "data")
	ok(t, writeRandom(p, 4<<20))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	ok(t, os.Remove(p))
	if _, err := d.Usage(ctx, "v"); err != nil { // syncs the pool
		t.Fatal(err)
	}
	after, err := d.PoolUsed(ctx)
	ok(t, err)
	if after < before+4<<20 || after > before+8<<20 {
		t.Fatalf("PoolUsed after 4 MiB kept by a snapshot: %d (before %d)", after, before)
	}
}

// writeRandom writes size random bytes to p and syncs.
func writeRandom(p string, size int) error {
	b := make([]byte, size)
	_, _ = rand.Read(b)
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// testClonesOutliveOrigins: a snapshot and a volume that clones depend on
// can be deleted (they are hidden, not destroyed), and go for good, with
// the hidden snapshots CloneVolume took, once the last clone is deleted.
func testClonesOutliveOrigins(t *testing.T, pool string) {
	ctx := context.Background()
	root := pool + "/" + randomName("t")
	d := open(t, zfs.Config{Path: filepath.Join(t.TempDir(), "pool"), Pool: pool, Dataset: root})
	ok(t, d.CreateVolume(ctx, "images/base"))
	ok(t, os.WriteFile(filepath.Join(d.Path("images/base"), "f"), []byte("base"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "images/base", "s"))
	ok(t, d.CloneSnapshot(ctx, "images/base", "s", "containers/a"))
	ok(t, d.CloneVolume(ctx, "images/base", "containers/b"))
	ok(t, d.CloneVolume(ctx, "containers/a", "containers/c"))

	ok(t, d.DeleteSnapshot(ctx, "images/base", "s"))
	wantList(t, res(d.ListSnapshots(ctx, "images/base")))
	ok(t, d.CreateSnapshot(ctx, "images/base", "s")) // the name is free again
	ok(t, d.DeleteVolume(ctx, "images/base"))
	ok(t, d.DeleteVolume(ctx, "containers/a"))
	wantList(t, res(d.ListVolumes(ctx, "")), "containers/b", "containers/c")
	for _, v := range []string{"containers/b", "containers/c"} {
		if got := readFile(t, filepath.Join(d.Path(v), "f")); got != "base" {
			t.Fatalf("%s/f = %q", v, got)
		}
	}
	ok(t, d.DeleteVolume(ctx, "containers/b"))
	ok(t, d.DeleteVolume(ctx, "containers/c"))
	wantList(t, res(d.ListVolumes(ctx, "")))
	if out := zfsOut(t, "list", "-H", "-o", "name", "-r", "-t", "all", root); strings.Count(out, "\n") != 3 {
		t.Fatalf("left after the last clone went:\n%s", out)
	}
}

// testLongNames: names whose escape is too long for ZFS keep working
// through their digests and properties, renames and streams included.
func testLongNames(t *testing.T, pool string) {
	ctx := context.Background()
	d := newDriver(t, pool)
	long := "custom/" + strings.Repeat("x+y@z_", 30)
	snap := strings.Repeat("s@", 90)
	ok(t, d.CreateVolume(ctx, long))
	ok(t, os.WriteFile(filepath.Join(d.Path(long), "f"), []byte("long"), 0o644))
	ok(t, d.CreateSnapshot(ctx, long, snap))
	ok(t, d.CreateSnapshot(ctx, long, "short"))
	wantList(t, res(d.ListVolumes(ctx, "custom/")), long)
	wantList(t, res(d.ListSnapshots(ctx, long)), snap, "short")
	if got := readFile(t, filepath.Join(d.SnapshotPath(long, snap), "f")); got != "long" {
		t.Fatalf("snapshot content %q", got)
	}
	long2 := long + "2"
	ok(t, d.RenameVolume(ctx, long, long2))
	ok(t, storage.RenameSnapshot(ctx, d, long2, "short", snap+"2"))
	wantList(t, res(d.ListVolumes(ctx, "")), long2)
	wantList(t, res(d.ListSnapshots(ctx, long2)), snap, snap+"2")

	var full, inc bytes.Buffer
	ok(t, d.Send(ctx, long2, snap, "", &full))
	ok(t, d.Send(ctx, long2, snap+"2", snap, &inc))
	other := newDriver(t, pool)
	ok(t, other.Receive(ctx, long, snap, &full))
	ok(t, other.Receive(ctx, long, "b", &inc))
	wantList(t, res(other.ListSnapshots(ctx, long)), snap, "b")
	if got := readFile(t, filepath.Join(other.Path(long), "f")); got != "long" {
		t.Fatalf("received content %q", got)
	}
}

// testReceiveOverLater: an increment on a snapshot older than the
// receiver's latest replaces the receiver's later snapshots (the
// sender's history wins, as zfs receive -F on a replication stream).
func testReceiveOverLater(t *testing.T, pool string) {
	ctx := context.Background()
	a, b := newDriver(t, pool), newDriver(t, pool)
	ok(t, a.CreateVolume(ctx, "v"))
	ok(t, os.WriteFile(filepath.Join(a.Path("v"), "f"), []byte("1"), 0o644))
	ok(t, a.CreateSnapshot(ctx, "v", "s1"))
	var full bytes.Buffer
	ok(t, a.Send(ctx, "v", "s1", "", &full))
	ok(t, b.Receive(ctx, "v", "s1", &full))
	ok(t, os.WriteFile(filepath.Join(b.Path("v"), "f"), []byte("b's"), 0o644))
	ok(t, b.CreateSnapshot(ctx, "v", "local"))

	ok(t, os.WriteFile(filepath.Join(a.Path("v"), "f"), []byte("2"), 0o644))
	ok(t, a.CreateSnapshot(ctx, "v", "s2"))
	var inc bytes.Buffer
	ok(t, a.Send(ctx, "v", "s2", "s1", &inc))
	ok(t, b.Receive(ctx, "v", "s2", &inc))
	wantList(t, res(b.ListSnapshots(ctx, "v")), "s1", "s2")
	if got := readFile(t, filepath.Join(b.Path("v"), "f")); got != "2" {
		t.Fatalf("after the increment f = %q", got)
	}

	// An increment whose origin the receiver lacks is refused.
	fresh := newDriver(t, pool)
	ok(t, fresh.CreateVolume(ctx, "v"))
	inc.Reset()
	ok(t, a.Send(ctx, "v", "s2", "s1", &inc))
	if err := fresh.Receive(ctx, "v", "s2", &inc); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("increment without its origin: %v, want ErrNotFound", err)
	}
	// Garbage is no stream.
	if err := fresh.Receive(ctx, "w", "s", strings.NewReader(strings.Repeat("x", 4096))); err == nil {
		t.Fatal("a stream of garbage was received")
	}
	wantList(t, res(fresh.ListVolumes(ctx, "")), "v")
}

// testFullReceiveReplaces: a full stream for an existing volume replaces
// it at the same Path; a clone of the old volume's snapshot survives.
func testFullReceiveReplaces(t *testing.T, pool string) {
	ctx := context.Background()
	a, b := newDriver(t, pool), newDriver(t, pool)
	ok(t, a.CreateVolume(ctx, "v"))
	ok(t, os.WriteFile(filepath.Join(a.Path("v"), "f"), []byte("sent"), 0o644))
	ok(t, a.CreateSnapshot(ctx, "v", "s"))
	var full bytes.Buffer
	ok(t, a.Send(ctx, "v", "s", "", &full))

	ok(t, b.CreateVolume(ctx, "v"))
	ok(t, os.WriteFile(filepath.Join(b.Path("v"), "f"), []byte("old"), 0o644))
	ok(t, b.CreateSnapshot(ctx, "v", "old"))
	ok(t, b.CloneSnapshot(ctx, "v", "old", "c"))
	p := b.Path("v")
	ok(t, b.Receive(ctx, "v", "s", &full))
	if b.Path("v") != p || readFile(t, filepath.Join(p, "f")) != "sent" {
		t.Fatalf("after the full receive: path %s (was %s), f %q", b.Path("v"), p, readFile(t, filepath.Join(p, "f")))
	}
	wantList(t, res(b.ListSnapshots(ctx, "v")), "s")
	if got := readFile(t, filepath.Join(b.Path("c"), "f")); got != "old" {
		t.Fatalf("the clone of the replaced volume: %q", got)
	}
}

// testReopen: after an export (as at shutdown) New imports the pool from
// its file, mounts the volumes again and removes a receive left staging.
func testReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := zfs.Config{Path: filepath.Join(dir, "pool"), Pool: randomName("shoaltest"),
		File: filepath.Join(dir, "pool.img"), FileSize: 256 << 20}
	d := open(t, cfg)
	ok(t, d.CreateVolume(ctx, "containers/c1"))
	ok(t, os.WriteFile(filepath.Join(d.Path("containers/c1"), "f"), []byte("kept"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "containers/c1", "s1"))
	ok(t, d.SetQuota(ctx, "containers/c1", 64<<20))
	staged := cfg.Pool + "/shoal/internal/_rdeadbeef"
	zfsOut(t, "create", staged)
	// As at shutdown: the driver closes (its snapshot mounts go), the pool is exported.
	ok(t, d.Close())
	if out, err := exec.Command("zpool", "export", cfg.Pool).CombinedOutput(); err != nil {
		t.Fatalf("zpool export: %v %s", err, out)
	}
	d2, err := zfs.New(ctx, cfg)
	ok(t, err)
	for _, p := range []string{d2.Path("containers/c1"), d2.SnapshotPath("containers/c1", "s1")} {
		if got := readFile(t, filepath.Join(p, "f")); got != "kept" {
			t.Fatalf("%s/f after reopen: %q", p, got)
		}
	}
	if q := strings.TrimSpace(zfsOut(t, "get", "-H", "-p", "-o", "value", "refquota", cfg.Pool+"/shoal/volumes/containers_sc1")); q != "67108864" {
		t.Fatalf("refquota after reopen: %s", q)
	}
	if out, err := exec.Command("zfs", "list", staged).CombinedOutput(); err == nil {
		t.Fatalf("the staged receive survived New: %s", out)
	}
	wantList(t, res(d2.ListSnapshots(ctx, "containers/c1")), "s1")
}

// testDevice builds the pool on the VM's raw disk instead of a file. The
// VM runs no udev, which zpool needs to label a whole disk, so the pool
// goes on a partition (an MBR written here) of it.
func testDevice(t *testing.T) {
	dev := vm.Disk()
	if dev == "" {
		t.Skip("no raw disk (SHOAL_VM_DISK) outside the VM")
	}
	ctx := context.Background()
	part := partition(t, dev)
	cfg := zfs.Config{Path: filepath.Join(t.TempDir(), "pool"), Pool: randomName("shoaltest"), Device: part}
	d := open(t, cfg)
	ok(t, d.CreateVolume(ctx, "v"))
	ok(t, os.WriteFile(filepath.Join(d.Path("v"), "f"), []byte("x"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	ok(t, d.CloneSnapshot(ctx, "v", "s", "c"))
	if got := readFile(t, filepath.Join(d.Path("c"), "f")); got != "x" {
		t.Fatalf("clone on the device pool: %q", got)
	}
	out, err := exec.Command("zpool", "list", "-H", "-v", "-o", "name", cfg.Pool).CombinedOutput()
	if err != nil || !strings.Contains(string(out), filepath.Base(part)) {
		t.Fatalf("zpool list -v %s: %q %v", cfg.Pool, out, err)
	}
}

// partition writes an MBR with one partition spanning dev (from sector
// 2048) and returns the partition's device once the kernel has it.
func partition(t *testing.T, dev string) string {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	ok(t, err)
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	ok(t, err)
	mbr := make([]byte, 512)
	e := mbr[446:462]
	e[4] = 0xbf // Solaris/ZFS
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xaa
	_, err = f.WriteAt(mbr, 0)
	ok(t, err)
	ok(t, f.Sync())
	ok(t, unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0))
	part := dev + "1"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(part); err == nil {
			return part
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear after the partition table was written", part)
		}
	}
}
