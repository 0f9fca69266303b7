package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestOverlaySurvivesPartition: a member cut off from the others keeps
// forwarding between its own containers; a container moves live between
// the other two meanwhile; when the cut heals, the cut member's forwarding
// entries follow the cluster's record (how long that took is reported) and
// its containers reach the moved one; a removed member's entries are
// dropped by the others. All on the cluster's default overlay.
func TestOverlaySurvivesPartition(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1, m3 := ms[0], ms[2]
	m1.MustShoal("image", "build", "busybox")
	for name, target := range map[string]string{"x1": "n1", "x2": "n2", "y1": "n3", "y2": "n3"} {
		m1.MustShoal("launch", "busybox", name, "--target", target)
	}
	ips := map[string]string{}
	for _, name := range []string{"x1", "x2", "y1", "y2"} {
		ips[name] = m1.WaitAddress(name, 60*time.Second)
	}
	mac := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(
		grepLine(m1.MustShoal("config", "show", "x1"), "volatile.eth0.hwaddr:"), "volatile.eth0.hwaddr:")))
	ping := func(m *harness.Member, from, to string) error {
		_, errOut, code := m.Shoal("exec", from, "--", "ping", "-c", "1", "-W", "3", to)
		if code != 0 {
			return &pingErr{from, to, errOut}
		}
		return nil
	}
	fdbDst := func(m *harness.Member) string { // x1's VXLAN entry on m
		out, _ := m.Host.Run(context.Background(), "bridge", "fdb", "show", "dev", "shvx1")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == mac && f[1] == "dst" {
				return f[2]
			}
		}
		return ""
	}
	if got := fdbDst(m3); got != ms[0].Host.IP.String() {
		t.Fatalf("n3 forwards x1 (%s) to %q, want n1's %s", mac, got, ms[0].Host.IP)
	}

	if err := m3.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	// Cut off: n3's own containers still reach each other; n1 and n2 go on.
	if err := ping(m3, "y1", ips["y2"]); err != nil {
		t.Errorf("on the cut member: %v", err)
	}
	liveMove(t, m1, "x1", "n2")
	if err := ping(m1, "x2", ips["x1"]); err != nil {
		t.Errorf("on the majority after the move: %v", err)
	}
	if got := fdbDst(m3); got != ms[0].Host.IP.String() {
		t.Fatalf("while cut, n3 already forwards x1 to %q", got)
	}

	if err := m3.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	m3.WaitFor("n3's entry for x1 to follow it to n2", 30*time.Second, func() bool {
		return fdbDst(m3) == ms[1].Host.IP.String()
	})
	t.Logf("after the heal, n3 forwarded to x1's new member within %s", time.Since(healed).Round(time.Millisecond))
	if err := ping(m3, "y1", ips["x1"]); err != nil {
		t.Errorf("after the heal: %v", err)
	}

	// n3 leaves: n1 drops its broadcast entry for n3's VTEP.
	for _, name := range []string{"y1", "y2"} {
		m1.MustShoal("delete", name, "--force")
	}
	m1.MustShoal("cluster", "remove", "n3")
	m1.WaitFor("n1 to drop n3's VTEP", 30*time.Second, func() bool {
		out, _ := m1.Host.Run(context.Background(), "bridge", "fdb", "show", "dev", "shvx1")
		return !strings.Contains(out, "dst "+m3.Host.IP.String())
	})
}

type pingErr struct{ from, to, out string }

func (e *pingErr) Error() string { return "ping " + e.to + " from " + e.from + ": " + e.out }

// grepLine returns the first line of s that starts with prefix (after
// its indentation), unindented.
func grepLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimLeft(l, " "); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
