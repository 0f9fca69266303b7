package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// readInt reads an integer host file.
func readInt(t *testing.T, p string) int64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// statField returns a "key value" field of a cgroup stat file.
func statField(t *testing.T, p, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	t.Fatalf("%s: no %s in %q", p, key, b)
	return 0
}

// hostIOWeights is the test's own look at the host, apart from
// DetectHost's: I/O weights exist where a block device offers the BFQ
// scheduler. It returns that and the schedulers offered, as the refusal
// message lists them.
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

func TestLimits(t *testing.T) {
	rt := newRuntime(t)
	if rt.Host().CgroupV2 {
		t.Skip("limit checks read cgroup v1 files; this host is cgroup v2")
	}
	const mib = 1 << 20
	bfq, offered := hostIOWeights(t)
	t.Logf("block devices offer: %s (BFQ: %v)", offered, bfq)
	lim := Limits{CPUSet: "0", CPUQuotaUs: 10000, CPUPeriodUs: 100000, MemoryBytes: 64 * mib, Processes: 20}
	withPriority := lim
	withPriority.DiskPriority = 5
	if bfq {
		lim = withPriority
	}
	spec := testContainer(t, rt, false, true, func(s *Spec) { s.Limits = lim })
	ctx := context.Background()
	st, err := rt.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	pid := st.PID
	if got := readInt(t, hostCgroupFile(t, pid, "memory", "memory.limit_in_bytes")); got != 64*mib {
		t.Fatalf("memory.limit_in_bytes = %d", got)
	}
	if rt.Host().Memsw {
		if got := readInt(t, hostCgroupFile(t, pid, "memory", "memory.memsw.limit_in_bytes")); got != 64*mib {
			t.Fatalf("memory.memsw.limit_in_bytes = %d", got)
		}
	}
	if bfq {
		if got := readInt(t, hostCgroupFile(t, pid, "blkio", "blkio.bfq.weight")); got != 500 {
			t.Fatalf("blkio.bfq.weight = %d", got)
		}
	} else {
		// Refused, in one line naming the key and why; nothing changes.
		want := "limits.disk.priority: this host cannot enforce I/O weights (no BFQ scheduler on its block devices; offered: " + offered + ")"
		conf, err := os.ReadFile(rt.ConfigPath(spec.Name))
		if err != nil {
			t.Fatal(err)
		}
		redefine := spec
		redefine.Limits = withPriority
		for what, err := range map[string]error{
			"Define":    rt.Define(ctx, redefine),
			"SetLimits": rt.SetLimits(ctx, spec.Name, withPriority),
		} {
			var ue *UnenforceableError
			if !errors.Is(err, ErrUnenforceable) || !errors.As(err, &ue) || ue.Error() != want {
				t.Fatalf("%s with a disk priority on a host without BFQ: %v\nwant %s", what, err, want)
			}
		}
		if after, _ := os.ReadFile(rt.ConfigPath(spec.Name)); string(after) != string(conf) {
			t.Fatalf("a refused disk priority changed the configuration:\n%s", after)
		}
		if st, err := rt.State(ctx, spec.Name); err != nil || st.Status != StatusRunning || st.PID != pid {
			t.Fatalf("after the refusals: %+v, %v", st, err)
		}
		if got := readInt(t, hostCgroupFile(t, pid, "memory", "memory.limit_in_bytes")); got != 64*mib {
			t.Fatalf("memory.limit_in_bytes = %d after a refused SetLimits", got)
		}
	}

	t.Run("memory", func(t *testing.T) {
		code, _, errs := run(t, rt, spec.Name, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
		if code == 0 {
			t.Fatalf("a 100M allocation succeeded under a 64M limit (stderr %q)", errs)
		}
		t.Logf("100M dd under 64M: exit %d, stderr %q", code, strings.TrimSpace(errs))
		mustRun(t, rt, spec.Name, "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1")
	})
	t.Run("pids", func(t *testing.T) {
		_, _, _ = run(t, rt, spec.Name, "sh", "-c", "for i in $(seq 50); do sleep 2 >/dev/null 2>&1 & done 2>/dev/null; exit 0")
		if cur := readInt(t, hostCgroupFile(t, pid, "pids", "pids.current")); cur > 20 {
			t.Fatalf("pids.current = %d over the limit", cur)
		}
		if n := statField(t, hostCgroupFile(t, pid, "pids", "pids.events"), "max"); n == 0 {
			t.Fatal("no fork hit pids.max")
		}
		// Nothing (not even an attach) can fork until the sleeps end.
		waitFor(t, 10e9, "sleeps to die", func() bool {
			return readInt(t, hostCgroupFile(t, pid, "pids", "pids.current")) < 10
		})
	})
	t.Run("cpu", func(t *testing.T) {
		mustRun(t, rt, spec.Name, "sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done")
		if n := statField(t, hostCgroupFile(t, pid, "cpu", "cpu.stat"), "nr_throttled"); n == 0 {
			t.Fatal("cpu.stat nr_throttled = 0 after a busy loop under a 10% quota")
		}
		b, err := os.ReadFile(hostCgroupFile(t, pid, "cpuset", "cpuset.cpus"))
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Fatalf("cpuset.cpus = %q, %v", b, err)
		}
	})
	t.Run("live", func(t *testing.T) {
		l := Limits{MemoryBytes: 128 * mib, Processes: 100}
		if err := rt.SetLimits(ctx, spec.Name, l); err != nil {
			t.Fatal(err)
		}
		if got := readInt(t, hostCgroupFile(t, pid, "memory", "memory.limit_in_bytes")); got != 128*mib {
			t.Fatalf("live memory.limit_in_bytes = %d", got)
		}
		if got := readInt(t, hostCgroupFile(t, pid, "pids", "pids.max")); got != 100 {
			t.Fatalf("live pids.max = %d", got)
		}
		if got := readInt(t, hostCgroupFile(t, pid, "cpu", "cpu.cfs_quota_us")); got != -1 {
			t.Fatalf("live cfs_quota_us = %d, want -1 (removed)", got)
		}
		if bfq {
			if err := rt.SetLimits(ctx, spec.Name, Limits{MemoryBytes: 128 * mib, Processes: 100, DiskPriority: 8}); err != nil {
				t.Fatal(err)
			}
			if got := readInt(t, hostCgroupFile(t, pid, "blkio", "blkio.bfq.weight")); got != 800 {
				t.Fatalf("live blkio.bfq.weight = %d, want 800", got)
			}
		}
		if err := rt.SetLimits(ctx, spec.Name, Limits{MemoryBytes: 32 * mib}); err != nil {
			t.Fatal(err)
		}
		if got := readInt(t, hostCgroupFile(t, pid, "memory", "memory.limit_in_bytes")); got != 32*mib {
			t.Fatalf("lowered memory.limit_in_bytes = %d", got)
		}
		conf, err := os.ReadFile(rt.ConfigPath(spec.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(conf), "lxc.cgroup.memory.limit_in_bytes = 33554432\n") ||
			strings.Contains(string(conf), "pids.max") || strings.Contains(string(conf), "cfs_quota") {
			t.Fatalf("persisted config:\n%s", conf)
		}
	})
}

func TestUnprivilegedConfinement(t *testing.T) {
	rt := newRuntime(t)
	spec := testContainer(t, rt, false, true, nil)
	ctx := context.Background()
	st, err := rt.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	// init runs as the mapped root on the host.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nUid:\t"+strconv.Itoa(int(spec.IDMap.HostUID))+"\t") {
		t.Fatalf("init is not running as host uid %d:\n%s", spec.IDMap.HostUID, b)
	}
	if !strings.Contains(string(b), "\nSeccomp:\t2\n") {
		t.Fatal("init has no seccomp filter")
	}
	mustRun(t, rt, spec.Name, "touch", "/root/created")
	var fi os.FileInfo
	if fi, err = os.Stat(spec.Rootfs + "/root/created"); err != nil {
		t.Fatal(err)
	}
	if uid := fileUID(fi); uid != spec.IDMap.HostUID {
		t.Fatalf("file created in the container has host uid %d", uid)
	}
	if code, _, _ := run(t, rt, spec.Name, "sh", "-c", "mknod /tmp/loop0 b 7 0 2>/dev/null; mount -t ext4 /tmp/loop0 /mnt || mount -t ext4 /dev/loop0 /mnt"); code == 0 {
		t.Fatal("mounting a block device succeeded in an unprivileged container")
	}
	if code, _, _ := run(t, rt, spec.Name, "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"); code == 0 {
		t.Fatal("writing a host sysctl succeeded")
	}
}
