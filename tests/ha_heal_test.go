package tests

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestHAHealsAfterHostDeath kills the host of an HA container outright —
// its link cut, its shoald SIGKILLed, the container's processes killed —
// and checks the cluster restarts the container on the member holding its
// replica, with the file a workload appended to every 100 ms whole (records
// 1..N in order) and N no more than what was written; the time from the
// kill to running elsewhere and the data lost are reported. The dead host
// comes back: fenced meanwhile (it never starts the container itself),
// its stale copy is kept as a replica and brought up to date by an
// increment, and exactly one copy runs.
func TestHAHealsAfterHostDeath(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1 := ms[0]
	m1.MustShoal("image", "build", "busybox")
	if _, errOut, code := m1.Shoal("cluster", "config", "set", "cluster.healing_threshold=fast"); code == 0 || !strings.Contains(errOut, "cluster.healing_threshold") {
		t.Errorf("a bad healing threshold: exit %d, %q", code, errOut)
	}
	// The victim is not the leader (TestHAHealsAfterLeaderDeath is).
	var victim *harness.Member
	for _, m := range ms {
		if m1.Members()[m.Host.Name].Role != "leader" {
			victim = m
		}
	}
	var survivors []*harness.Member
	for _, m := range ms {
		if m != victim {
			survivors = append(survivors, m)
		}
	}
	healAfterDeath(t, victim, survivors)
}

// TestHAHealsAfterLeaderDeath is the same with the leader as the host
// that dies: a new leader is elected first, then heals.
func TestHAHealsAfterLeaderDeath(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	ms[0].MustShoal("image", "build", "busybox")
	var victim *harness.Member
	var survivors []*harness.Member
	for _, m := range ms {
		if ms[0].Members()[m.Host.Name].Role == "leader" {
			victim = m
		} else {
			survivors = append(survivors, m)
		}
	}
	if victim == nil {
		t.Fatal("no leader")
	}
	healAfterDeath(t, victim, survivors)
}

func healAfterDeath(t *testing.T, victim *harness.Member, survivors []*harness.Member) {
	t.Helper()
	s := survivors[0]
	// Two replicas: one on each survivor, so the returning host finds a
	// slot free and comes back a replica.
	s.MustShoal("launch", "busybox", "db1", "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s", "-c", "ha.replicas=2")
	s.MustShoal("exec", "db1", "--", "sh", "-c",
		`setsid sh -c 'i=0; while :; do i=$((i+1)); echo rec$i >> /root/log; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`)
	s.WaitFor("replicas of db1 on both survivors", 60*time.Second, func() bool {
		return len(containerJSON(t, s, "db1").Container.Replicas) == 2
	})
	time.Sleep(3 * time.Second) // a few rounds, and records after the last

	// The host dies: nothing it has answers from here on.
	killed := time.Now()
	written := killHost(t, victim, "db1")
	lxcPath := filepath.Join(victim.StateDir, "lxc")

	var owner string
	s.WaitFor("db1 running on a survivor", 90*time.Second, func() bool {
		c, ok := s.List()["db1"]
		owner = c.Container.Node
		return ok && owner != victim.Host.Name && strings.EqualFold(c.State.Status, "running")
	})
	took := time.Since(killed)
	var om *harness.Member
	for _, m := range survivors {
		if m.Host.Name == owner {
			om = m
		}
	}
	out := om.MustShoal("exec", "db1", "--", "cat", "/root/log")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if l != fmt.Sprintf("rec%d", i+1) {
			t.Fatalf("db1's log after the heal, line %d: %q, want rec%d (torn or out of order)", i+1, l, i+1)
		}
	}
	kept := len(lines)
	if kept == 0 || kept > written {
		t.Fatalf("db1 on %s has %d records; %d were written on %s", owner, kept, written, victim.Host.Name)
	}
	t.Logf("%s died; db1 ran on %s %s later with %d of %d records (lost %d, %.1f s of writes; RPO 2s)",
		victim.Host.Name, owner, took.Round(100*time.Millisecond), kept, written, written-kept, float64(written-kept)/10)
	if cl := s.MustShoal("cluster", "list"); !strings.Contains(strings.ToLower(cl), "offline") {
		t.Errorf("cluster list does not show %s offline:\n%s", victim.Host.Name, cl)
	}

	// The heal recorded the dead host as holding the snapshot the new
	// owner promoted; info says it is away.
	seed := ""
	for _, r := range containerJSON(t, s, "db1").Container.Replicas {
		if r.Member == victim.Host.Name {
			seed = r.Snapshot
		}
	}
	if seed == "" {
		t.Fatalf("after the heal, db1 has no replica record for %s, its old owner", victim.Host.Name)
	}
	if info := s.MustShoal("info", "db1"); !strings.Contains(info, victim.Host.Name+" (offline, holds ") {
		t.Errorf("info db1 does not show %s's copy as away:\n%s", victim.Host.Name, info)
	}

	// The dead host comes back: fenced until it has the leader's state, it
	// never starts db1; its stale copy is kept as a replica, which the new
	// owner brings up to date with an increment, not the whole volume; db1
	// runs once, on the new owner.
	if err := victim.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	victim.Start()
	victim.WaitFor(victim.Host.Name+" to undefine its stale copy", 60*time.Second, func() bool {
		_, err := victim.Host.Run(context.Background(), "test", "-e", filepath.Join(lxcPath, "db1"))
		return err != nil
	})
	var back int64
	s.WaitFor(victim.Host.Name+" a replica of db1 again, from "+owner, 60*time.Second, func() bool {
		for _, r := range containerJSON(t, s, "db1").Container.Replicas {
			if r.Member == victim.Host.Name && r.From == owner && r.Snapshot != seed {
				back = r.LastBytes
				return true
			}
		}
		return false
	})
	disk := containerJSON(t, s, "db1").State.DiskBytes
	for _, l := range strings.Split(om.Log(), "\n") {
		if strings.Contains(l, "member="+victim.Host.Name) && (strings.Contains(l, "replicated in full") || strings.Contains(l, "incremental replication failed")) {
			t.Errorf("%s sent db1 to the returning %s in full: %s", owner, victim.Host.Name, l)
		}
	}
	if disk == 0 || back >= disk/4 {
		t.Errorf("a round to the returning %s sent %d bytes of a %d-byte volume: want an increment", victim.Host.Name, back, disk)
	}
	if _, err := victim.Host.Run(context.Background(), "test", "-d",
		filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "replicas%2Fdb1")); err != nil {
		t.Errorf("%s holds no replica volume of db1 after coming back", victim.Host.Name)
	}
	t.Logf("%s came back a replica of db1: its stale copy kept, brought up to date by increments (%d bytes, volume %d)",
		victim.Host.Name, back, disk)
	if c := s.List()["db1"]; c.Container.Node != owner || !strings.EqualFold(c.State.Status, "running") {
		t.Errorf("after %s came back, db1 is %s on %s, want running on %s", victim.Host.Name, c.State.Status, c.Container.Node, owner)
	}
	if log := victim.Log(); strings.Count(log, "msg=started component=runtime container=db1") > 1 { // once, before it died
		t.Errorf("%s started db1 again after it came back:\n%s", victim.Host.Name, log)
	}
}

// killHost kills a member's host outright: its link cut first (nothing it
// has answers from then on), its shoald SIGKILLed, the container's
// processes killed. It returns the records the container's log holds on
// that host.
func killHost(t *testing.T, victim *harness.Member, name string) int {
	t.Helper()
	if err := victim.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	if out, err := victim.Host.Run(context.Background(), "lxc-stop", "-P", filepath.Join(victim.StateDir, "lxc"), "-n", name, "-k"); err != nil {
		t.Fatalf("kill %s's processes on %s: %v %s", name, victim.Host.Name, err, out)
	}
	return countRecords(t, victim, filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "containers%2F"+name, "root", "log"))
}

// TestHAHealManually: with healing off (cluster.healing_threshold=0) a dead
// member's HA container stays put; `shoal cluster heal` moves it at once;
// healing a member the cluster sees alive is refused unless the operator
// vouches it is fenced.
func TestHAHealManually(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1 := ms[0]
	m1.MustShoal("image", "build", "busybox")
	m1.MustShoal("cluster", "config", "set", "cluster.healing_threshold=0")
	victim := ms[2]
	if m1.Members()[victim.Host.Name].Role == "leader" {
		victim = ms[1]
	}
	s := ms[0]
	if s == victim {
		s = ms[1]
	}
	if _, errOut, code := s.Shoal("cluster", "heal", victim.Host.Name); code == 0 || !strings.Contains(errOut, "--i-know-it-is-fenced") {
		t.Errorf("cluster heal of an online member: exit %d, %q", code, errOut)
	}
	if _, errOut, code := s.Shoal("cluster", "heal", "nosuch"); code == 0 || !strings.Contains(errOut, "nosuch") {
		t.Errorf("cluster heal of an unknown member: exit %d, %q", code, errOut)
	}
	s.MustShoal("launch", "busybox", "db1", "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s")
	s.MustShoal("exec", "db1", "--", "sh", "-c", "echo rec1 > /root/log")
	s.WaitFor("a replica of db1", 60*time.Second, func() bool {
		ct := containerJSON(t, s, "db1")
		return len(ct.Container.Replicas) > 0 && ct.Container.Replicas[0].TakenUnixNano > 0
	})
	time.Sleep(3 * time.Second)
	killHost(t, victim, "db1")
	s.WaitFor(victim.Host.Name+" offline", 60*time.Second, func() bool { return s.Members()[victim.Host.Name].Status == "offline" })
	time.Sleep(4 * time.Second) // past the default threshold: nothing happens
	if c := s.List()["db1"]; c.Container.Node != victim.Host.Name {
		t.Fatalf("with healing off, db1 moved to %s", c.Container.Node)
	}
	out := s.MustShoal("cluster", "heal", victim.Host.Name)
	if !strings.Contains(out, "db1:") {
		t.Fatalf("cluster heal printed %q, want db1 moved", out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	s.WaitFor("db1 running elsewhere", 60*time.Second, func() bool {
		c := s.List()["db1"]
		return c.Container.Node != victim.Host.Name && strings.EqualFold(c.State.Status, "running")
	})
	if got := s.MustShoal("exec", "db1", "--", "cat", "/root/log"); got != "rec1\n" {
		t.Errorf("db1's log after the heal: %q", got)
	}
}

// countRecords counts the lines of a file on a member's host (the file as
// the dead container left it).
func countRecords(t *testing.T, m *harness.Member, path string) int {
	t.Helper()
	out, err := m.Host.Run(context.Background(), "cat", path)
	if err != nil {
		t.Fatalf("read %s on %s: %v", path, m.Host.Name, err)
	}
	return strings.Count(out, "\n")
}

// TestHAFencesAPartitionedHost cuts the host of an HA container off
// without killing anything: the host stops the container by itself
// (fencing) before the cluster starts the copy elsewhere — the two are
// watched every 50 ms and never both run, and probers pinging its address
// from every host 20 times a second never hear the old copy after the new
// one — and after the heal the cut host drops its stale copy. A member whose shoald stops cleanly is never
// healed: its HA container stays its own.
func TestHAFencesAPartitionedHost(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	victim, survivors := pick(ms, false)
	owner := fenceAfterCut(t, victim, survivors)

	// A clean shutdown never heals.
	om := survivors[0]
	if om.Host.Name != owner {
		om = survivors[1]
	}
	om.Stop()
	time.Sleep(15 * time.Second) // past gossip, the offline grace and the threshold
	other := survivors[0]
	if other == om {
		other = survivors[1]
	}
	if c := other.List()["db1"]; c.Container.Node != owner || c.State.Status != "Unknown" {
		t.Errorf("db1 is %q on %s after %s shut down cleanly; want Unknown, still on %s", c.State.Status, c.Container.Node, owner, owner)
	}
	om.Start()
}

// TestHAFencesAPartitionedLeader is the same with the leader cut off: it
// steps down, fences itself, and a new leader heals.
func TestHAFencesAPartitionedLeader(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	victim, survivors := pick(ms, true)
	fenceAfterCut(t, victim, survivors)
}

// pick returns the leader (or a member that is not the leader) and the
// others.
func pick(ms []*harness.Member, leader bool) (*harness.Member, []*harness.Member) {
	var victim *harness.Member
	var rest []*harness.Member
	roles := ms[0].Members()
	for _, m := range ms {
		if victim == nil && (roles[m.Host.Name].Role == "leader") == leader {
			victim = m
		} else {
			rest = append(rest, m)
		}
	}
	return victim, rest
}

// fenceAfterCut runs an HA container on victim, cuts victim off, and checks
// it stops the container itself before a survivor starts it, the two never
// running at once, and that after the heal victim drops its copy. It
// returns the new owner.
func fenceAfterCut(t *testing.T, victim *harness.Member, survivors []*harness.Member) string {
	t.Helper()
	survivors[0].MustShoal("image", "build", "busybox")
	s := survivors[0]
	s.MustShoal("launch", "busybox", "db1", "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s")
	s.WaitFor("a replica of db1", 60*time.Second, func() bool {
		return len(containerJSON(t, s, "db1").Container.Replicas) > 0
	})
	lxcPath := filepath.Join(victim.StateDir, "lxc")
	runningOnVictim := func() bool {
		out, _ := victim.Host.Run(context.Background(), "lxc-info", "-P", lxcPath, "-n", "db1", "-s")
		return strings.Contains(out, "RUNNING") || strings.Contains(out, "FROZEN")
	}
	runningElsewhere := func() (string, bool) {
		for _, m := range survivors {
			out, _ := m.Host.Run(context.Background(), "lxc-info", "-P", filepath.Join(m.StateDir, "lxc"), "-n", "db1", "-s")
			if strings.Contains(out, "RUNNING") {
				return m.Host.Name, true
			}
		}
		return "", false
	}
	if !runningOnVictim() {
		t.Fatalf("db1 is not running on %s before the cut", victim.Host.Name)
	}
	// Probers on every host ping db1's address 20 times a second through
	// the cut and the heal: after the cut, the cut host can reach only its
	// own copy, the others only the new one.
	ip := s.WaitAddress("db1", 60*time.Second)
	probes := startProbers(t, append([]*harness.Member{victim}, survivors...), ip)
	victim.WaitFor("the prober on "+victim.Host.Name+" to hear db1", 10*time.Second, func() bool {
		return len(probes.answers(victim.Host.Name)) > 0
	})
	cut := time.Now()
	if err := victim.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	var fenced, healed time.Duration
	var owner string
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && (fenced == 0 || healed == 0) {
		on := runningOnVictim()
		where, elsewhere := runningElsewhere()
		if on && elsewhere {
			t.Fatalf("db1 runs on the cut %s and on %s at once, %s after the cut", victim.Host.Name, where, time.Since(cut))
		}
		if !on && fenced == 0 {
			fenced = time.Since(cut)
		}
		if elsewhere && healed == 0 {
			healed, owner = time.Since(cut), where
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fenced == 0 || healed == 0 {
		t.Fatalf("after 90 s: fenced after %s, running elsewhere after %s (0: never)", fenced, healed)
	}
	t.Logf("cut %s: it stopped db1 itself %s after the cut; db1 ran on %s %s after the cut",
		victim.Host.Name, fenced.Round(10*time.Millisecond), owner, healed.Round(10*time.Millisecond))
	// Until db1 answers on the overlay elsewhere (its network comes up
	// after it runs).
	survivors[0].WaitFor("the probers to hear db1's new copy", 30*time.Second, func() bool {
		for _, m := range survivors {
			if a := probes.answers(m.Host.Name); len(a) > 0 && a[len(a)-1].After(cut) {
				return true
			}
		}
		return false
	})
	probes.stop()
	var lastOld, firstNew time.Time
	for _, a := range probes.answers(victim.Host.Name) {
		lastOld = a
	}
	for _, m := range survivors {
		for _, a := range probes.answers(m.Host.Name) {
			if a.After(cut) && (firstNew.IsZero() || a.Before(firstNew)) {
				firstNew = a
			}
		}
	}
	if !lastOld.Before(firstNew) {
		t.Errorf("two copies of db1 answered on the overlay at once: the cut %s's copy answered %s after the cut, the new copy already %s after it",
			victim.Host.Name, lastOld.Sub(cut).Round(time.Millisecond), firstNew.Sub(cut).Round(time.Millisecond))
	}
	t.Logf("probers on %s: the cut copy answered last %s after the cut, the new one first %s after it",
		ip, lastOld.Sub(cut).Round(time.Millisecond), firstNew.Sub(cut).Round(time.Millisecond))
	if !strings.Contains(victim.Log(), "member-fenced") && !strings.Contains(victim.Log(), "fenced: no Raft quorum") {
		t.Errorf("%s's log does not say it fenced itself", victim.Host.Name)
	}
	if err := victim.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	victim.WaitFor(victim.Host.Name+" to drop its stale copy", 60*time.Second, func() bool {
		_, err := victim.Host.Run(context.Background(), "test", "-e", filepath.Join(lxcPath, "db1"))
		return err != nil
	})
	if where, ok := runningElsewhere(); !ok || where != owner || runningOnVictim() {
		t.Errorf("after the heal: db1 running on %q (want only %s), on the victim: %v", where, owner, runningOnVictim())
	}

	return owner
}

// probers ping one address from several hosts, 20 times a second each,
// and keep when each answer came back.
type probers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	heard  map[string][]time.Time
}

// startProbers starts a ping on each member's host; it stops with the test
// at the latest.
func startProbers(t *testing.T, ms []*harness.Member, ip string) *probers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &probers{cancel: cancel, heard: map[string][]time.Time{}}
	for _, m := range ms {
		cmd := m.Host.Command(ctx, "ping", "-D", "-n", "-i", "0.05", "-W", "1", ip)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("ping %s on %s: %v", ip, m.Host.Name, err)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				// [1765090000.123456] 64 bytes from 10.0.0.5: icmp_seq=5 ttl=64 time=0.1 ms
				l := sc.Text()
				ts, rest, ok := strings.Cut(strings.TrimPrefix(l, "["), "] ")
				f, err := strconv.ParseFloat(ts, 64)
				if !ok || err != nil || !strings.Contains(rest, "bytes from "+ip+":") {
					continue
				}
				p.mu.Lock()
				p.heard[m.Host.Name] = append(p.heard[m.Host.Name], time.Unix(0, int64(f*1e9)))
				p.mu.Unlock()
			}
			_ = cmd.Wait()
		}()
	}
	t.Cleanup(p.stop)
	return p
}

// answers returns when the prober on a host heard answers, in order.
func (p *probers) answers(host string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.heard[host])
}

// stop ends every ping.
func (p *probers) stop() {
	p.cancel()
	p.wg.Wait()
}

// TestShutdownEvacuates: with cluster.shutdown=evacuate, a member's clean
// shutdown first moves its containers live to the others — an HA
// container's process goes on there — and the member is left evacuated
// (the scheduler places nothing there; it is never healed) until `shoal
// cluster restore` brings the container back.
func TestShutdownEvacuates(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1, victim := ms[0], ms[2]
	m1.MustShoal("image", "build", "busybox")
	if _, errOut, code := m1.Shoal("cluster", "config", "set", "cluster.shutdown=later"); code == 0 || !strings.Contains(errOut, "cluster.shutdown") || !strings.Contains(errOut, "stay, evacuate") {
		t.Errorf("cluster.shutdown=later: exit %d, %q; want a refusal naming the key and its values", code, errOut)
	}
	m1.MustShoal("cluster", "config", "set", "cluster.shutdown=evacuate")
	m1.MustShoal("launch", "busybox", "db1", "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s")
	m1.MustShoal("exec", "db1", "--", "sh", "-c",
		`setsid sh -c 'echo $$ > /root/pid; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &`)
	var pid string
	m1.WaitFor("db1's loop to start", 10*time.Second, func() bool {
		pid, _, _ = m1.Shoal("exec", "db1", "--", "cat", "/root/pid")
		pid = strings.TrimSpace(pid)
		return pid != ""
	})

	victim.Stop()
	c := m1.List()["db1"]
	if c.Container.Node == victim.Host.Name || !strings.EqualFold(c.State.Status, "running") {
		t.Fatalf("after %s shut down with cluster.shutdown=evacuate, db1 is %s on %s", victim.Host.Name, c.State.Status, c.Container.Node)
	}
	if _, _, code := m1.Shoal("exec", "db1", "--", "test", "-e", "/proc/"+pid); code != 0 {
		t.Errorf("db1's process %s did not survive the move to %s (not moved live)", pid, c.Container.Node)
	}
	if st := m1.Members()[victim.Host.Name].Status; st != "evacuated" {
		t.Errorf("%s is %q after its evacuating shutdown, want evacuated", victim.Host.Name, st)
	}
	t.Logf("%s shut down: db1 moved live to %s first", victim.Host.Name, c.Container.Node)

	victim.Start()
	if out := m1.MustShoal("cluster", "restore", victim.Host.Name); !strings.Contains(out, "db1:") {
		t.Errorf("cluster restore %s: %q, want db1 moved back", victim.Host.Name, out)
	}
	if c := m1.List()["db1"]; c.Container.Node != victim.Host.Name || !strings.EqualFold(c.State.Status, "running") {
		t.Errorf("after the restore, db1 is %s on %s, want running on %s", c.State.Status, c.Container.Node, victim.Host.Name)
	}
}
