package tests

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDebianBoots builds (or reuses the cached) Debian bookworm image, boots
// it unprivileged, and checks systemd reached running (or degraded) and the
// container got a DHCP address on the default bridge.
func TestDebianBoots(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Debian image build (debootstrap takes about a minute the first time)")
	}
	d := startDaemon(t)
	out, errOut, code := d.Shoal("image", "build", "debian", "--suite", "bookworm")
	if code != 0 {
		t.Fatalf("image build debian: %d\n%s\n%s", code, out, errOut)
	}
	c := uniq("deb")
	d.MustShoal("launch", "debian", c)
	var state string
	d.WaitFor("systemd to finish booting", 90*time.Second, func() bool {
		out, _, _ := d.Shoal("exec", c, "--", "systemctl", "is-system-running")
		state = strings.TrimSpace(out)
		return state == "running" || state == "degraded"
	})
	if state == "degraded" {
		failed, _, _ := d.Shoal("exec", c, "--", "systemctl", "--failed", "--no-legend")
		t.Logf("systemd is degraded; failed units:\n%s", failed)
	}
	// Its DHCP address is leased and configured on eth0 with a default route.
	d.WaitAddress(c, 60*time.Second)
	if got := d.MustShoal("exec", c, "--", "hostname"); strings.TrimSpace(got) != c {
		t.Errorf("hostname = %q", got)
	}
	if got := d.MustShoal("exec", c, "--", "sh", "-c", "id -u; stat -c %u /proc/1/root 2>/dev/null || true"); !strings.HasPrefix(got, "0\n") {
		t.Errorf("id in the container: %q", got)
	}
	d.MustShoal("stop", c)
	if st := d.List()[c].State.Status; st != "Stopped" {
		t.Fatalf("clean stop of a systemd container: %s", st)
	}
}

// TestMonitor shows lifecycle and operation events as they happen.
func TestMonitor(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mon := exec.CommandContext(ctx, filepath.Join(binDir, "shoal"), "monitor")
	mon.Env = append(mon.Environ(), "SHOAL_SOCKET="+d.Socket)
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
	defer func() { cancel(); mon.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Wait until the subscription is live before acting.
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "Listening") {
		t.Fatalf("monitor did not start: %q %v", line, err)
	}
	c := uniq("mon")
	d.MustShoal("launch", "busybox", c)
	d.MustShoal("stop", "-f", c)
	want := map[string]bool{"lifecycle container-started " + c: false, "lifecycle container-stopped " + c: false, "operation OPERATION_STATUS_SUCCESS containers/" + c: false}
	timeout := time.After(20 * time.Second)
	for {
		missing := 0
		for _, seen := range want {
			if !seen {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("monitor ended early; still missing %v", want)
			}
			for w := range want {
				if strings.Contains(l, w) {
					want[w] = true
				}
			}
		case <-timeout:
			t.Fatalf("monitor did not show %v", want)
		}
	}
}
