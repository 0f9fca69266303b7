package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestBackups exports a container with a snapshot, plain and optimized,
// deletes it, imports each back (same files, now and in the snapshot;
// snapshots listed; config kept), imports under a new name, and refuses
// an existing name, a corrupted tarball and an optimized backup into a
// dir pool, leaving no container behind.
func TestBackups(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c1, c2, c3 := uniq("bk"), uniq("bkn"), uniq("bkx")
	dirPool := uniq("bkdir")
	t.Cleanup(func() { d.Shoal("delete", "-f", c1, c2, c3) })
	work := t.TempDir()
	plain, opt, none := filepath.Join(work, "plain.tar.gz"), filepath.Join(work, "opt.tar.gz"), filepath.Join(work, "none.tar")

	d.MustShoal("launch", "busybox", c1, "-c", "limits.memory=200MiB", "-c", "user.note=kept")
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo before > /root/f && mkdir -p /srv/d && ln -s /root/f /srv/d/l")
	d.MustShoal("snapshot", "create", c1, "s1")
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo after > /root/f")

	// Running: exported from a snapshot taken at the start.
	out := d.MustShoal("export", c1, plain)
	if !strings.Contains(out, "1 snapshots") || !strings.Contains(out, "plain") {
		t.Fatalf("export output: %q", out)
	}
	if snaps := d.MustShoal("snapshot", "list", c1); strings.Contains(snaps, "backup-") {
		t.Fatalf("the export's snapshot is listed or left behind:\n%s", snaps)
	}
	d.MustShoal("stop", c1)
	if out := d.MustShoal("export", c1, opt, "--optimized-storage"); !strings.Contains(out, "optimized btrfs") {
		t.Fatalf("optimized export output: %q", out)
	}
	d.MustShoal("export", c1, none, "--compression", "none", "--instance-only")
	listing := mustHost(t, "tar", "tzf", plain)
	for _, want := range []string{"backup/index.yaml", "backup/snapshots/s1/root/f", "backup/container/root/f"} {
		if !strings.Contains(listing, want) {
			t.Fatalf("plain tarball lacks %s:\n%.2000s", want, listing)
		}
	}
	if l := mustHost(t, "tar", "tzf", opt); !strings.Contains(l, "backup/snapshots/s1.bin") || !strings.Contains(l, "backup/container.bin") {
		t.Fatalf("optimized tarball:\n%s", l)
	}
	if l := mustHost(t, "tar", "tf", none); strings.Contains(l, "snapshots") || !strings.Contains(l, "backup/container/root/f") {
		t.Fatalf("--instance-only --compression none tarball:\n%.2000s", l)
	}

	for _, file := range []string{plain, opt} {
		d.MustShoal("delete", "-f", c1)
		out := d.MustShoal("import", file)
		if !strings.Contains(out, c1) {
			t.Fatalf("import %s: %q", file, out)
		}
		checkImported(t, d, c1, true)
	}

	// Under a new name, while the original exists; then the existing name.
	d.MustShoal("import", plain, c2)
	checkImported(t, d, c2, true)
	mustFail(t, d, "already exists", "import", plain, c1)
	mustFail(t, d, "already exists", "import", opt)
	d.MustShoal("import", none, c3)
	if got := d.MustShoal("snapshot", "list", c3); strings.Contains(got, "s1") {
		t.Fatalf("--instance-only backup brought snapshots:\n%s", got)
	}
	d.MustShoal("delete", "-f", c3)

	// Bad tarballs leave nothing.
	b, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(work, "corrupt.tar.gz")
	bad := append([]byte{}, b...)
	for i := len(bad) / 2; i < len(bad)/2+64; i++ {
		bad[i] ^= 0x5a
	}
	os.WriteFile(corrupt, bad, 0o644)
	mustFail(t, d, "invalid backup", "import", corrupt, c3)
	truncated := filepath.Join(work, "truncated.tar.gz")
	os.WriteFile(truncated, b[:len(b)*2/3], 0o644)
	mustFail(t, d, "truncated", "import", truncated, c3)
	notBackup := filepath.Join(work, "image.tar.gz")
	d.MustShoal("image", "export", "busybox", notBackup)
	mustFail(t, d, "backup/index.yaml", "import", notBackup, c3)

	// An optimized btrfs backup does not go into a dir pool.
	d.MustShoal("storage", "create", dirPool, "dir")
	mustFail(t, d, "dir driver", "import", opt, c3, "--storage", dirPool)
	// A plain one does.
	d.MustShoal("import", plain, c3, "--storage", dirPool)
	checkImported(t, d, c3, false)
	mustFail(t, d, "no optimized format", "export", c3, filepath.Join(work, "x.tar.gz"), "--optimized-storage")
	d.MustShoal("delete", "-f", c3)
	d.MustShoal("import", "--storage", dirPool, none, c3)
	d.MustShoal("delete", "-f", c3)
	if _, ok := d.List()[c3]; ok {
		t.Fatalf("%s exists after failed imports", c3)
	}
	if recs := d.Records(); strings.Contains(recs, c3) {
		t.Fatalf("the cluster still records %s", c3)
	}
	if left := mustHost(t, "find", filepath.Join(d.StateDir, "storage-pools"), "-maxdepth", "4", "-name", "*"+c3+"*"); strings.TrimSpace(left) != "" {
		t.Fatalf("left by the failed imports:\n%s", left)
	}
	d.MustShoal("export", c2, filepath.Join(work, "again.tar.gz"), "--optimized-storage")
	mustFail(t, d, "not found", "export", uniq("nosuch"), filepath.Join(work, "x.tar.gz"))
	mustFail(t, d, "compression", "export", c2, filepath.Join(work, "x.tar.gz"), "--compression", "zip")
}

// mustHost runs a host command that must succeed.
func mustHost(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := hostRun(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// checkImported checks a container imported from the backup the test
// made: stopped, config kept, files as exported, the snapshot listed and
// restorable to its files.
func checkImported(t *testing.T, d *harness.Daemon, name string, checkRestore bool) {
	t.Helper()
	if st := d.List()[name].State.Status; st != "Stopped" {
		t.Fatalf("imported %s is %q, want Stopped", name, st)
	}
	if got := d.MustShoal("config", "get", name, "user.note"); strings.TrimSpace(got) != "kept" {
		t.Fatalf("user.note = %q", got)
	}
	if got := d.MustShoal("config", "get", name, "limits.memory"); strings.TrimSpace(got) != "200MiB" {
		t.Fatalf("limits.memory = %q", got)
	}
	if snaps := d.MustShoal("snapshot", "list", name); !strings.Contains(snaps, "s1") {
		t.Fatalf("snapshot list:\n%s", snaps)
	}
	d.MustShoal("start", name)
	if got := d.MustShoal("exec", name, "--", "cat", "/root/f"); got != "after\n" {
		t.Fatalf("/root/f = %q, want the current content", got)
	}
	if got := d.MustShoal("exec", name, "--", "readlink", "/srv/d/l"); got != "/root/f\n" {
		t.Fatalf("symlink = %q", got)
	}
	if got := d.MustShoal("exec", name, "--", "stat", "-c", "%u:%g", "/root/f"); got != "0:0\n" {
		t.Fatalf("owner inside = %q, want 0:0", got)
	}
	if !checkRestore {
		d.MustShoal("stop", name)
		return
	}
	d.MustShoal("snapshot", "restore", name, "s1")
	if got := d.MustShoal("exec", name, "--", "cat", "/root/f"); got != "before\n" {
		t.Fatalf("after restoring s1, /root/f = %q", got)
	}
	d.MustShoal("stop", name)
}
