package lvm_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/lvm"
	"github.com/shoal-dev/shoal/storage/storagetest"
	"github.com/shoal-dev/shoal/tests/vm"
)

// TestLVM is the driver's whole suite. Where the host has no
// device-mapper (these machines) it runs itself inside the VM of
// tests/vm; under CI=true a missing VM is a failure, not a skip.
func TestLVM(t *testing.T) {
	if !vm.InVM() && !haveDM() {
		vm.RunTest(context.Background(), t, vm.Options{})
		return
	}
	requirePrereqs(t)
	vg := sharedVG(t)
	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Driver { return newDriver(t, vg, false) })
	})
	t.Run("ProjectQuota", func(t *testing.T) { testProjectQuota(t, vg) })
	t.Run("Info", func(t *testing.T) { testInfo(t, vg) })
	t.Run("PoolUsed", func(t *testing.T) { testPoolUsed(t, vg) })
	t.Run("Reopen", testReopen)
	t.Run("Device", testDevice)
}

// sharedVG makes one VG on a loop file for the tests' pools, each a thin
// pool of its own in it (creating a VG costs seconds under TCG), and
// removes it when the test ends.
func sharedVG(t *testing.T) string {
	dir := t.TempDir()
	cfg := lvm.Config{Path: filepath.Join(dir, "base"), VolumeGroup: randomVG(), ThinPool: "base",
		PoolSize: 64 << 20, LoopFile: filepath.Join(dir, "vg.img"), LoopSize: 16 << 30}
	open(t, cfg)
	return cfg.VolumeGroup
}

func haveDM() bool {
	_, err := os.Stat("/dev/mapper/control")
	return err == nil
}

// requirePrereqs skips (or, with CI=true, fails) when this host cannot
// run LVM thin pools, saying what is missing.
func requirePrereqs(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (euid 0)")
	}
	for _, bin := range []string{"lvcreate", "vgcreate", "pvcreate", "thin_check", "mkfs.ext4", "losetup", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH")
		}
	}
	if !haveDM() {
		missing = append(missing, "/dev/mapper/control (device-mapper)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "lvm tests need: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func randomVG() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "shoaltest" + hex.EncodeToString(b[:])
}

// newDriver makes a fresh pool: a thin pool of its own in VG vg.
func newDriver(t *testing.T, vg string, quotas bool) *lvm.Driver {
	t.Helper()
	cfg := lvm.Config{
		Path:          filepath.Join(t.TempDir(), "pool"),
		VolumeGroup:   vg,
		ThinPool:      "p" + randomVG()[len("shoaltest"):],
		PoolSize:      512 << 20,
		VolumeSize:    256 << 20,
		ProjectQuotas: quotas,
	}
	return open(t, cfg)
}

// open opens a driver; cleanup destroys it and checks nothing is left:
// no thin pool (nor the VG and loop device when the driver made them),
// no mount.
func open(t *testing.T, cfg lvm.Config) *lvm.Driver {
	t.Helper()
	ctx := context.Background()
	d, err := lvm.New(ctx, cfg)
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

func checkGone(t *testing.T, cfg lvm.Config) {
	if cfg.LoopFile != "" || cfg.Device != "" {
		if out, err := exec.Command("vgs", cfg.VolumeGroup).CombinedOutput(); err == nil {
			t.Errorf("volume group %s left: %s", cfg.VolumeGroup, out)
		}
	} else if out, err := exec.Command("lvs", cfg.VolumeGroup+"/"+cfg.ThinPool).CombinedOutput(); err == nil {
		t.Errorf("thin pool %s/%s left: %s", cfg.VolumeGroup, cfg.ThinPool, out)
	}
	if cfg.LoopFile != "" {
		if out, _ := exec.Command("losetup", "-j", cfg.LoopFile).CombinedOutput(); len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("loop device left for %s: %s", cfg.LoopFile, out)
		}
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

func testInfo(t *testing.T, vg string) {
	if i := newDriver(t, vg, false).Info(); i.Name != "lvm" || !i.CoWClone || i.Quotas || i.OptimizedSend {
		t.Fatalf("Info() = %+v", i)
	}
	if i := newDriver(t, vg, true).Info(); !i.Quotas {
		t.Fatalf("Info() with project quotas = %+v", i)
	}
}

// testPoolUsed: what the thin pool has allocated grows with what a
// volume's writes take (the node's pool usage).
func testPoolUsed(t *testing.T, vg string) {
	ctx := context.Background()
	d := newDriver(t, vg, false)
	before, err := d.PoolUsed(ctx)
	ok(t, err)
	ok(t, d.CreateVolume(ctx, "v"))
	b := make([]byte, 16<<20)
	_, _ = rand.Read(b)
	f, err := os.Create(filepath.Join(d.Path("v"), "data"))
	ok(t, err)
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	ok(t, errors.Join(err, f.Close()))
	after, err := d.PoolUsed(ctx)
	ok(t, err)
	// The thin pool's figure is a percentage with two decimals of 512 MiB.
	if after < before+15<<20 {
		t.Fatalf("PoolUsed after writing 16 MiB: %d (before %d)", after, before)
	}
}

// testProjectQuota: a limit binds an unprivileged writer (as a container's
// mapped root is), survives a restore, and goes with 0.
func testProjectQuota(t *testing.T, vg string) {
	ctx := context.Background()
	d := newDriver(t, vg, true)
	ok(t, d.CreateVolume(ctx, "v"))
	p := d.Path("v")
	ok(t, os.Chown(p, 1000000, 1000000))
	// The writer must reach the volume through the test's 0700 temp dirs.
	for dir := filepath.Dir(p); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		ok(t, os.Chmod(dir, 0o755))
	}
	write := func(name string) error {
		cmd := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(p, name), "bs=1M", "count=8", "conv=fsync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000000, Gid: 1000000}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	ok(t, d.SetQuota(ctx, "v", 2<<20))
	if err := write("big"); err == nil {
		t.Fatal("an unprivileged writer put 8 MiB into a 2 MiB quota")
	} else if !strings.Contains(err.Error(), "quota") {
		t.Fatalf("writing past the quota: %v, want a quota error", err)
	}
	ok(t, os.Remove(filepath.Join(p, "big")))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	ok(t, d.RestoreSnapshot(ctx, "v", "s"))
	if err := write("big"); err == nil {
		t.Fatal("after restore, an unprivileged writer put 8 MiB into a 2 MiB quota")
	}
	ok(t, os.Remove(filepath.Join(p, "big")))
	ok(t, d.SetQuota(ctx, "v", 0))
	ok(t, write("big"))
	used, err := d.Usage(ctx, "v")
	ok(t, err)
	if used < 8<<20 || used > 9<<20 {
		t.Fatalf("Usage after 8 MiB: %d", used)
	}
}

// testReopen: after the pool's mounts are gone (a reboot), New mounts
// the volumes and snapshots again, and removes a receive left staging.
func testReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := lvm.Config{Path: filepath.Join(dir, "pool"), VolumeGroup: randomVG(),
		LoopFile: filepath.Join(dir, "pool.img"), LoopSize: 1 << 30, VolumeSize: 128 << 20, ProjectQuotas: true}
	d := open(t, cfg)
	ok(t, d.CreateVolume(ctx, "containers/c1"))
	ok(t, os.WriteFile(filepath.Join(d.Path("containers/c1"), "f"), []byte("kept"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "containers/c1", "s1"))
	ok(t, d.SetQuota(ctx, "containers/c1", 64<<20))
	for _, p := range []string{d.SnapshotPath("containers/c1", "s1"), d.Path("containers/c1")} {
		if out, err := exec.Command("umount", p).CombinedOutput(); err != nil {
			t.Fatalf("umount %s: %v %s", p, err, out)
		}
	}
	d2, err := lvm.New(ctx, cfg)
	ok(t, err)
	for _, p := range []string{d2.Path("containers/c1"), d2.SnapshotPath("containers/c1", "s1")} {
		if b, err := os.ReadFile(filepath.Join(p, "f")); err != nil || string(b) != "kept" {
			t.Fatalf("%s/f after reopen: %q %v", p, b, err)
		}
	}
	if err := d2.SetQuota(ctx, "containers/c1", 0); err != nil {
		t.Fatalf("SetQuota after reopen: %v", err)
	}
	if snaps, err := d2.ListSnapshots(ctx, "containers/c1"); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots after reopen: %v %v", snaps, err)
	}
}

// testDevice builds the pool on the VM's raw disk instead of a loop file.
func testDevice(t *testing.T) {
	dev := vm.Disk()
	if dev == "" {
		t.Skip("no raw disk (SHOAL_VM_DISK) outside the VM")
	}
	ctx := context.Background()
	cfg := lvm.Config{Path: filepath.Join(t.TempDir(), "pool"), VolumeGroup: randomVG(), Device: dev, VolumeSize: 128 << 20}
	d := open(t, cfg)
	ok(t, d.CreateVolume(ctx, "v"))
	ok(t, os.WriteFile(filepath.Join(d.Path("v"), "f"), []byte("x"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	ok(t, d.CloneSnapshot(ctx, "v", "s", "c"))
	if b, err := os.ReadFile(filepath.Join(d.Path("c"), "f")); err != nil || string(b) != "x" {
		t.Fatalf("clone on the device pool: %q %v", b, err)
	}
	out, err := exec.Command("pvs", "--noheadings", "-o", "vg_name", dev).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != cfg.VolumeGroup {
		t.Fatalf("pvs %s: %q %v", dev, out, err)
	}
}
