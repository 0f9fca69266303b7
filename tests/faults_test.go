package tests

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// createDeadline is how long a create through a survivor may take right
// after a member died: gossip's detection (~2 s), an election when the
// leader died, one placement again, and the container's volume.
const createDeadline = 45 * time.Second

// TestCreatesAfterMemberDeath kills a member's host outright (link cut,
// shoald SIGKILLed) and at once creates containers through each survivor:
// every create succeeds within its deadline and lands on a live member,
// none is recorded on the dead one. A container the dead member owned is
// listed UNKNOWN (never the RUNNING it last reported), and a call that must
// run there fails fast naming the member. The member comes back; then the
// leader dies and the same holds.
func TestCreatesAfterMemberDeath(t *testing.T) {
	requireCluster(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	ms[0].MustShoal("image", "build", "busybox")
	leaderOf := func(m *harness.Member) string {
		for n, r := range m.Members() {
			if r.Role == "leader" {
				return n
			}
		}
		return ""
	}
	round := 0
	for _, killLeader := range []bool{false, true} {
		round++
		leader := leaderOf(ms[0])
		var victim *harness.Member
		var survivors []*harness.Member
		for _, m := range ms {
			if victim == nil && (m.Host.Name == leader) == killLeader {
				victim = m
				continue
			}
			survivors = append(survivors, m)
		}
		what := "a member"
		if killLeader {
			what = "the leader"
		}
		t.Logf("round %d: %s (%s) dies", round, what, victim.Host.Name)
		pre := fmt.Sprintf("pre%d", round)
		survivors[0].MustShoal("launch", "busybox", pre, "--target", victim.Host.Name)

		if err := victim.Host.Cut(); err != nil {
			t.Fatal(err)
		}
		victim.Kill()
		killed := time.Now()

		// Ten creates through each survivor, both at once, from the instant
		// of the kill.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var longest time.Duration
		var names []string
		for i, s := range survivors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 10 {
					name := fmt.Sprintf("r%d-s%d-%d", round, i, j)
					start := time.Now()
					out, errOut, code := s.Shoal("init", "busybox", name)
					took := time.Since(start)
					mu.Lock()
					longest = max(longest, took)
					names = append(names, name)
					mu.Unlock()
					if code != 0 {
						t.Errorf("create %s through %s %s after the kill: exit %d\n%s%s", name, s.Host.Name, time.Since(killed).Round(time.Millisecond), code, out, errOut)
					} else if took > createDeadline {
						t.Errorf("create %s through %s took %s (deadline %s)", name, s.Host.Name, took, createDeadline)
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("20 creates through the survivors: the longest took %s", longest.Round(time.Millisecond))

		// Each lands on a live member, exactly once, and is there.
		s := survivors[0]
		list := s.List()
		for _, name := range names {
			ct, ok := list[name]
			switch {
			case !ok:
				t.Errorf("%s is not listed", name)
			case ct.Container.Node == victim.Host.Name:
				t.Errorf("%s was placed on the dead member %s", name, victim.Host.Name)
			case strings.ToUpper(ct.State.Status) != "STOPPED":
				t.Errorf("%s on %s: state %q, want STOPPED", name, ct.Container.Node, ct.State.Status)
			}
		}
		if ct := list[pre]; !strings.EqualFold(ct.State.Status, "Unknown") {
			t.Errorf("%s on the dead member is listed %q, want UNKNOWN", pre, ct.State.Status)
		}
		// A call that must run on the dead member says so, at once.
		start := time.Now()
		_, errOut, code := s.Shoal("exec", pre, "--", "true")
		took := time.Since(start)
		if code == 0 || !strings.Contains(errOut, victim.Host.Name) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("exec in a container on the dead member: exit %d, %q (want a one-line error naming %s)", code, errOut, victim.Host.Name)
		}
		if took > 5*time.Second {
			t.Errorf("exec in a container on the dead member took %s to fail", took)
		}
		t.Logf("exec on the dead member failed in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(errOut))

		// It comes back: it owns what it owned, nothing more.
		if err := victim.Host.Heal(); err != nil {
			t.Fatal(err)
		}
		victim.Start()
		s.WaitFor(victim.Host.Name+" back online", 60*time.Second, func() bool {
			return s.Members()[victim.Host.Name].Status == "online"
		})
		s.WaitFor(pre+" running again", 60*time.Second, func() bool {
			return strings.EqualFold(s.List()[pre].State.Status, "Running")
		})
		for _, name := range names {
			if ct := s.List()[name]; ct.Container.Node == victim.Host.Name {
				t.Errorf("after %s came back, %s is recorded there", victim.Host.Name, name)
			}
		}
		for _, name := range append(names, pre) {
			s.MustShoal("delete", "-f", name)
		}
	}
}
