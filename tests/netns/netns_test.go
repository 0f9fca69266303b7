package netns

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a small echo server when re-exec'd
// on a host (a real separate process to freeze, stop and kill).
const helperEnv = "SHN_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "echo" {
		echoMain()
		return
	}
	os.Exit(m.Run())
}

// echoMain listens on the port the kernel picks, prints it, echoes lines, and
// exits 0 on SIGTERM.
func echoMain() {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("got SIGTERM")
		os.Exit(0)
	}()
	fmt.Printf("listening %d\n", l.Addr().(*net.TCPAddr).Port)
	serveEcho(l)
}

// serveEcho answers each line with the same line until l is closed.
func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintln(c, sc.Text()); err != nil {
					return
				}
			}
		}()
	}
}

// Deadlines of one echo: generous where an answer is expected (the machine
// is shared and may be slow), short where silence is.
const (
	answerWithin  = 5 * time.Second
	silenceWithin = time.Second
)

// echo sends one line from host from to addr and expects it back within
// timeout.
func echo(from *Host, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := "hello from " + from.Name
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read from %s: %w", addr, err)
	}
	if strings.TrimSpace(line) != msg {
		return fmt.Errorf("echo from %s: got %q", addr, line)
	}
	return nil
}

// cluster builds an underlay with n hosts h1..hn, each serving echo on an
// in-process listener created in its netns; it returns the hosts and their
// echo addresses.
func cluster(t *testing.T, n int) (*Underlay, []*Host, []string) {
	t.Helper()
	Require(t)
	u, err := NewUnderlay(t)
	if err != nil {
		t.Fatalf("%v", err)
	}
	var hosts []*Host
	var addrs []string
	for i := 1; i <= n; i++ {
		h, err := u.AddHost(fmt.Sprintf("h%d", i))
		if err != nil {
			t.Fatalf("%v", err)
		}
		l, err := h.Listen("tcp", net.JoinHostPort(h.IP.String(), "0"))
		if err != nil {
			t.Fatalf("%v", err)
		}
		t.Cleanup(func() { l.Close() })
		go serveEcho(l)
		hosts = append(hosts, h)
		addrs = append(addrs, l.Addr().String())
	}
	return u, hosts, addrs
}

// reach asserts that echo from hosts[i] to addrs[j] works (want) or fails.
func reach(t *testing.T, hosts []*Host, addrs []string, i, j int, want bool) {
	t.Helper()
	timeout := silenceWithin
	if want {
		timeout = answerWithin
	}
	err := echo(hosts[i], addrs[j], timeout)
	switch {
	case want && err != nil:
		t.Errorf("%s -> %s: want reachable, got %v", hosts[i].Name, hosts[j].Name, err)
	case !want && err == nil:
		t.Errorf("%s -> %s: want unreachable, but echo worked", hosts[i].Name, hosts[j].Name)
	}
}

func TestHostsReachEachOther(t *testing.T) {
	_, hosts, addrs := cluster(t, 3)
	for i := range hosts {
		for j := range hosts {
			if i != j {
				reach(t, hosts, addrs, i, j, true)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h1 := hosts[0]
	// Commands run in the netns: ICMP through busybox.
	if _, err := exec.LookPath("busybox"); err == nil {
		if _, err := h1.Run(ctx, "busybox", "ping", "-c1", "-W2", hosts[1].IP.String()); err != nil {
			t.Errorf("ping h2 from h1: %v", err)
		}
	}
	// No way out: no default route, the machine's network is unroutable.
	routes, err := h1.Run(ctx, "ip", "route", "show")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if strings.Contains(routes, "default") || strings.Contains(routes, "192.0.2.") {
		t.Errorf("h1 has a route out of the underlay:\n%s", routes)
	}
	if out, err := h1.Run(ctx, "ip", "route", "get", "192.0.2.2"); err == nil {
		t.Errorf("h1 has a route to the machine's network: %s", out)
	}
	// The host's /sys shows its own interfaces, and cgroups are still there.
	ls, err := h1.Run(ctx, "ls", "/sys/class/net")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if got := strings.Join(strings.Fields(ls), " "); got != "eth0 lo" {
		t.Errorf("/sys/class/net on h1 = %q, want \"eth0 lo\"", got)
	}
	if _, err := h1.Run(ctx, "mountpoint", "-q", "/sys/fs/cgroup"); err != nil {
		if _, rootErr := exec.Command("mountpoint", "-q", "/sys/fs/cgroup").CombinedOutput(); rootErr == nil {
			t.Errorf("/sys/fs/cgroup is mounted on the machine but not on h1: %v", err)
		}
	}
	// The working directory is carried in.
	cmd := h1.Command(ctx, "pwd")
	cmd.Dir = os.TempDir()
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != os.TempDir() {
		t.Errorf("pwd on h1 with Dir %s: %q, %v", os.TempDir(), out, err)
	}
}

func TestCutHeal(t *testing.T) {
	_, hosts, addrs := cluster(t, 3)
	h2 := hosts[1]
	if err := h2.Cut(); err != nil {
		t.Fatalf("%v", err)
	}
	reach(t, hosts, addrs, 0, 1, false)
	reach(t, hosts, addrs, 1, 0, false)
	reach(t, hosts, addrs, 0, 2, true)
	reach(t, hosts, addrs, 2, 0, true)
	// Cutting twice is the same cut.
	if err := h2.Cut(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := h2.Heal(); err != nil {
		t.Fatalf("%v", err)
	}
	reach(t, hosts, addrs, 0, 1, true)
	reach(t, hosts, addrs, 1, 0, true)
	// Healing twice is harmless.
	if err := h2.Heal(); err != nil {
		t.Fatalf("%v", err)
	}
}

func TestPartitionHeal(t *testing.T) {
	u, hosts, addrs := cluster(t, 3)
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	if err := u.Partition([]*Host{h1, h2}, []*Host{h3}); err != nil {
		t.Fatalf("%v", err)
	}
	reach(t, hosts, addrs, 0, 1, true)
	reach(t, hosts, addrs, 1, 0, true)
	for _, p := range [][2]int{{0, 2}, {2, 0}, {1, 2}, {2, 1}} {
		reach(t, hosts, addrs, p[0], p[1], false)
	}
	// A new partition replaces the old one.
	if err := u.Partition([]*Host{h1}, []*Host{h2, h3}); err != nil {
		t.Fatalf("%v", err)
	}
	reach(t, hosts, addrs, 1, 2, true)
	reach(t, hosts, addrs, 0, 1, false)
	if err := u.Heal(); err != nil {
		t.Fatalf("%v", err)
	}
	for i := range hosts {
		for j := range hosts {
			if i != j {
				reach(t, hosts, addrs, i, j, true)
			}
		}
	}
	if err := u.Partition([]*Host{h1}, []*Host{h1}); err == nil {
		t.Errorf("a host in two groups was accepted")
	}
}

// startEcho starts the test binary as an echo server on h and returns it
// with its address.
func startEcho(t *testing.T, h *Host) (*Proc, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("%v", err)
	}
	p, err := h.Start("env", helperEnv+"=echo", exe)
	if err != nil {
		t.Fatalf("%v", err)
	}
	re := regexp.MustCompile(`listening (\d+)`)
	var port string
	WaitFor(t, "echo server on "+h.Name, 30*time.Second, func() bool {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			port = m[1]
			return true
		}
		if !p.Running() {
			t.Fatalf("echo server exited: %v\n%s", p.Wait(), p.Output())
		}
		return false
	})
	return p, net.JoinHostPort(h.IP.String(), port)
}

func TestProcFreezeThawKillStop(t *testing.T) {
	_, hosts, _ := cluster(t, 2)
	h1, h2 := hosts[0], hosts[1]
	p, addr := startEcho(t, h2)
	if err := echo(h1, addr, answerWithin); err != nil {
		t.Fatalf("echo server on h2: %v", err)
	}
	if err := p.Freeze(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := echo(h1, addr, silenceWithin); err == nil {
		t.Errorf("a frozen server answered")
	}
	if err := p.Thaw(); err != nil {
		t.Fatalf("%v", err)
	}
	WaitFor(t, "thawed server to answer", 10*time.Second, func() bool { return echo(h1, addr, answerWithin) == nil })
	p.Kill()
	if p.Running() {
		t.Errorf("killed process still running")
	}
	if err := p.Wait(); err == nil {
		t.Errorf("killed process exited cleanly")
	}
	if err := echo(h1, addr, silenceWithin); err == nil {
		t.Errorf("killed server answered")
	}

	// Stop: SIGTERM reaches the process even when it is frozen.
	p2, addr2 := startEcho(t, h2)
	if err := echo(h1, addr2, answerWithin); err != nil {
		t.Fatalf("second echo server: %v", err)
	}
	if err := p2.Freeze(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := p2.Stop(); err != nil {
		t.Errorf("stop: %v\n%s", err, p2.Output())
	}
	if !strings.Contains(p2.Output(), "got SIGTERM") {
		t.Errorf("output lacks the SIGTERM line:\n%s", p2.Output())
	}
	if p2.Pid() <= 0 {
		t.Errorf("pid %d", p2.Pid())
	}
}

// TestTeardownLeavesNothing closes an underlay early and checks that no
// netns, link, marker, process or root nftables rule of it remains.
func TestTeardownLeavesNothing(t *testing.T) {
	u, hosts, _ := cluster(t, 2)
	p, _ := startEcho(t, hosts[0])
	if err := hosts[1].Cut(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := u.Partition([]*Host{hosts[0]}, []*Host{hosts[1]}); err != nil {
		t.Fatalf("%v", err)
	}
	// A process not started through Start is killed too.
	stray := hosts[1].Command(context.Background(), "sleep", "600")
	if err := stray.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	strayDone := make(chan struct{})
	go func() { _ = stray.Wait(); close(strayDone) }()
	before, err := Resources(u.ID)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(before["netns"]) != 2 || len(before["link"]) != 3 || len(before["marker"]) != 1 {
		t.Fatalf("resources before close: %v", before)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	after, err := Resources(u.ID)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(after) != 0 {
		t.Errorf("left after close: %v", after)
	}
	if p.Running() {
		t.Errorf("process still running after close")
	}
	select {
	case <-strayDone:
	case <-time.After(10 * time.Second):
		t.Errorf("stray process still running after close")
	}
	if out, err := exec.Command("nft", "list", "ruleset").CombinedOutput(); err != nil {
		t.Errorf("nft list ruleset: %v", err)
	} else if strings.Contains(string(out), "shn_") {
		t.Errorf("root netns has rules of ours:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(MarkerDir, u.ID)); err == nil {
		t.Errorf("marker left")
	}
	if _, err := u.AddHost("late"); err == nil {
		t.Errorf("AddHost on a closed underlay succeeded")
	}
}

// TestCleanLeftovers fakes what a killed test binary leaves (a marker whose
// owner is gone, a bridge, a netns with a process in it) and checks that the
// sweeper removes it and spares a live underlay.
func TestCleanLeftovers(t *testing.T) {
	Require(t)
	live, err := NewUnderlay(t)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := live.AddHost("alive"); err != nil {
		t.Fatalf("%v", err)
	}
	// An owner that is gone: a process that has exited.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatalf("%v", err)
	}
	id := randHex(3)
	dir := filepath.Join(MarkerDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(fmt.Sprintf("%d 1\n", gone.Process.Pid)), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ns := NetnsPrefix + "dead-" + id
	ctx := context.Background()
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", BridgePrefix + id, "type", "bridge"},
		{"link", "add", VethPrefix + id + "01", "type", "veth", "peer", "name", "eth0", "netns", ns},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			t.Fatalf("%v", err)
		}
	}
	// Safety net should the sweeper fail.
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		_ = exec.Command("ip", "link", "del", BridgePrefix+id).Run()
		_ = os.RemoveAll(dir)
	})
	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "600")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	sleeperDone := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(sleeperDone) }()
	t.Cleanup(func() { _ = syscall.Kill(-sleeper.Process.Pid, syscall.SIGKILL) })
	WaitFor(t, "sleeper in the leftover netns", 10*time.Second, func() bool {
		out, _ := output(ctx, "ip", "netns", "pids", ns)
		return strings.TrimSpace(out) != ""
	})

	removed, err := CleanLeftovers()
	if err != nil {
		t.Fatalf("clean leftovers: %v", err)
	}
	t.Logf("removed: %v", removed)
	left, err := Resources(id)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(left) != 0 {
		t.Errorf("leftovers survive the sweeper: %v", left)
	}
	select {
	case <-sleeperDone:
	case <-time.After(10 * time.Second):
		t.Errorf("process in the leftover netns survives the sweeper")
	}
	alive, err := Resources(live.ID)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(alive["netns"]) != 1 || len(alive["link"]) != 2 || len(alive["marker"]) != 1 {
		t.Errorf("sweeper touched a live underlay: %v", alive)
	}
}
