// Package harness starts real shoald daemons for end-to-end tests and
// benchmarks: each on its own state dir, btrfs loop pool and bridge, torn
// down completely afterwards, and drives them through the real shoal CLI
// and the REST API.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/node/images"
	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/tests/netns"
)

// T is the part of testing.TB the harness needs (the same as tests/netns).
type T = netns.T

// BuildTemp builds shoal and shoald from the module at root into a new
// temporary directory that t's cleanup removes, and returns it.
func BuildTemp(t T, root string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shoal-bin-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := Build(root, dir); err != nil {
		t.Fatalf("%v", err)
	}
	return dir
}

// Build builds shoal and shoald from the module at root into dir, and the
// static test programs tests/workload and tests/probe as dir/workload and
// dir/probe.
func Build(root, dir string) error {
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/shoal", "./cmd/shoald")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	for _, prog := range []string{"workload", "probe"} {
		build = exec.Command("go", "build", "-o", dir+"/"+prog, "./tests/"+prog)
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build the test %s: %w", prog, err)
		}
	}
	// Tests run the probe as unprivileged users.
	return os.Chmod(dir, 0o755)
}

// Missing names what the host lacks for end-to-end runs (empty when nothing).
func Missing() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"lxc-start", "btrfs", "mkfs.btrfs", "dnsmasq", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Options change how a daemon is started.
type Options struct {
	// Name is the node name (default node1).
	Name string
	// Args are extra shoald flags (--listen, --join, ...).
	Args []string
	// Command wraps a command so it runs on a simulated host (tests/netns);
	// the daemon's bridge, nftables and mounts then live and die with that
	// host, and teardown leaves them to it.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Env are extra environment variables (SHOAL_FAILPOINTS=...).
	Env []string
}

// Daemon is a running shoald with its own state dir, pool and bridge.
type Daemon struct {
	t        T
	Opts     Options
	BinDir   string
	StateDir string
	Bridge   string
	Socket   string
	cmd      *exec.Cmd
	done     chan struct{}
	logMu    sync.Mutex
	log      bytes.Buffer
}

// StartDaemon starts a fresh daemon and registers its full teardown: every
// container, the pool's mount and loop device, the bridge, its nftables
// table and dnsmasq.
func StartDaemon(t T, binDir string) *Daemon {
	t.Helper()
	return StartDaemonWith(t, binDir, Options{})
}

// StartDaemonWith starts a fresh daemon with options.
func StartDaemonWith(t T, binDir string, opts Options) *Daemon {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "node1"
	}
	id := RandHex(3)
	state, err := os.MkdirTemp("/tmp", "shoal-e2e-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	// dnsmasq drops to its own user and must be able to traverse here.
	if err := os.Chmod(state, 0o711); err != nil {
		t.Fatalf("%v", err)
	}
	d := &Daemon{t: t, Opts: opts, BinDir: binDir, StateDir: state, Bridge: "she" + id, Socket: filepath.Join(state, "shoal.socket")}
	t.Cleanup(d.teardown)
	d.Start()
	return d
}

// Start (re)starts shoald on the daemon's state dir and waits until it serves.
func (d *Daemon) Start() {
	d.t.Helper()
	args := append([]string{
		"--state-dir", d.StateDir, "--name", d.Opts.Name, "--bridge", d.Bridge,
		"--pool-size", "3GiB", "--log-level", "info",
		"--image-cache", ImageCache()}, d.Opts.Args...)
	var cmd *exec.Cmd
	if d.Opts.Command != nil {
		cmd = d.Opts.Command(context.Background(), filepath.Join(d.BinDir, "shoald"), args...)
	} else {
		cmd = exec.Command(filepath.Join(d.BinDir, "shoald"), args...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if len(d.Opts.Env) > 0 {
		cmd.Env = append(os.Environ(), d.Opts.Env...)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("%v", err)
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	ready := make(chan string, 1)
	readyRe := regexp.MustCompile(`shoald ready.* rest-socket=(\S+)`)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.logMu.Lock()
			d.log.WriteString(line + "\n")
			d.logMu.Unlock()
			if m := readyRe.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(d.done) }()
	select {
	case <-ready:
	case <-d.done:
		d.t.Fatalf("shoald exited during start:\n%s", d.Log())
	case <-time.After(2 * time.Minute):
		// Its goroutines say where it waits (Go prints them on SIGQUIT).
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Signal(syscall.SIGKILL)
		}
		d.t.Fatalf("shoald not ready after 2m (its goroutines at the end):\n%s", d.Log())
	}
}

// Pid is the running shoald's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Log returns what the daemon printed.
func (d *Daemon) Log() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

// Kill kills shoald with SIGKILL (its containers keep running).
func (d *Daemon) Kill() {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

// WaitExit waits up to timeout for shoald to exit by itself (a failpoint's
// exit), and reports whether it did.
func (d *Daemon) WaitExit(timeout time.Duration) bool {
	if d.cmd == nil {
		return true
	}
	select {
	case <-d.done:
		d.cmd = nil
		return true
	case <-time.After(timeout):
		return false
	}
}

// Quit sends shoald SIGQUIT: Go prints every goroutine's stack to its log
// and exits. For a test that is about to fail on something that hangs.
func (d *Daemon) Quit() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
	d.cmd = nil
}

// Stop stops shoald cleanly (its containers keep running).
func (d *Daemon) Stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
	d.cmd = nil
}

func (d *Daemon) teardown() {
	if d.t.Failed() {
		d.t.Logf("shoald log:\n%s", d.Log())
	}
	if d.cmd != nil {
		if out, _, _ := d.Shoal("list", "--format", "json"); out != "" {
			var resp struct {
				Containers []struct {
					Container struct{ Name string }
				}
			}
			if json.Unmarshal([]byte(out), &resp) == nil {
				for _, c := range resp.Containers {
					d.Shoal("delete", "-f", c.Container.Name)
				}
			}
		}
		d.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Whatever is still running (a test killed the daemon): stop it through LXC.
	lxcPath := filepath.Join(d.StateDir, "lxc")
	if ents, err := os.ReadDir(lxcPath); err == nil {
		for _, e := range ents {
			stop := []string{"-P", lxcPath, "-n", e.Name(), "-k"}
			if d.Opts.Command != nil {
				d.Opts.Command(ctx, "lxc-stop", stop...).Run()
			} else {
				exec.CommandContext(ctx, "lxc-stop", stop...).Run()
			}
		}
	}
	if d.Opts.Command != nil {
		// Bridge, nftables, dnsmasq and the pool's mount belong to the
		// simulated host and go with it.
		if err := os.RemoveAll(d.StateDir); err != nil {
			d.t.Errorf("remove state dir: %v", err)
		}
		return
	}
	if nw, err := network.Ensure(ctx, network.Config{Name: d.Bridge, IPv4CIDR: network.AutoCIDR, NAT: true,
		StateDir: filepath.Join(d.StateDir, "networks", d.Bridge)}, nil); err == nil {
		if err := nw.Delete(ctx); err != nil {
			d.t.Errorf("delete network %s: %v", d.Bridge, err)
		}
	} else {
		d.t.Errorf("tear down network %s: %v", d.Bridge, err)
	}
	pools, _ := filepath.Glob(filepath.Join(d.StateDir, "storage-pools", "*"))
	for _, p := range pools {
		if err := btrfs.UnmountPool(ctx, p); err != nil {
			d.t.Errorf("unmount pool %s: %v", p, err)
		}
	}
	if err := os.RemoveAll(d.StateDir); err != nil {
		d.t.Errorf("remove state dir: %v", err)
	}
}

// Shoal runs the CLI against the daemon.
func (d *Daemon) Shoal(args ...string) (stdout, stderr string, code int) {
	return d.ShoalIn(nil, args...)
}

// ShoalIn runs the CLI with stdin.
func (d *Daemon) ShoalIn(stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(d.BinDir, "shoal"), args...)
	cmd.Env = append(os.Environ(), "SHOAL_SOCKET="+d.Socket)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return o.String(), e.String(), code
}

// MustShoal runs the CLI and fails the test unless it exits 0.
func (d *Daemon) MustShoal(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.Shoal(args...)
	if code != 0 {
		d.t.Fatalf("shoal %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// RESTSocket is the daemon's REST unix socket.
func (d *Daemon) RESTSocket() string { return filepath.Join(d.StateDir, "rest.socket") }

// REST calls the REST API through its unix socket and decodes a JSON
// answer into v (when not nil).
func (d *Daemon) REST(method, path string, body any, v any) int {
	d.t.Helper()
	return d.RESTWith(UnixHTTP(d.RESTSocket()), "http://shoal", method, path, body, v)
}

// UnixHTTP is an HTTP client that dials a unix socket.
func UnixHTTP(socket string) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
}

// RESTWith calls the REST API at base with client hc and decodes a JSON
// answer into v (when not nil).
func (d *Daemon) RESTWith(hc *http.Client, base, method, path string, body any, v any) int {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		d.t.Fatalf("%v", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			d.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// Container is the part of `shoal list --format json` tests look at.
type Container struct {
	Container struct {
		Name     string
		Node     string
		Config   map[string]string
		Hwaddr   string
		Snapshot []struct{ Name string } `json:"snapshots"`
	}
	State struct {
		Status string
		Pid    string
		Ipv4   []string
	}
}

// Records returns the desired-state records of all containers (no live
// state), as JSON, for before/after comparisons.
func (d *Daemon) Records() string {
	d.t.Helper()
	var resp struct {
		Containers []struct {
			Container json.RawMessage `json:"container"`
		}
	}
	if err := json.Unmarshal([]byte(d.MustShoal("list", "--format", "json")), &resp); err != nil {
		d.t.Fatalf("%v", err)
	}
	var out []string
	for _, c := range resp.Containers {
		out = append(out, string(c.Container))
	}
	return strings.Join(out, "\n")
}

// List returns the containers as the CLI reports them.
func (d *Daemon) List() map[string]Container {
	d.t.Helper()
	var resp struct{ Containers []Container }
	if err := json.Unmarshal([]byte(d.MustShoal("list", "--format", "json")), &resp); err != nil {
		d.t.Fatalf("%v", err)
	}
	out := map[string]Container{}
	for _, c := range resp.Containers {
		out[c.Container.Name] = c
	}
	return out
}

// WaitFor polls cond until it holds or the timeout passes.
func (d *Daemon) WaitFor(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitAddress waits until the container has its DHCP address both leased
// and configured: the lease shows in the list as soon as dnsmasq acks it,
// a moment before the client inside sets eth0 and the default route. It
// returns the address.
func (d *Daemon) WaitAddress(name string, timeout time.Duration) string {
	d.t.Helper()
	var ip string
	d.WaitFor("a configured DHCP address on "+name, timeout, func() bool {
		ips := d.List()[name].State.Ipv4
		if len(ips) == 0 {
			return false
		}
		out, _, code := d.Shoal("exec", name, "--", "sh", "-c", "ip -4 -o addr show eth0; ip -4 route show default")
		if code != 0 || !strings.Contains(out, " "+ips[0]+"/") || !strings.Contains(out, "default") {
			return false
		}
		ip = ips[0]
		return true
	})
	return ip
}

// ImageCache is where slow image builds (debootstrap) are cached between runs.
func ImageCache() string {
	if d := os.Getenv("SHOAL_IMAGE_CACHE"); d != "" {
		return d
	}
	return images.DefaultDebianCacheDir
}

// Uniq returns a unique container name.
func Uniq(prefix string) string { return prefix + "-" + RandHex(3) }

// HostRun runs a host command and returns its combined output.
func HostRun(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
