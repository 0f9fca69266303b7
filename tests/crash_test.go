package tests

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/tests/harness"
)

// crashCase is one cell of the crash matrix: shoald is killed (-9, by
// the failpoint's exit action) at failpoint while op runs, then started
// again without it.
type crashCase struct {
	op, failpoint string
	// setup prepares what op needs; run is the CLI call the crash cuts.
	setup func(t *testing.T, d *harness.Daemon, name string)
	run   func(name string) []string
	// check, when set, says what is wrong with the outcome beyond the
	// invariants ("" when nothing).
	check func(t *testing.T, d *harness.Daemon, name string) string
}

// TestCrashMatrix kills shoald at each failpoint of each multi-step host
// operation, restarts it, and checks that the daemon converges without a
// person: the operation completed or left no trace, every container the
// cluster records exists on the host exactly once (LXC definition and
// volume) in its desired state, and the host holds nothing the cluster
// does not know (containers, volumes, snapshots, work volumes of
// publishes, images).
func TestCrashMatrix(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	launched := func(t *testing.T, d *harness.Daemon, name string) { d.MustShoal("launch", "busybox", name) }
	stopped := func(t *testing.T, d *harness.Daemon, name string) { d.MustShoal("init", "busybox", name) }
	withSnap := func(t *testing.T, d *harness.Daemon, name string) {
		d.MustShoal("init", "busybox", name)
		d.MustShoal("snapshot", "create", name, "s0")
	}
	// An image to import: a container's, exported and deleted again.
	tarball := filepath.Join(t.TempDir(), "image.tar")
	exported := func(t *testing.T, d *harness.Daemon, name string) {
		d.MustShoal("init", "busybox", name+"-src")
		d.MustShoal("publish", name+"-src", "--alias", name+"-exp")
		d.MustShoal("image", "export", name+"-exp", tarball)
		d.MustShoal("image", "delete", name+"-exp")
		d.MustShoal("delete", name+"-src")
	}
	// A restore: the snapshot has neither the config key nor the file
	// written after it; the outcome must be all of the snapshot or none.
	marker := func(d *harness.Daemon, name string) string {
		return filepath.Join(d.StateDir, "storage-pools", "default", "volumes", "containers%2F"+name, "marker")
	}
	changedAfterSnap := func(t *testing.T, d *harness.Daemon, name string) {
		withSnap(t, d, name)
		d.MustShoal("config", "set", name, "user.mark=after")
		if err := os.WriteFile(marker(d, name), []byte("after"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	restoredOrNot := func(t *testing.T, d *harness.Daemon, name string) string {
		mark := strings.TrimSpace(d.MustShoal("config", "get", name, "user.mark"))
		_, err := os.Stat(marker(d, name))
		switch {
		case mark == "" && os.IsNotExist(err), mark == "after" && err == nil:
			return ""
		}
		return fmt.Sprintf("half a restore: config user.mark=%q, file written after the snapshot present: %v", mark, err == nil)
	}
	cases := []crashCase{
		{op: "create", failpoint: "create-after-volume", run: func(n string) []string { return []string{"launch", "busybox", n} }},
		{op: "create", failpoint: "start-after-define", run: func(n string) []string { return []string{"launch", "busybox", n} }},
		{op: "start", failpoint: "start-after-define", setup: stopped, run: func(n string) []string { return []string{"start", n} }},
		{op: "stop", failpoint: "stop-before-stop", setup: launched, run: func(n string) []string { return []string{"stop", n, "--force"} }},
		{op: "delete", failpoint: "delete-after-undefine", setup: stopped, run: func(n string) []string { return []string{"delete", n} }},
		{op: "snapshot create", failpoint: "snapshot-after-volume", setup: stopped, run: func(n string) []string { return []string{"snapshot", "create", n, "s1"} }},
		{op: "snapshot delete", failpoint: "snapshot-delete-after-volume", setup: withSnap, run: func(n string) []string { return []string{"snapshot", "delete", n, "s0"} }},
		{op: "snapshot restore", failpoint: "restore-after-commit", setup: changedAfterSnap, check: restoredOrNot, run: func(n string) []string { return []string{"snapshot", "restore", n, "s0"} }},
		{op: "copy", failpoint: "copy-after-volume", setup: stopped, run: func(n string) []string { return []string{"copy", n, n + "-copy"} }},
		{op: "publish", failpoint: "publish-after-clone", setup: stopped, run: func(n string) []string { return []string{"publish", n, "--alias", n + "-img"} }},
		{op: "publish", failpoint: "image-after-store", setup: stopped, run: func(n string) []string { return []string{"publish", n, "--alias", n + "-img"} }},
		{op: "image import", failpoint: "image-after-store", setup: exported, run: func(n string) []string { return []string{"image", "import", tarball, "--alias", n + "-imp"} }},
	}
	converged := 0
	for i, c := range cases {
		name := fmt.Sprintf("%s-%d", uniq("crash"), i)
		t.Run(strings.ReplaceAll(c.op, " ", "-")+"/"+c.failpoint, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t, d, name)
			}
			d.Opts.Env = []string{"SHOAL_FAILPOINTS=" + c.failpoint + "=once:exit"}
			d.Kill()
			d.Start()
			_, errOut, code := d.Shoal(c.run(name)...)
			if !d.WaitExit(30 * time.Second) {
				t.Fatalf("%s did not reach failpoint %s (exit %d, %s)", c.op, c.failpoint, code, strings.TrimSpace(errOut))
			}
			if code == 0 {
				t.Errorf("%s reported success although shoald died at %s", c.op, c.failpoint)
			}
			d.Opts.Env = nil
			d.Start()
			var problems []string
			deadline := time.Now().Add(30 * time.Second)
			for {
				if problems = crashInvariants(t, d); len(problems) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
			if c.check != nil {
				if p := c.check(t, d, name); p != "" {
					problems = append(problems, p)
				}
			}
			if len(problems) > 0 {
				t.Fatalf("after a crash at %s during %s, shoald did not converge within 30 s:\n  %s", c.failpoint, c.op, strings.Join(problems, "\n  "))
			}
			converged++
			t.Logf("crash at %s during %s: converged (%s)", c.failpoint, c.op, outcome(d, name))
		})
	}
	t.Logf("crash matrix: %d cases, %d converged without a person", len(cases), converged)
}

// outcome says, for the log, whether the cut operation completed.
func outcome(d *harness.Daemon, name string) string {
	l := d.List()
	var have []string
	for n, c := range l {
		if strings.HasPrefix(n, name) {
			snaps := []string{}
			for _, s := range c.Container.Snapshot {
				snaps = append(snaps, s.Name)
			}
			have = append(have, fmt.Sprintf("%s %s snapshots %v", n, c.State.Status, snaps))
		}
	}
	sort.Strings(have)
	if len(have) == 0 {
		return "no trace of " + name
	}
	return strings.Join(have, "; ")
}

// crashInvariants lists what is inconsistent between the cluster's records
// and the host.
func crashInvariants(t *testing.T, d *harness.Daemon) []string {
	t.Helper()
	ctx := context.Background()
	var problems []string
	var resp struct {
		Containers []struct {
			Container struct {
				Name         string
				Pool         string
				DesiredState string `json:"desired_state"`
				Snapshots    []struct{ Name string }
			}
			State struct{ Status string }
		}
	}
	out, errOut, code := d.Shoal("list", "--format", "json")
	if code != 0 {
		return []string{"shoal list: " + strings.TrimSpace(errOut)}
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("shoal list --format json: %v", err)
	}
	// The LXC definitions shoald writes (runtime.List reads the same).
	confs, err := filepath.Glob(filepath.Join(d.StateDir, "lxc-config", "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var defined []string
	for _, c := range confs {
		defined = append(defined, strings.TrimSuffix(filepath.Base(c), ".conf"))
	}
	// Every btrfs pool of this daemon, by name, with its volumes.
	drivers := map[string]*btrfs.Driver{}
	vols := map[string][]string{}
	mounts, _ := filepath.Glob(filepath.Join(d.StateDir, "storage-pools", "*"))
	for _, m := range mounts {
		drv, err := btrfs.New(ctx, btrfs.Config{Path: m, DisableQuotas: true})
		if err != nil {
			continue // not a btrfs pool
		}
		defer drv.Close()
		pool := filepath.Base(m)
		drivers[pool] = drv
		if vols[pool], err = drv.ListVolumes(ctx, "containers/"); err != nil {
			t.Fatal(err)
		}
	}
	known := map[string]bool{}
	for _, c := range resp.Containers {
		ct := c.Container
		known[ct.Name] = true
		if !slices.Contains(defined, ct.Name) {
			problems = append(problems, ct.Name+": recorded, but no LXC definition on the host")
		}
		pool := cmp.Or(ct.Pool, "default")
		drv := drivers[pool]
		if drv == nil {
			t.Fatalf("%s: pool %s is not a btrfs pool of this daemon", ct.Name, pool)
		}
		if !slices.Contains(vols[pool], "containers/"+ct.Name) {
			problems = append(problems, ct.Name+": recorded, but no volume in pool "+pool)
			continue
		}
		want := "Stopped"
		if strings.HasSuffix(ct.DesiredState, "RUNNING") {
			want = "Running"
		}
		if !strings.EqualFold(c.State.Status, want) {
			problems = append(problems, fmt.Sprintf("%s: %s, desired %s", ct.Name, c.State.Status, want))
		}
		var recorded []string
		for _, s := range ct.Snapshots {
			recorded = append(recorded, s.Name)
		}
		onDisk, err := drv.ListSnapshots(ctx, "containers/"+ct.Name)
		if err != nil {
			t.Fatal(err)
		}
		onDisk = slices.DeleteFunc(onDisk, func(s string) bool { return strings.HasPrefix(s, "ha-") })
		sort.Strings(recorded)
		sort.Strings(onDisk)
		if !slices.Equal(recorded, onDisk) {
			problems = append(problems, fmt.Sprintf("%s: snapshots recorded %v, on disk %v", ct.Name, recorded, onDisk))
		}
	}
	for _, n := range defined {
		if !known[n] {
			problems = append(problems, n+": an LXC definition the cluster does not record")
		}
	}
	for pool, drv := range drivers {
		for _, v := range vols[pool] {
			if !known[strings.TrimPrefix(v, "containers/")] {
				problems = append(problems, v+": a volume the cluster does not record, in pool "+pool)
			}
		}
		tmp, err := drv.ListVolumes(ctx, "tmp/")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range tmp {
			problems = append(problems, v+": a work volume left behind, in pool "+pool)
		}
	}
	var imgs struct {
		Images []struct{ Fingerprint string }
	}
	if err := json.Unmarshal([]byte(d.MustShoal("image", "list", "--format", "json")), &imgs); err != nil {
		t.Fatalf("image list --format json: %v", err)
	}
	recordedImgs := map[string]bool{}
	for _, im := range imgs.Images {
		recordedImgs[im.Fingerprint] = true
	}
	stored, _ := filepath.Glob(filepath.Join(d.StateDir, "images", "*"))
	for _, f := range stored {
		fp := filepath.Base(f)
		if strings.Contains(fp, ".") {
			continue // records (.yaml) and the temporary directory
		}
		if !recordedImgs[fp] {
			problems = append(problems, "image "+fp[:12]+": in the host's store, not in the cluster's records")
		}
	}
	return problems
}

// TestFullPool fills a small loop pool from inside a container: the write
// fails with ENOSPC; operations on the full pool then either work or fail
// with an error that says space is short, and leave the records and the
// host in agreement; what was written before is intact, and once space
// returns everything works again.
func TestFullPool(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	pool, c := uniq("full"), uniq("fill")
	d.MustShoal("storage", "create", pool, "btrfs", "size=300MiB")
	d.MustShoal("launch", "busybox", c, "-s", pool)
	t.Cleanup(func() {
		for _, n := range []string{c, c + "-copy", c + "-2"} {
			d.Shoal("delete", "-f", n)
		}
	})
	d.MustShoal("exec", c, "--", "sh", "-c", "echo precious > /precious")
	_, errOut, code := d.Shoal("exec", c, "--", "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=400")
	if code == 0 || !strings.Contains(errOut, "No space left") {
		t.Fatalf("dd of 400 MiB into a 300 MiB pool: exit %d, %q; want ENOSPC", code, errOut)
	}
	for _, args := range [][]string{
		{"snapshot", "create", c, "on-full"},
		{"copy", c, c + "-copy"},
		{"launch", "busybox", c + "-2", "-s", pool},
		{"exec", c, "--", "sh", "-c", "echo more >> /precious"},
	} {
		_, errOut, code := d.Shoal(args...)
		if code != 0 && !strings.Contains(strings.ToLower(errOut), "space") {
			t.Errorf("%s on a full pool: exit %d, %q; want success or an error naming the lack of space", strings.Join(args, " "), code, strings.TrimSpace(errOut))
		}
		t.Logf("%s on a full pool: exit %d %s", strings.Join(args, " "), code, strings.TrimSpace(errOut))
	}
	if problems := crashInvariants(t, d); len(problems) > 0 {
		t.Fatalf("with the pool full, the records and the host disagree:\n  %s", strings.Join(problems, "\n  "))
	}
	if got := d.MustShoal("exec", c, "--", "head", "-n1", "/precious"); got != "precious\n" {
		t.Fatalf("what was written before the pool filled: %q", got)
	}

	// Space returns (the file goes, and the snapshot that holds it too):
	// everything works.
	d.MustShoal("exec", c, "--", "rm", "/fill")
	if _, _, code := d.Shoal("snapshot", "delete", c, "on-full"); code != 0 {
		t.Log("no snapshot on-full to delete")
	}
	d.Shoal("delete", "-f", c+"-copy")
	d.Shoal("delete", "-f", c+"-2")
	d.MustShoal("exec", c, "--", "sync")
	// btrfs gives a deleted subvolume's space back once its cleaner has
	// run (subvolume sync waits for it).
	mnt := filepath.Join(d.StateDir, "storage-pools", pool)
	d.WaitFor("the pool's space to return", 180*time.Second, func() bool {
		_ = exec.Command("btrfs", "subvolume", "sync", mnt).Run()
		_ = exec.Command("sync").Run()
		_, _, code := d.Shoal("exec", c, "--", "sh", "-c", "dd if=/dev/zero of=/after bs=1M count=20; r=$?; rm -f /after; exit $r")
		return code == 0
	})
	d.MustShoal("snapshot", "create", c, "after")
	d.MustShoal("copy", c, c+"-copy")
	d.MustShoal("launch", "busybox", c+"-2", "-s", pool)
	if problems := crashInvariants(t, d); len(problems) > 0 {
		t.Fatalf("once space returned, the records and the host disagree:\n  %s", strings.Join(problems, "\n  "))
	}
}

// TestColdMoveCrash kills the source's shoald during a cold move of a
// running container: before the commit (the container is stopped, the
// target has received the volume) and after it (the source still holds
// its copy). Once the source is back, the container runs exactly once: on
// the source, the target's received copy dropped, in the first case; on
// the target, the source's copy dropped, in the second.
func TestColdMoveCrash(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1, n2 := ms[0], ms[1]
	n1.MustShoal("image", "build", "busybox")
	for _, tc := range []struct {
		failpoint string
		owner     *member
	}{{"cold-move-before-commit", n1}, {"cold-move-before-drop", n2}} {
		t.Run(tc.failpoint, func(t *testing.T) {
			name := uniq("cold")
			n1.MustShoal("launch", "busybox", name, "--target", "n1")
			restartWith(n1, tc.failpoint+"=once:exit")
			if _, errOut, code := n1.Shoal("move", name, "--target", "n2"); code == 0 {
				t.Fatalf("the move reported success although the source died at %s", tc.failpoint)
			} else {
				t.Logf("move with the source killed at %s: exit %d, %s", tc.failpoint, code, strings.TrimSpace(errOut))
			}
			if !n1.WaitExit(30 * time.Second) {
				t.Fatalf("shoald on n1 did not reach %s", tc.failpoint)
			}
			restartWith(n1, "")
			other := n2
			if tc.owner == n2 {
				other = n1
			}
			n1.WaitFor(name+" running on "+tc.owner.Opts.Name, 60*time.Second, func() bool {
				row := n1.List()[name]
				return row.Container.Node == tc.owner.Opts.Name && row.State.Status == "Running"
			})
			tc.owner.WaitFor(name+" on "+tc.owner.Opts.Name, 60*time.Second, func() bool { return hasLocalCopy(tc.owner, name) })
			other.WaitFor("no copy of "+name+" on "+other.Opts.Name, 90*time.Second, func() bool { return !hasLocalCopy(other, name) })
			n1.MustShoal("delete", "-f", name)
		})
	}
}
