package tests

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/storage/btrfs"
)

// TestBadInput checks that bad input gets one clear line naming the field,
// a non-zero exit, and changes nothing.
func TestBadInput(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	ok := uniq("ok")
	d.MustShoal("launch", "busybox", ok, "-c", "limits.memory=128MiB")
	before := d.Records()
	beforeImages := d.MustShoal("image", "list", "--format", "json")

	for _, tc := range []struct {
		args []string
		want string // substring of the error line
	}{
		{[]string{"launch", "busybox", "1bad"}, "name"},
		{[]string{"launch", "busybox", "bad_name"}, "name"},
		{[]string{"launch", "busybox", "x", "-c", "limits.memory=lots"}, "limits.memory"},
		{[]string{"launch", "busybox", "x", "-c", "limits.cpu=0"}, "limits.cpu"},
		{[]string{"launch", "busybox", "x", "-c", "limits.bogus=1"}, "limits.bogus"},
		{[]string{"launch", "busybox", "x", "-c", "security.privileged=maybe"}, "security.privileged"},
		{[]string{"launch", "busybox", "x", "-c", "novalue"}, "KEY=VALUE"},
		{[]string{"launch", "no-such-image", "x"}, "image"},
		{[]string{"launch", "busybox", ok}, "already exists"},
		{[]string{"config", "set", ok, "limits.processes=-5"}, "limits.processes"},
		{[]string{"config", "set", ok, "security.privileged=true"}, "security.privileged"},
		{[]string{"config", "set", "missing-ct", "limits.processes=5"}, "not found"},
		{[]string{"snapshot", "create", ok, "bad/snap"}, "snapshot"},
		{[]string{"snapshot", "restore", ok, "nosuch"}, "not found"},
		{[]string{"image", "build", "gentoo"}, "builder"},
		{[]string{"image", "build", "debian", "--suite", "sid"}, "suite"},
		{[]string{"list", "--format", "xml"}, "--format"},
		{[]string{"storage", "create", "p2", "xfs"}, "driver"},
		{[]string{"exec", "missing-ct", "--", "true"}, "not found"},
		{[]string{"start", "missing-ct"}, "not found"},
		{[]string{"delete", ok}, "force"},
		{[]string{"file", "pull", "nopath", "/tmp"}, "NAME/PATH"},
	} {
		stdout, stderr, code := d.Shoal(tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("shoal %s: code=%d stdout=%q stderr=%q; want one 'Error:' line containing %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
	if after := d.Records(); after != before {
		t.Errorf("bad input changed the containers:\nbefore %s\nafter  %s", before, after)
	}
	if after := d.MustShoal("image", "list", "--format", "json"); after != beforeImages {
		t.Errorf("bad input changed the images")
	}
	if got := d.MustShoal("config", "get", ok, "limits.memory"); got != "128MiB\n" {
		t.Errorf("config after rejected sets: %q", got)
	}
	var body struct{ Code int }
	if code := d.REST("POST", "/v1/containers", map[string]any{"name": "9x", "image": "busybox"}, &body); code != 400 || body.Code != 3 {
		t.Errorf("REST bad name: HTTP %d code %d, want 400 / InvalidArgument(3)", code, body.Code)
	}
}

// hostIOWeights is the test's own look at the host: I/O weights
// (limits.disk.priority) exist where a block device offers the BFQ
// scheduler. It returns that and the schedulers offered.
func hostIOWeights(t *testing.T) (bool, string) {
	t.Helper()
	files, err := filepath.Glob("/sys/block/*/queue/scheduler")
	if err != nil || len(files) == 0 {
		t.Fatalf("no /sys/block/*/queue/scheduler: %v", err)
	}
	var offered []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range strings.Fields(string(b)) {
			if s = strings.Trim(s, "[]"); !slices.Contains(offered, s) {
				offered = append(offered, s)
			}
		}
	}
	return slices.Contains(offered, "bfq"), strings.Join(offered, " ")
}

// TestLimitsEnforced shows each limit enforced by the kernel, and
// limits.disk.priority refused, in one line saying why, where the host has
// no BFQ scheduler to enforce it.
func TestLimitsEnforced(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c := uniq("lim")
	bfq, offered := hostIOWeights(t)
	t.Logf("block devices offer: %s (BFQ: %v)", offered, bfq)
	noBFQ := "limits.disk.priority: this host cannot enforce I/O weights (no BFQ scheduler on its block devices; offered: " + offered + ")"
	launch := []string{"launch", "busybox", c, "-c", "limits.memory=64MiB", "-c", "limits.processes=30",
		"-c", "limits.cpu.allowance=20%", "-c", "limits.cpu=1"}
	withPriority := append(slices.Clone(launch), "-c", "limits.disk.priority=8")
	if bfq {
		d.MustShoal(withPriority...)
	} else {
		before := d.Records()
		_, errOut, code := d.Shoal(withPriority...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") || !strings.Contains(lines[0], noBFQ) {
			t.Fatalf("launch with limits.disk.priority on a host without BFQ: exit %d, stderr %q; want one line with %q", code, errOut, noBFQ)
		}
		t.Logf("launch refused: %s", lines[0])
		var body struct{ Code int }
		req := map[string]any{"name": c, "image": "busybox", "config": map[string]string{"limits.disk.priority": "8"}}
		if code := d.REST("POST", "/v1/containers", req, &body); code != 400 || body.Code != 9 {
			t.Errorf("REST create with limits.disk.priority: HTTP %d code %d, want 400 / FailedPrecondition(9)", code, body.Code)
		}
		if after := d.Records(); after != before {
			t.Fatalf("the refused launch changed the containers:\nbefore %s\nafter  %s", before, after)
		}
		d.MustShoal(launch...)
	}
	pid := pidOf(t, d, c)

	// Memory: a 100 MiB allocation under a 64 MiB limit (swap off) is killed.
	if _, _, code := d.Shoal("exec", c, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"); code == 0 {
		t.Error("a 100MiB allocation succeeded under limits.memory=64MiB")
	}
	if _, _, code := d.Shoal("exec", c, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=1"); code != 0 {
		t.Error("a 16MiB allocation failed under limits.memory=64MiB")
	}
	if got := hostCgroup(t, pid, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
		t.Errorf("memory.limit_in_bytes = %s", got)
	}

	// Processes: a fork loop stops at the limit.
	d.Shoal("exec", c, "--", "sh", "-c", "for i in $(seq 60); do sleep 60 >/dev/null 2>&1 </dev/null & done 2>/dev/null; true")
	procs, _ := strconv.Atoi(hostCgroup(t, pid, "pids", "pids.current"))
	events := hostCgroup(t, pid, "pids", "pids.events")
	if procs < 20 || procs > 30 || events == "max 0" {
		t.Errorf("after a fork loop: pids.current=%d (want 20..30), pids.events=%q (want forks refused)", procs, events)
	}
	// At the limit even an exec cannot fork: raise it live, then clean up.
	if _, _, code := d.Shoal("exec", c, "--", "true"); code == 0 {
		t.Error("exec succeeded with the process limit exhausted")
	}
	d.MustShoal("config", "set", c, "limits.processes=500")
	if got := hostCgroup(t, pid, "pids", "pids.max"); got != "500" {
		t.Errorf("pids.max after a live change = %s", got)
	}
	d.MustShoal("exec", c, "--", "killall", "sleep")

	// CPU: a busy loop at 20% allowance gets throttled.
	d.Shoal("exec", c, "--", "timeout", "1", "sh", "-c", "while :; do :; done")
	stat := hostCgroup(t, pid, "cpu", "cpu.stat")
	if !strings.Contains(stat, "nr_throttled") || strings.Contains(stat, "nr_throttled 0\n") {
		t.Errorf("cpu.stat shows no throttling:\n%s", stat)
	}
	if got := hostCgroup(t, pid, "cpuset", "cpuset.cpus"); got != "0" {
		t.Errorf("cpuset.cpus = %q, want 0", got)
	}

	if bfq {
		if got := hostCgroup(t, pid, "blkio", "blkio.bfq.weight"); !strings.HasSuffix(got, "800") {
			t.Errorf("blkio.bfq.weight for limits.disk.priority=8 = %q, want 800", got)
		}
		d.MustShoal("config", "set", c, "limits.disk.priority=5")
		if got := hostCgroup(t, pid, "blkio", "blkio.bfq.weight"); !strings.HasSuffix(got, "500") {
			t.Errorf("blkio.bfq.weight after a live limits.disk.priority=5 = %q, want 500", got)
		}
	} else {
		before := d.Records()
		_, errOut, code := d.Shoal("config", "set", c, "limits.disk.priority=5")
		if code == 0 || strings.TrimSpace(errOut) != "Error: "+noBFQ {
			t.Errorf("config set limits.disk.priority on a host without BFQ: exit %d, stderr %q; want %q", code, errOut, "Error: "+noBFQ)
		}
		t.Logf("config set refused: %s", strings.TrimSpace(errOut))
		if after := d.Records(); after != before {
			t.Errorf("the refused config set changed the containers:\nbefore %s\nafter  %s", before, after)
		}
		if got := d.List()[c].State.Status; got != "Running" || pidOf(t, d, c) != pid {
			t.Errorf("after the refused set: status %s, pid %d (was %d)", got, pidOf(t, d, c), pid)
		}
	}

	// Live change: raise the memory limit on the running container.
	d.MustShoal("config", "set", c, "limits.memory=128MiB")
	if got := hostCgroup(t, pid, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Errorf("memory.limit_in_bytes after live change = %s", got)
	}
	if _, errOut, code := d.Shoal("exec", c, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"); code != 0 {
		t.Errorf("a 100MiB allocation failed after raising the limit to 128MiB: exit %d %s (memsw limit %s, usage %s)", code, errOut,
			hostCgroup(t, pid, "memory", "memory.memsw.limit_in_bytes"), hostCgroup(t, pid, "memory", "memory.usage_in_bytes"))
	}
}

// TestConfinement shows root in an unprivileged container is not root on
// the host, seccomp is applied, and privileged containers opt out.
func TestConfinement(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c := uniq("unpriv")
	d.MustShoal("launch", "busybox", c)
	d.MustShoal("exec", c, "--", "touch", "/root/made-inside")
	pid := pidOf(t, d, c)
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/root/root/made-inside", &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000000 || st.Gid != 1000000 {
		t.Errorf("file made by root in the container is %d:%d on the host, want 1000000:1000000", st.Uid, st.Gid)
	}
	if out, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/uid_map"); !strings.Contains(string(out), "1000000") {
		t.Errorf("uid_map = %q", out)
	}
	// A block device cannot be made or mounted; kexec/module loading is filtered.
	if _, _, code := d.Shoal("exec", c, "--", "mknod", "/tmp/blk", "b", "7", "0"); code == 0 {
		t.Error("mknod of a block device succeeded in an unprivileged container")
	}
	if _, _, code := d.Shoal("exec", c, "--", "mount", "-t", "ext4", "/dev/loop0", "/mnt"); code == 0 {
		t.Error("mount of a block device succeeded")
	}
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !strings.Contains(string(status), "Seccomp:\t2") {
		t.Errorf("container init has no seccomp filter:\n%s", status)
	}

	p := uniq("priv")
	d.MustShoal("launch", "busybox", p, "-c", "security.privileged=true")
	d.MustShoal("exec", p, "--", "touch", "/root/made-inside")
	ppid := pidOf(t, d, p)
	if err := syscall.Stat("/proc/"+strconv.Itoa(ppid)+"/root/root/made-inside", &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 {
		t.Errorf("privileged container's root file is uid %d on the host, want 0", st.Uid)
	}
	pstatus, _ := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/status")
	if !strings.Contains(string(pstatus), "Seccomp:\t2") {
		t.Error("privileged container has no seccomp filter")
	}
}

// TestDaemonKillRestart kills shoald with SIGKILL while containers run and
// restarts it: the same containers, in the same state, with the same init
// processes, and no duplicates.
func TestDaemonKillRestart(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	run, stopped := uniq("run"), uniq("stopped")
	d.MustShoal("launch", "busybox", run)
	d.MustShoal("init", "busybox", stopped)
	d.MustShoal("snapshot", "create", run, "snap0")
	pid := pidOf(t, d, run)

	d.Kill()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("container init died with the daemon: %v", err)
	}
	d.Start()
	l := d.List()
	if len(l) != 2 {
		t.Fatalf("after restart: %d containers, want 2: %v", len(l), l)
	}
	if l[run].State.Status != "Running" || l[stopped].State.Status != "Stopped" {
		t.Fatalf("states after restart: %s=%s %s=%s", run, l[run].State.Status, stopped, l[stopped].State.Status)
	}
	if got, _ := strconv.Atoi(l[run].State.Pid); got != pid {
		t.Fatalf("init pid after restart = %d, want %d (the container was restarted or duplicated)", got, pid)
	}
	if ls := d.MustShoal("snapshot", "list", run); !strings.Contains(ls, "snap0") {
		t.Fatalf("snapshot lost across the restart: %q", ls)
	}
	if got := d.MustShoal("exec", run, "--", "echo", "alive"); got != "alive\n" {
		t.Fatalf("exec after restart: %q", got)
	}
	// The reconciler does not start a second copy over time either.
	time.Sleep(time.Second)
	out, _ := hostRun("pgrep", "-fc", "lxc monitor.*"+run)
	if strings.TrimSpace(out) != "1" {
		t.Fatalf("lxc monitors for %s: %q, want 1", run, out)
	}
	d.MustShoal("start", stopped)
	d.MustShoal("delete", "-f", run, stopped)
}

// TestLeftoversOfInterruptedOperations: a volume left under a name the
// cluster does not know (a copy killed before it committed, a delete cut
// short) never leaks into a new container of that name.
func TestLeftoversOfInterruptedOperations(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	ctx := context.Background()
	drv, err := btrfs.New(ctx, btrfs.Config{Path: filepath.Join(d.StateDir, "storage-pools", "default"), DisableQuotas: true})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	ghost := uniq("ghost")
	if err := drv.CreateVolume(ctx, "containers/"+ghost); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(drv.Path("containers/"+ghost), "stale-marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.MustShoal("launch", "busybox", ghost)
	if _, _, code := d.Shoal("exec", ghost, "--", "test", "-e", "/stale-marker"); code == 0 {
		t.Fatal("a new container got the stale volume of an interrupted operation")
	}
	if _, _, code := d.Shoal("exec", ghost, "--", "test", "-x", "/bin/busybox"); code != 0 {
		t.Fatal("the new container is not a copy of its image")
	}
	// The same for a copy target.
	cp := uniq("cp")
	if err := drv.CreateVolume(ctx, "containers/"+cp); err != nil {
		t.Fatal(err)
	}
	d.MustShoal("copy", ghost, cp)
	d.MustShoal("start", cp)
	if _, _, code := d.Shoal("exec", cp, "--", "test", "-x", "/bin/busybox"); code != 0 {
		t.Fatal("copy over a stale volume is not a copy of its source")
	}
	if n := len(d.List()); n != 2 {
		t.Fatalf("%d containers, want 2", n)
	}
}
