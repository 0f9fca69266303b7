package tests

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// onlineCPUs reads the host's online CPU list ("0-1") and counts it.
func onlineCPUs(t *testing.T) (string, int) {
	t.Helper()
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	list, n := strings.TrimSpace(string(b)), 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, ranged := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if ranged {
			b, _ = strconv.Atoi(hi)
		}
		n += b - a + 1
	}
	return list, n
}

// cpusOf returns the CPUs a container may use, as its cgroup's
// cpuset.cpus on the host says and as a process inside sees them
// (Cpus_allowed_list of /proc/self/status); "" while they disagree.
func cpusOf(t *testing.T, d *harness.Daemon, name string) string {
	t.Helper()
	host := hostCgroup(t, pidOf(t, d, name), "cpuset", "cpuset.cpus")
	out := d.MustShoal("exec", name, "--", "grep", "Cpus_allowed_list", "/proc/self/status")
	_, inside, _ := strings.Cut(strings.TrimSpace(out), ":")
	if inside = strings.TrimSpace(inside); inside != host {
		t.Logf("%s: cpuset.cpus %q on the host, Cpus_allowed_list %q inside", name, host, inside)
		return ""
	}
	return host
}

// TestCPUPlacement shows limits.cpu placed as LXD places it, on whatever
// CPUs this host has: a count means that many CPUs chosen by the member,
// the least used first (ties to the lower CPU, containers in name order);
// a set is kept as given and counts towards its CPUs' use; every start
// and stop rebalances the running containers live; a restarted daemon
// derives the same placement; a count above the host's CPUs is refused
// naming the key and the host's count.
func TestCPUPlacement(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	all, ncpu := onlineCPUs(t)
	t.Logf("online CPUs: %s (%d)", all, ncpu)
	// One suffix keeps the name order a < b < p.
	sfx := randHex(3)
	a, b, p := "cpua-"+sfx, "cpub-"+sfx, "cpup-"+sfx
	for _, c := range []string{a, b, p} {
		t.Cleanup(func() { d.Shoal("delete", "-f", c) })
	}
	// What the rule gives on this host after each step.
	cpu := func(i int) string { return strconv.Itoa(min(i, ncpu-1)) }
	wantA1, wantB1 := cpu(0), cpu(1) // a and b alone: different CPUs
	wantA2, wantB2 := cpu(1), cpu(2) // p takes CPU 0: a to the next, b after it
	if ncpu == 2 {
		wantB2 = "0" // both CPUs used once: the tie goes to CPU 0
	}
	wantB3 := cpu(1) // a stopped: b to the least used, off p's CPU

	waitCPUs := func(what, name, want string) {
		t.Helper()
		d.WaitFor(fmt.Sprintf("%s: %s on CPUs %s", what, name, want), 30*time.Second, func() bool {
			return cpusOf(t, d, name) == want
		})
	}

	// A count above the host's CPUs is refused, nothing created.
	_, errOut, code := d.Shoal("launch", "busybox", "cpux-"+sfx, "-c", "limits.cpu="+strconv.Itoa(ncpu+1))
	hostCount := fmt.Sprintf("this host has %d CPUs", ncpu)
	if code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") > 0 ||
		!strings.Contains(errOut, "limits.cpu") || !strings.Contains(errOut, hostCount) {
		t.Fatalf("launch with limits.cpu=%d on %d CPUs: exit %d, stderr %q; want one line naming limits.cpu and %q",
			ncpu+1, ncpu, code, errOut, hostCount)
	}

	// The scheduler reserves limits.cpu as whole CPUs unless an allowance
	// says less: a small one lets three containers share two CPUs.
	small := []string{"-c", "limits.cpu.allowance=10%"}
	d.MustShoal(append([]string{"launch", "busybox", a, "-c", "limits.cpu=1"}, small...)...)
	d.MustShoal(append([]string{"launch", "busybox", b, "-c", "limits.cpu=1"}, small...)...)
	waitCPUs("two limits.cpu=1", a, wantA1)
	waitCPUs("two limits.cpu=1", b, wantB1)
	if ncpu > 1 && cpusOf(t, d, a) == cpusOf(t, d, b) {
		t.Fatalf("a and b share a CPU on a %d-CPU host", ncpu)
	}

	// "0" would be a count of none: a single CPU is pinned as a range, as
	// in LXD.
	d.MustShoal(append([]string{"launch", "busybox", p, "-c", "limits.cpu=0-0"}, small...)...)
	waitCPUs("pinned", p, "0")
	waitCPUs("rebalanced around the pinned one", a, wantA2)
	waitCPUs("rebalanced around the pinned one", b, wantB2)

	d.MustShoal("stop", "-f", a)
	waitCPUs("a stopped", b, wantB3)
	waitCPUs("a stopped", p, "0")

	// A restarted daemon derives the same placement: it puts back a
	// cpuset changed behind its back while it was down.
	pidB := pidOf(t, d, b)
	d.Stop()
	if ncpu > 1 {
		dir := hostCgroupDir(t, pidB, "cpuset")
		if err := os.WriteFile(dir+"/cpuset.cpus", []byte("0"), 0); err != nil {
			t.Fatal(err)
		}
	}
	d.Start()
	waitCPUs("after a daemon restart", b, wantB3)
	waitCPUs("after a daemon restart", p, "0")

	// limits.cpu changed live: a set, then none (every CPU again).
	d.MustShoal("config", "set", b, "limits.cpu=0-0")
	waitCPUs("limits.cpu=0-0 set live", b, "0")
	d.MustShoal("config", "unset", b, "limits.cpu")
	waitCPUs("limits.cpu unset live", b, all)
	waitCPUs("b unpinned", p, "0")
}

// hostCgroupDir is the host directory of pid's cgroup in the v1 hierarchy
// holding controller.
func hostCgroupDir(t *testing.T, pid int, controller string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ","+controller+",") {
			return "/sys/fs/cgroup/" + parts[1] + parts[2]
		}
	}
	t.Fatalf("no %s cgroup for pid %d", controller, pid)
	return ""
}
