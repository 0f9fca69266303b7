package netns

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLXCInsideHost starts a busybox container from inside a host and checks
// that its veth lands on a bridge inside the host and that LXC's command
// socket is per netns: the host sees it running, the root
// namespace does not.
func TestLXCInsideHost(t *testing.T) {
	Require(t)
	for _, bin := range []string{"lxc-create", "lxc-start", "lxc-info", "lxc-stop", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("LXC in a host needs %s", bin)
			}
			t.Skipf("LXC in a host needs %s", bin)
		}
	}
	u, err := NewUnderlay(t)
	if err != nil {
		t.Fatalf("%v", err)
	}
	h, err := u.AddHost("lxc")
	if err != nil {
		t.Fatalf("%v", err)
	}
	lxcPath := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "c" + u.ID
	// Registered after the underlay's teardown, so it runs before it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = h.Run(ctx, "lxc-stop", "-P", lxcPath, "-n", name, "-k")
	})
	if out, err := h.Run(ctx, "lxc-create", "-P", lxcPath, "-n", name, "-t", "busybox"); err != nil {
		t.Fatalf("lxc-create: %v\n%s", err, out)
	}
	conf := lxcPath + "/" + name + "/config"
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("%v", err)
	}
	// A veth on a bridge inside the host: LXC finds the bridge in /sys.
	_, err = f.WriteString("\nlxc.net.0.type = veth\nlxc.net.0.link = cbr0\nlxc.net.0.flags = up\n")
	f.Close()
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, args := range [][]string{{"link", "add", "cbr0", "type", "bridge"}, {"link", "set", "cbr0", "up"}} {
		if _, err := h.Run(ctx, "ip", args...); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if out, err := h.Run(ctx, "lxc-start", "-P", lxcPath, "-n", name, "-d", "-l", "DEBUG", "-o", lxcPath+"/lxc.log"); err != nil {
		log, _ := os.ReadFile(lxcPath + "/lxc.log")
		t.Fatalf("lxc-start: %v\n%s\n%s", err, out, log)
	}
	WaitFor(t, "container running on the host", 30*time.Second, func() bool {
		out, _ := h.Run(ctx, "lxc-info", "-P", lxcPath, "-n", name, "-s")
		return strings.Contains(out, "RUNNING")
	})
	if out, err := h.Run(ctx, "ip", "-br", "link", "show", "master", "cbr0"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("no container veth on the host's bridge: %q, %v", out, err)
	}
	// From the root netns the abstract command socket is not reachable.
	out, _ := exec.CommandContext(ctx, "lxc-info", "-P", lxcPath, "-n", name, "-s").CombinedOutput()
	if strings.Contains(string(out), "RUNNING") {
		t.Errorf("root netns sees the host's container running: %s", out)
	}
	if out, err := h.Run(ctx, "lxc-stop", "-P", lxcPath, "-n", name, "-k"); err != nil {
		t.Errorf("lxc-stop: %v\n%s", err, out)
	}
}
