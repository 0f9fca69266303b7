package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Host is a simulated machine: a named network namespace on an underlay, and
// a mount namespace whose /sys belongs to that netns.
type Host struct {
	// Name is the name given to AddHost.
	Name string
	// NS is the named netns ("shn-<name>-<id>", a file in /run/netns).
	NS string
	// IP is the address of the host's eth0 on the underlay (a /24).
	IP net.IP
	// Veth is the host-side end of the host's link, on the underlay bridge.
	Veth string

	u *Underlay

	mu         sync.Mutex
	holder     *exec.Cmd
	holderDone chan struct{}
	procs      []*Proc
}

// nsPath is the file that names the host's netns.
func (h *Host) nsPath() string { return filepath.Join("/run/netns", h.NS) }

// setup builds the netns, the link and the holder of the mount namespace.
func (h *Host) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	steps := [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	if err := disableIPv6(h.Veth); err != nil {
		return err
	}
	steps = [][]string{
		{"link", "set", h.Veth, "master", h.u.Bridge},
		{"link", "set", h.Veth, "up"},
		{"-n", h.NS, "addr", "add", h.IP.String() + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return h.startHolder()
}

// holderScript runs in a new mount namespace inside the host's netns: it
// mounts a sysfs of the netns on /sys and moves the machine's /sys submounts
// (cgroup hierarchies and the like) back on top of it, then sleeps to keep
// the mount namespace alive. $1 is a staging dir, the rest the submounts.
const holderScript = `set -e
stage=$1; shift
mkdir -p "$stage"
i=0
for m in "$@"; do mkdir "$stage/$i"; mount --rbind "$m" "$stage/$i"; i=$((i+1)); done
mount -t sysfs sysfs /sys
i=0
for m in "$@"; do
	if [ -d "$m" ]; then mount --move "$stage/$i" "$m"; else umount -l "$stage/$i"; fi
	rmdir "$stage/$i"; i=$((i+1))
done
rmdir "$stage"
echo ready
exec sleep infinity
`

// sysSubmounts returns the top-most mounts below /sys in the root mount
// namespace (nested ones come along with --rbind).
func sysSubmounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var all []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[4], "/sys/") || strings.Contains(f[4], `\`) {
			continue
		}
		all = append(all, f[4])
	}
	sort.Strings(all)
	var top []string
	for _, m := range all {
		if len(top) > 0 && (m == top[len(top)-1] || strings.HasPrefix(m, top[len(top)-1]+"/")) {
			continue
		}
		top = append(top, m)
	}
	return top, nil
}

func (h *Host) startHolder() error {
	subs, err := sysSubmounts()
	if err != nil {
		return err
	}
	stage := filepath.Join(MarkerDir, h.u.ID, "sys-"+h.Name)
	args := append([]string{"--net=" + h.nsPath(), "unshare", "--mount", "--propagation", "slave",
		"sh", "-c", holderScript, "shn-holder", stage}, subs...)
	cmd := exec.Command("nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("holder stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start holder: %w", err)
	}
	done := make(chan struct{})
	h.mu.Lock()
	h.holder, h.holderDone = cmd, done
	h.mu.Unlock()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() {
		}
	}()
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
	case <-time.After(30 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	return fmt.Errorf("holder of mount namespace did not start: %s", strings.TrimSpace(stderr.String()))
}

// Command returns a command that runs inside the host: its netns and its
// mount namespace, entered through nsenter (so cmd.Path is nsenter and the
// command follows "--" in cmd.Args). The working directory (cmd.Dir, or the
// caller's) is carried in as an open directory, so relative paths resolve
// through the caller's mount view; use absolute paths for anything on mounts
// made inside the host.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	h.mu.Lock()
	pid := 0
	if h.holder != nil {
		pid = h.holder.Process.Pid
	}
	h.mu.Unlock()
	a := append([]string{"--net=" + h.nsPath(), fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--wd=.", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", a...)
}

// Run runs a command inside the host and returns its combined output; the
// error carries the output too.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("on %s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// nft applies an nftables script inside the host's netns.
func (h *Host) nft(script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft on %s: %w: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// replaceTable is an nftables script that atomically replaces (or, with an
// empty body, removes) an inet table.
func replaceTable(name, body string) string {
	s := fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", name, name)
	if body != "" {
		s += fmt.Sprintf("table inet %s {\n%s}\n", name, body)
	}
	return s
}

// Cut cuts the host off the underlay: an nftables table in its netns drops
// every packet in or out of eth0 (ARP excepted), silently, so the link stays
// up, its processes keep running and their connections stall. Loopback
// still works.
func (h *Host) Cut() error {
	body := `	chain in { type filter hook input priority -300; policy accept; iifname "eth0" drop; }
	chain out { type filter hook output priority -300; policy accept; oifname "eth0" drop; }
`
	if err := h.nft(replaceTable("shn_cut", body)); err != nil {
		return fmt.Errorf("cut %s: %w", h.Name, err)
	}
	return nil
}

// Heal undoes Cut (a partition set with Underlay.Partition stays).
func (h *Host) Heal() error {
	if err := h.nft(replaceTable("shn_cut", "")); err != nil {
		return fmt.Errorf("heal %s: %w", h.Name, err)
	}
	return nil
}

// setPartition drops packets between the host and peers (none: remove).
func (h *Host) setPartition(peers []net.IP) error {
	body := ""
	if len(peers) > 0 {
		set := make([]string, len(peers))
		for i, p := range peers {
			set[i] = p.String()
		}
		s := strings.Join(set, ", ")
		body = fmt.Sprintf(`	chain in { type filter hook input priority -300; policy accept; ip saddr { %s } drop; }
	chain out { type filter hook output priority -300; policy accept; ip daddr { %s } drop; }
`, s, s)
	}
	if err := h.nft(replaceTable("shn_part", body)); err != nil {
		return fmt.Errorf("partition %s: %w", h.Name, err)
	}
	return nil
}

// inNetns runs fn on an OS thread switched into the host's netns; sockets
// fn creates belong to that netns for good. A thread that cannot switch back
// is never reused (its goroutine exits locked).
func (h *Host) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(h.nsPath())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", h.NS, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", h.NS, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", h.NS, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// literal checks that addr's host part is empty or an IP literal: a name
// would be resolved outside the netns (and must never leave the machine).
func literal(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("address %q: only IP literals are allowed", addr)
	}
	return nil
}

// Dial connects from inside the host's netns (for the test process to reach
// a host, or to act as this host). addr must be an IP literal and port.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := literal(addr); err != nil {
		return nil, fmt.Errorf("dial from %s: %w", h.Name, err)
	}
	var conn net.Conn
	err := h.inNetns(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, h.Name, err)
	}
	return conn, nil
}

// Listen listens inside the host's netns, e.g. on ":0" or IP+":0".
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	if err := literal(addr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", h.Name, err)
	}
	var l net.Listener
	err := h.inNetns(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", addr, h.Name, err)
	}
	return l, nil
}

// HTTPClient returns a client whose connections start inside the host's
// netns (URLs must use IP literals).
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: h.Dial, DisableKeepAlives: true}}
}

// teardown kills everything in the host and removes its link and netns.
func (h *Host) teardown(ctx context.Context) error {
	h.mu.Lock()
	procs := append([]*Proc(nil), h.procs...)
	holder, holderDone := h.holder, h.holderDone
	h.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	var errs []error
	if _, err := os.Stat(h.nsPath()); err == nil {
		if err := killNetnsProcs(ctx, h.NS, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if holder != nil {
		_ = syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		select {
		case <-holderDone:
		case <-ctx.Done():
			errs = append(errs, errors.New("holder does not exit"))
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", h.Veth)); err == nil {
		if err := run(ctx, "ip", "link", "del", h.Veth); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(h.nsPath()); err == nil {
		if err := run(ctx, "ip", "netns", "del", h.NS); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
