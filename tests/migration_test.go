package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// requireLiveMove fails (CI=true) or skips unless the host can run
// simulated clusters and CRIU works.
func requireLiveMove(t *testing.T) {
	t.Helper()
	missing := append(harness.Missing(), netns.Missing()...)
	if out, err := exec.Command("criu", "check").CombinedOutput(); err != nil {
		missing = append(missing, "a working CRIU (criu check: "+strings.TrimSpace(string(out))+"; run scripts/criu-bundle.sh)")
	}
	if len(missing) > 0 {
		msg := "live-move tests need: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// startWorkload copies the test workload into a container and starts it
// (its own session, detached) holding memMiB of touched memory, with extra
// flags (-serve, -connect).
func startWorkload(t *testing.T, m *member, name string, memMiB int, extra ...string) {
	t.Helper()
	m.MustShoal("file", "push", filepath.Join(binDir, "workload"), name+"/usr/bin/workload", "--mode", "0755")
	m.MustShoal("exec", name, "--", "setsid", "sh", "-c",
		fmt.Sprintf("workload -mem %d %s </dev/null >/root/workload.out 2>&1 &", memMiB, strings.Join(extra, " ")))
	m.WaitFor("the workload's first ticks", 30*time.Second, func() bool { return len(ticks(t, m, name)) >= 3 })
}

// tick is a line of the workload's log: its in-memory counter and when.
type tick struct {
	n  int
	ms int64
}

// ticks reads the workload's log through the API.
func ticks(t *testing.T, m *member, name string) []tick {
	t.Helper()
	out, _, code := m.Shoal("file", "pull", name+"/root/ticks", "-")
	if code != 0 {
		return nil
	}
	var ts []tick
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		n, err1 := strconv.Atoi(f[0])
		ms, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			ts = append(ts, tick{n, ms})
		}
	}
	return ts
}

// checkTicks asserts the counter never restarted or skipped (the process
// and its memory survived) and returns the longest gap between lines.
func checkTicks(t *testing.T, ts []tick) time.Duration {
	t.Helper()
	var gap int64
	for i := 1; i < len(ts); i++ {
		if ts[i].n != ts[i-1].n+1 {
			t.Fatalf("the counter went from %d to %d at line %d: the process restarted or lost memory", ts[i-1].n, ts[i].n, i+1)
		}
		gap = max(gap, ts[i].ms-ts[i-1].ms)
	}
	return time.Duration(gap) * time.Millisecond
}

// report asks the workload for its status line.
func report(t *testing.T, m *member, name string) map[string]string {
	t.Helper()
	m.MustShoal("exec", name, "--", "sh", "-c", "rm -f /root/status; echo report > /root/control")
	var line string
	m.WaitFor("the workload's report", 30*time.Second, func() bool {
		out, _, code := m.Shoal("file", "pull", name+"/root/status", "-")
		line = out
		return code == 0 && strings.Contains(out, "sum=")
	})
	kv := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

var downtimeRE = regexp.MustCompile(`downtime ([0-9.]+m?s)`)

// liveMove moves name live with the CLI on m and returns the downtime the
// CLI reported.
func liveMove(t *testing.T, m *member, name, target string) time.Duration {
	t.Helper()
	out := m.MustShoal("move", name, "--target", target, "--live")
	t.Logf("%s", strings.TrimSpace(out))
	mt := downtimeRE.FindStringSubmatch(out)
	if mt == nil {
		t.Fatalf("move output lacks the downtime: %q", out)
	}
	d, err := time.ParseDuration(mt[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// hasLocalCopy reports whether a member's host holds anything of the
// container: its LXC definition or its volume.
func hasLocalCopy(m *member, name string) bool {
	if _, err := os.Stat(filepath.Join(m.StateDir, "lxc-config", name+".conf")); err == nil {
		return true
	}
	return poolHolds(m, "containers%2F"+name)
}

// poolHolds reports whether a member's pools hold a volume directory named
// enc: a volume name with its "/" encoded (containers%2FNAME). The pool is
// mounted in the simulated host's mount namespace.
func poolHolds(m *member, enc string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pools := filepath.Join(m.StateDir, "storage-pools")
	out, _ := m.Host.Command(ctx, "find", pools, "-maxdepth", "4", "-name", enc).CombinedOutput()
	return strings.Contains(string(out), enc)
}

// TestLiveMove moves an unprivileged container running a program that
// keeps a counter in memory and holds 256 MiB of touched memory, there and
// back: the counter goes on without a restart, the memory checksum holds,
// the log has no gap much longer than the downtime, and the source keeps
// no copy.
func TestLiveMove(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1, n2 := ms[0], ms[1]
	n1.MustShoal("image", "build", "busybox")
	n1.MustShoal("launch", "busybox", "web1", "--target", "n1")
	startWorkload(t, n1, "web1", 256)
	start := report(t, n1, "web1")
	if start["sum"] != start["start"] {
		t.Fatalf("memory checksum changed before any move: %v", start)
	}

	route := []struct{ from, to *member }{{n1, n2}, {n2, n1}}
	for i, hop := range route {
		before := ticks(t, hop.from, "web1")
		down := liveMove(t, hop.from, "web1", hop.to.Opts.Name)
		row := hop.from.List()["web1"]
		if row.Container.Node != hop.to.Opts.Name || row.State.Status != "Running" {
			t.Fatalf("move %d: web1 is %+v, want Running on %s", i+1, row, hop.to.Opts.Name)
		}
		if hasLocalCopy(hop.from, "web1") {
			t.Fatalf("move %d: %s still holds a copy of web1", i+1, hop.from.Opts.Name)
		}
		// Still unprivileged, with the same mapping: root inside is
		// 1000000 on the host, and the container sees the same map.
		if m := hop.to.MustShoal("exec", "web1", "--", "cat", "/proc/self/uid_map"); !strings.Contains(strings.Join(strings.Fields(m), " "), "0 1000000 65536") {
			t.Fatalf("move %d: uid_map inside is %q", i+1, m)
		}
		status, err := os.ReadFile("/proc/" + row.State.Pid + "/status")
		if err != nil || !strings.Contains(string(status), "\nUid:\t1000000\t") {
			t.Fatalf("move %d: the restored init (pid %s) does not run as host uid 1000000: %v\n%s", i+1, row.State.Pid, err, status)
		}
		last := before[len(before)-1].n
		hop.to.WaitFor("the counter to go on", 30*time.Second, func() bool {
			ts := ticks(t, hop.to, "web1")
			return len(ts) > 0 && ts[len(ts)-1].n > last+5
		})
		gap := checkTicks(t, ticks(t, hop.to, "web1"))
		t.Logf("move %d: downtime %v, longest gap in the log %v", i+1, down, gap)
		// The log is written every 100 ms; beyond that, scheduling slack.
		if gap > down+400*time.Millisecond {
			t.Errorf("move %d: the log has a %v gap, longer than the downtime %v allows", i+1, gap, down)
		}
		r := report(t, hop.to, "web1")
		if r["sum"] != start["start"] {
			t.Fatalf("move %d: memory checksum %s, want %s", i+1, r["sum"], start["start"])
		}
		// The target's DHCP server has the address it brought along pinned
		// to its MAC (no other container there gets it); the member it
		// left holds no pin for it.
		hop.to.WaitFor("the moved address pinned on "+hop.to.Opts.Name, 10*time.Second, func() bool {
			return pinned(hop.to, row.Container.Hwaddr)
		})
		if pinned(hop.from, row.Container.Hwaddr) {
			t.Fatalf("move %d: %s still pins web1's address", i+1, hop.from.Opts.Name)
		}
		// Its network came along: the restored eth0 is on the target's
		// bridge (the default network has the same subnet on every
		// member), and it reaches its gateway there with its address kept.
		hop.to.WaitFor("web1 to reach its gateway on "+hop.to.Opts.Name, 30*time.Second, func() bool {
			_, _, code := hop.to.Shoal("exec", "web1", "--", "sh", "-c",
				`gw=$(ip route | awk '/^default/ {print $3}'); [ -n "$gw" ] && ping -c1 -W1 "$gw"`)
			return code == 0
		})
	}

	// Evacuating its member moves it live; restoring the member moves it
	// back live. The process goes on through both.
	out := n2.MustShoal("cluster", "evacuate", "n1", "--live")
	if !strings.Contains(out, "web1:n2:live") {
		t.Fatalf("evacuate --live: %q, want web1 moved live to n2", out)
	}
	stillOn(t, n2, n1, "web1", "after evacuating n1")
	out = n2.MustShoal("cluster", "restore", "n1")
	if !strings.Contains(out, "web1:n2:live") {
		t.Fatalf("restore: %q, want web1 moved back live from n2", out)
	}
	stillOn(t, n1, n2, "web1", "after restoring n1")
	if r := report(t, n1, "web1"); r["sum"] != start["start"] {
		t.Fatalf("after evacuate and restore: memory checksum %s, want %s", r["sum"], start["start"])
	}

	// A stateful snapshot keeps the processes: restoring it resumes the
	// counter from where the snapshot froze it (not from 1, not from now).
	n2.MustShoal("snapshot", "create", "web1", "s1", "--stateful")
	atSnap := ticks(t, n1, "web1")
	snapN := atSnap[len(atSnap)-1].n
	n1.WaitFor("the counter to move past the snapshot", 30*time.Second, func() bool {
		ts := ticks(t, n1, "web1")
		return ts[len(ts)-1].n > snapN+20
	})
	if out := n2.MustShoal("snapshot", "list", "web1"); !strings.Contains(out, "yes") {
		t.Fatalf("snapshot list does not show s1 as stateful:\n%s", out)
	}
	n2.MustShoal("snapshot", "restore", "web1", "s1")
	ts := ticks(t, n1, "web1")
	checkTicks(t, ts)
	if got := ts[len(ts)-1].n; got > snapN+10 {
		t.Fatalf("after restoring the stateful snapshot the counter is at %d; the snapshot froze it at %d", got, snapN)
	}
	stillOn(t, n1, n2, "web1", "after restoring a stateful snapshot")
	if r := report(t, n1, "web1"); r["sum"] != start["start"] {
		t.Fatalf("after a stateful restore: memory checksum %s, want %s", r["sum"], start["start"])
	}
}

// restartWith restarts a member's daemon (killed, as a crash) with the
// given failpoints armed (none: plain restart), and waits until the
// cluster records every member online again: a member the leader marked
// offline while the link was cut stays so until the leader's liveness
// check sees it alive, and a restarted leader runs that check only after
// its election (a move right after a quick series of restarts found the
// target still "offline").
func restartWith(m *member, failpoints string) {
	m.Kill()
	m.Opts.Env = nil
	if failpoints != "" {
		m.Opts.Env = []string{"SHOAL_FAILPOINTS=" + failpoints}
	}
	m.Start()
	m.WaitFor("every member online", 30*time.Second, func() bool {
		ms := m.Members()
		for _, x := range ms {
			if x.Status != "online" {
				return false
			}
		}
		return len(ms) > 0
	})
}

// moveAsync runs a live move in the background; the channel yields the
// CLI's exit code and stderr.
func moveAsync(m *member, name, target string) chan string {
	done := make(chan string, 1)
	go func() {
		_, stderr, code := m.Shoal("move", name, "--target", target, "--live")
		done <- fmt.Sprintf("exit %d: %s", code, strings.TrimSpace(stderr))
	}()
	return done
}

// waitLog waits until a daemon's log shows s more often than the seen
// times it had already. A move that ends meanwhile (done) fails the test
// with its result; on a timeout every daemon dumps its goroutines first.
func waitLog(t *testing.T, m *member, s string, seen int, done <-chan string, others ...*member) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(m.Log(), s) <= seen {
		select {
		case res := <-done:
			t.Fatalf("the move ended before %s's log showed %s: %s", m.Opts.Name, s, res)
		default:
		}
		if time.Now().After(deadline) {
			// Where everything waits: each daemon's goroutines go to its log
			// (SIGQUIT), which the harness prints for a failed test.
			for _, d := range append(others, m) {
				d.Quit()
			}
			t.Fatalf("timed out after 1m0s waiting for the log of %s to show %s", m.Opts.Name, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stillOn asserts the container runs on m only, with its workload going on
// from where it was (not restarted), and other has no copy of it.
func stillOn(t *testing.T, m, other *member, name, what string) {
	t.Helper()
	m.WaitFor(what+": "+name+" running on "+m.Opts.Name, 60*time.Second, func() bool {
		row := m.List()[name]
		return row.Container.Node == m.Opts.Name && row.State.Status == "Running"
	})
	before := ticks(t, m, name)
	if len(before) == 0 {
		t.Fatalf("%s: no workload log", what)
	}
	last := before[len(before)-1].n
	m.WaitFor(what+": the counter to go on", 30*time.Second, func() bool {
		ts := ticks(t, m, name)
		return len(ts) > 0 && ts[len(ts)-1].n > last+3
	})
	checkTicks(t, ticks(t, m, name))
	other.WaitFor(what+": no copy on "+other.Opts.Name, 60*time.Second, func() bool { return !hasDefinition(other, name) })
}

// pinned reports whether a member's DHCP server pins an address to mac.
func pinned(m *member, mac string) bool {
	files, _ := filepath.Glob(filepath.Join(m.StateDir, "networks", "*", "dnsmasq.hosts"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if mac != "" && strings.Contains(strings.ToLower(string(b)), strings.ToLower(mac)) {
			return true
		}
	}
	return false
}

// hasDefinition reports whether a member's host has an LXC definition of
// the container (a restored or restoring copy).
func hasDefinition(m *member, name string) bool {
	_, err := os.Stat(filepath.Join(m.StateDir, "lxc-config", name+".conf"))
	return err == nil
}

// TestLiveMoveFailures breaks live moves at each phase: a corrupt chunk, a
// target daemon killed mid-stream, the link cut mid-stream, the source
// daemon killed before the freeze and after the dump. Each time the
// container ends up running in exactly one place, the source, with its
// processes and memory (the counter goes on); the target keeps no copy;
// and a clean move works afterwards.
func TestLiveMoveFailures(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1, n2 := ms[0], ms[1]
	n1.MustShoal("image", "build", "busybox")
	for _, mode := range []string{"stop-and-copy", "postcopy"} {
		t.Run(mode, func(t *testing.T) { liveMoveFailures(t, n1, n2, mode) })
	}

	// Post-copy's known trade-off: the source dies while the target still
	// pulls memory pages. The memory state is gone; the container boots
	// fresh from its volume on the target, once, and the source keeps no
	// copy when it comes back.
	t.Run("source killed during post-copy", func(t *testing.T) {
		restartWith(n1, "")
		restartWith(n2, "")
		n1.MustShoal("launch", "busybox", "big", "--target", "n1", "-c", "migration.mode=postcopy")
		startWorkload(t, n1, "big", 256)
		restartWith(n1, "live-move-source-lost=exit")
		if res := <-moveAsync(n1, "big", "n2"); strings.HasPrefix(res, "exit 0") {
			t.Fatalf("move with the source killed during post-copy: %s", res)
		}
		waitLog(t, n2, "booting the container fresh from its volume", 0, nil)
		// Two members, one dead: n2 alone holds no quorum, and reads of the
		// cluster's state are refused until n1 is back.
		restartWith(n1, "")
		n2.WaitFor("big running on n2", 60*time.Second, func() bool {
			row := n2.List()["big"]
			return row.Container.Node == "n2" && row.State.Status == "Running"
		})
		if out, _, _ := n2.Shoal("exec", "big", "--", "pidof", "workload"); strings.TrimSpace(out) != "" {
			t.Fatalf("the workload runs after a fresh boot (pid %s): the memory state cannot have survived", out)
		}
		n1.WaitFor("n1 to drop its copy", 60*time.Second, func() bool { return !hasLocalCopy(n1, "big") })
		n1.MustShoal("delete", "-f", "big")
	})
}

// liveMoveFailures runs the fault injections on a container moving in
// one mode; the container starts on n1 and ends on n2 after a clean move.
func liveMoveFailures(t *testing.T, n1, n2 *member, mode string) {
	name := "web-" + strings.ReplaceAll(mode, "-", "")
	n1.MustShoal("launch", "busybox", name, "--target", "n1", "-c", "migration.mode="+mode)
	startWorkload(t, n1, name, 32)

	t.Run("corrupt chunk", func(t *testing.T) {
		restartWith(n1, "live-move-corrupt-checkpoint=once:error")
		_, stderr, code := n1.Shoal("move", name, "--target", "n2", "--live")
		if code == 0 || !strings.Contains(stderr, "corrupt") || !strings.Contains(stderr, "keeps running on n1") {
			t.Fatalf("a corrupt chunk: exit %d, stderr %q; want a failure naming the corruption", code, stderr)
		}
		stillOn(t, n1, n2, name, "after a corrupt chunk")
	})

	t.Run("target killed mid-stream", func(t *testing.T) {
		restartWith(n1, "")
		restartWith(n2, "restore-receive=once:sleep(5s)")
		seen := strings.Count(n2.Log(), "point=restore-receive")
		done := moveAsync(n1, name, "n2")
		waitLog(t, n2, "point=restore-receive", seen, done, n1)
		n2.Kill()
		if res := <-done; strings.HasPrefix(res, "exit 0") || !strings.Contains(res, "keeps running on n1") {
			t.Fatalf("move with the target killed: %s", res)
		}
		restartWith(n2, "")
		stillOn(t, n1, n2, name, "after the target died mid-stream")
	})

	t.Run("link cut mid-stream", func(t *testing.T) {
		restartWith(n2, "restore-receive=once:sleep(3s)")
		seen := strings.Count(n2.Log(), "point=restore-receive")
		done := moveAsync(n1, name, "n2")
		waitLog(t, n2, "point=restore-receive", seen, done, n1)
		if err := n2.Host.Cut(); err != nil {
			t.Fatal(err)
		}
		res := <-done
		if err := n2.Host.Heal(); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(res, "exit 0") || !strings.Contains(res, "keeps running on n1") {
			t.Fatalf("move with the link cut: %s", res)
		}
		stillOn(t, n1, n2, name, "after the link was cut")
	})

	t.Run("source killed before the freeze", func(t *testing.T) {
		restartWith(n2, "")
		restartWith(n1, "live-move-before-freeze=exit")
		res := <-moveAsync(n1, name, "n2")
		if strings.HasPrefix(res, "exit 0") {
			t.Fatalf("move with the source killed: %s", res)
		}
		restartWith(n1, "")
		stillOn(t, n1, n2, name, "after the source died before the freeze")
	})

	t.Run("source killed after the dump", func(t *testing.T) {
		restartWith(n1, "live-move-after-dump=exit")
		res := <-moveAsync(n1, name, "n2")
		if strings.HasPrefix(res, "exit 0") {
			t.Fatalf("move with the source killed: %s", res)
		}
		// The container stays frozen until its daemon is back.
		restartWith(n1, "")
		stillOn(t, n1, n2, name, "after the source died holding it frozen")
	})

	t.Run("commit refused after the target restored", func(t *testing.T) {
		// The target holds a restored, frozen copy when the source gives
		// up: the target must drop it and the source thaw.
		restartWith(n1, "live-move-before-commit=once:error")
		_, stderr, code := n1.Shoal("move", name, "--target", "n2", "--live")
		if code == 0 || !strings.Contains(stderr, "keeps running on n1") {
			t.Fatalf("move refused at the commit: exit %d, stderr %q", code, stderr)
		}
		stillOn(t, n1, n2, name, "after the commit was refused")
		restartWith(n1, "")
	})

	t.Run("clean move afterwards", func(t *testing.T) {
		// migration.stateful makes a plain move live, as in LXD.
		n1.MustShoal("config", "set", name, "migration.stateful=true")
		if out := n1.MustShoal("move", name, "--target", "n2"); !strings.Contains(out, "Moved "+name+" live to n2") {
			t.Fatalf("a move with migration.stateful=true: %q, want a live move", out)
		}
		stillOn(t, n2, n1, name, "after a clean move")
		if hasLocalCopy(n1, name) {
			t.Fatalf("n1 kept a copy of %s after the clean move", name)
		}
	})
}

var copiedRE = regexp.MustCompile(`\(([0-9.]+)([KMG]?i?B) sent`)

// copiedBytes reads the bytes a `shoal copy` to another member sent.
func copiedBytes(t *testing.T, out string) float64 {
	t.Helper()
	m := copiedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("copy output lacks the bytes sent: %q", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v * map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
}

// TestCopyAcrossMembersIncremental copies a container with a snapshot to
// another member (everything is sent), then refreshes the copy after a
// small change and a second snapshot: only the difference on the shared
// snapshot is sent, and the copy has the new file and the new snapshot.
func TestCopyAcrossMembersIncremental(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1, n2 := ms[0], ms[1]
	n1.MustShoal("image", "build", "busybox")
	n1.MustShoal("launch", "busybox", "c1", "--target", "n1")
	n1.MustShoal("exec", "c1", "--", "dd", "if=/dev/urandom", "of=/root/big", "bs=1M", "count=16")
	sum := n1.MustShoal("exec", "c1", "--", "sha256sum", "/root/big")
	n1.MustShoal("snapshot", "create", "c1", "s1")
	full := copiedBytes(t, n1.MustShoal("copy", "c1", "n2:c1-copy"))
	if full < 16<<20 {
		t.Fatalf("the first copy sent %.0f bytes; the volume holds 16 MiB of random data", full)
	}
	if got := n2.List()["c1-copy"]; got.Container.Node != "n2" {
		t.Fatalf("c1-copy: %+v, want it on n2", got)
	}

	n1.MustShoal("exec", "c1", "--", "sh", "-c", "echo changed > /root/small")
	n1.MustShoal("snapshot", "create", "c1", "s2")
	out := n2.MustShoal("copy", "c1", "c1-copy", "--target", "n2", "--refresh")
	if !strings.Contains(out, "incremental on snapshot s1") {
		t.Fatalf("refresh: %q, want it incremental on s1", out)
	}
	incr := copiedBytes(t, out)
	t.Logf("first copy sent %.0f bytes, the refresh %.0f", full, incr)
	if incr > full/8 {
		t.Fatalf("the refresh sent %.0f bytes, the full copy %.0f: not incremental", incr, full)
	}
	if l := n2.MustShoal("snapshot", "list", "c1-copy"); !strings.Contains(l, "s1") || !strings.Contains(l, "s2") {
		t.Fatalf("the refreshed copy's snapshots:\n%s", l)
	}
	n2.MustShoal("start", "c1-copy")
	if st := n2.List()["c1-copy"].State; st.Status != "Running" || st.Pid == "" {
		t.Fatalf("c1-copy after start: %+v\n%s", st, n2.Log())
	}
	if got := n2.MustShoal("exec", "c1-copy", "--", "cat", "/root/small"); got != "changed\n" {
		t.Fatalf("the refreshed copy has /root/small = %q", got)
	}
	if got := n2.MustShoal("exec", "c1-copy", "--", "sha256sum", "/root/big"); got != sum {
		t.Fatalf("the copy's big file: %q, want %q", got, sum)
	}
	// n2 lacks the image: three launches at once pull it from n1 once,
	// verified, with the pull's progress shown.
	var wg sync.WaitGroup
	errs := make([]string, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, stderr, code := n1.Shoal("launch", "busybox", fmt.Sprintf("p%d", i), "--target", "n2")
			if code != 0 {
				errs[i] = fmt.Sprintf("exit %d: %s", code, stderr)
			} else {
				errs[i] = stderr
			}
		}()
	}
	wg.Wait()
	shown := false
	for _, e := range errs {
		if strings.HasPrefix(e, "exit") {
			t.Fatalf("launch on n2: %s", e)
		}
		shown = shown || strings.Contains(e, "pulling image")
	}
	if !shown {
		t.Errorf("no launch showed the image pull's progress: %q", errs)
	}
	if n := strings.Count(n2.Log(), "pulling image from a peer"); n != 1 {
		t.Fatalf("n2 pulled the image %d times for three concurrent launches, want 1", n)
	}

	// Refreshing a running copy is refused and changes nothing.
	if _, stderr, code := n1.Shoal("copy", "c1", "c1-copy", "--refresh"); code == 0 || !strings.Contains(stderr, "stop") {
		t.Fatalf("refresh of a running copy: exit %d, %q", code, stderr)
	}
}
