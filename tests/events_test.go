package tests

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// monitorLines runs `shoal monitor ARGS` against a member until the test
// ends and returns its lines, once it says it listens.
func monitorLines(t *testing.T, m *harness.Member, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mon := m.Host.Command(ctx, filepath.Join(binDir, "shoal"), append([]string{"monitor"}, args...)...)
	mon.Env = append(os.Environ(), "SHOAL_SOCKET="+m.Socket)
	stdout, err := mon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := mon.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); mon.Wait() })
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "Listening") {
		t.Fatalf("monitor did not start: %q %v", line, err)
	}
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	return lines
}

// waitLine waits for a line holding every part.
func waitLine(t *testing.T, lines <-chan string, timeout time.Duration, parts ...string) string {
	t.Helper()
	l, ok := lineWithin(lines, timeout, parts...)
	if !ok {
		t.Fatalf("no monitor line with %q within %s", parts, timeout)
	}
	return l
}

// TestMonitorMergesMembers: `shoal monitor` on one member shows what
// happens on the others — their lifecycle events and their logs, each
// naming its member — and keeps following a member that dies and
// comes back.
func TestMonitorMergesMembers(t *testing.T) {
	requireCluster(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	m1, m2 := ms[0], ms[1]
	m1.MustShoal("image", "build", "busybox")
	all := monitorLines(t, m1)
	logs := monitorLines(t, m1, "--type", "logging")
	if _, errOut, code := m1.Shoal("monitor", "--type", "gossip"); code == 0 || !strings.Contains(errOut, "logging") {
		t.Errorf("monitor --type gossip: exit %d, %q (want the allowed types named)", code, errOut)
	}

	c := harness.Uniq("ev")
	m1.MustShoal("launch", "busybox", c, "--target", m2.Host.Name)
	t.Logf("%s", waitLine(t, all, 30*time.Second, " "+m2.Host.Name+" lifecycle container-started "+c))
	// A log record of n2's, through n1.
	t.Logf("%s", waitLine(t, logs, 30*time.Second, " "+m2.Host.Name+" logging "))

	// n2 dies and comes back: its events reach n1's monitor again.
	m2.Kill()
	m2.Start()
	m1.WaitFor(m2.Host.Name+" online again", 60*time.Second, func() bool {
		return m1.Members()[m2.Host.Name].Status == "online"
	})
	// The relay finds the member again within a second or so of its
	// return: stop and start until one of its events shows (a few tries).
	for try := 0; ; try++ {
		action := "stop"
		if try%2 == 1 {
			action = "start"
		}
		m1.MustShoal(action, c)
		if l, ok := lineWithin(all, 5*time.Second, " "+m2.Host.Name+" lifecycle container-", c); ok {
			t.Logf("after %s came back: %s", m2.Host.Name, l)
			break
		}
		if try == 5 {
			t.Fatalf("no event of %s reached %s's monitor after it came back", m2.Host.Name, m1.Host.Name)
		}
	}
	m1.MustShoal("delete", "-f", c)
}

// lineWithin is waitLine that reports a timeout instead of failing.
func lineWithin(lines <-chan string, timeout time.Duration, parts ...string) (string, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", false
			}
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return l, true
			}
		case <-deadline:
			return "", false
		}
	}
}
