package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dnsmasqPath is the dnsmasq binary; a variable so tests can report it.
var dnsmasqPath = "/usr/sbin/dnsmasq"

const (
	backoffMin     = 250 * time.Millisecond
	backoffMax     = 30 * time.Second
	backoffResetAt = time.Minute // a run this long resets the backoff
	readyTimeout   = 10 * time.Second
	stopTimeout    = 5 * time.Second
)

// statePaths are the files dnsmasq uses inside Config.StateDir.
type statePaths struct {
	pid, leases, hosts, names, log string
}

func pathsFor(dir string) statePaths {
	return statePaths{
		pid:    filepath.Join(dir, "dnsmasq.pid"),
		leases: filepath.Join(dir, "dnsmasq.leases"),
		hosts:  filepath.Join(dir, "dnsmasq.hosts"),
		names:  filepath.Join(dir, "dnsmasq.names"),
		log:    filepath.Join(dir, "dnsmasq.log"),
	}
}

// dnsmasqArgs builds the command line. dnsmasq reads no config file, binds
// only to the bridge's address and stays in the foreground (-k) so we can
// supervise it. The "--interface=<bridge>" argument is also how a leftover
// dnsmasq for this bridge is recognised after a daemon restart.
func dnsmasqArgs(bridge string, gw net.IP, subnet *net.IPNet, domain string, staticOnly bool, p statePaths, upstream []net.IP) []string {
	lo, hi := dhcpRange(subnet)
	dhcp := "--dhcp-range=" + lo.String() + "," + hi.String() + ",1h"
	if staticOnly {
		dhcp = "--dhcp-range=" + subnet.IP.String() + ",static," + net.IP(subnet.Mask).String() + ",1h"
	}
	args := []string{
		"--keep-in-foreground",
		"--conf-file=/dev/null",
		"--strict-order",
		"--bind-interfaces",
		"--except-interface=lo",
		"--interface=" + bridge,
		"--listen-address=" + gw.String(),
		dhcp,
		"--dhcp-no-override",
		"--dhcp-authoritative",
		"--no-ping",
		"--dhcp-leasefile=" + p.leases,
		"--dhcp-hostsfile=" + p.hosts,
		// Names of containers on other members (SetNames); re-read on SIGHUP.
		"--addn-hosts=" + p.names,
		"--pid-file=" + p.pid,
		"--domain=" + domain,
		"--local=/" + domain + "/",
		"--expand-hosts",
		// Never forward plain names: "web" is a container or nothing.
		"--domain-needed",
	}
	// Reverse lookups for the subnet are answered from leases, never
	// forwarded upstream.
	for _, z := range reverseZones(subnet) {
		args = append(args, "--local=/"+z+"/")
	}
	args = append(args,
		"--no-hosts",
		"--log-facility=-",
		"--no-resolv",
	)
	for _, s := range upstream {
		args = append(args, "--server="+s.String())
	}
	return args
}

// reverseZones lists the in-addr.arpa zones covering an IPv4 subnet, at
// octet boundaries (a /22 gives four /24 zones); a subnet smaller than a /24
// claims its whole /24.
func reverseZones(subnet *net.IPNet) []string {
	ones, _ := subnet.Mask.Size()
	ones = min(ones, 24)
	octets := (ones + 7) / 8
	count := 1 << (octets*8 - ones)
	base := subnet.IP.To4().Mask(net.CIDRMask(ones, 32))
	var out []string
	for i := 0; i < count; i++ {
		ip := addToIP(base, i<<(32-octets*8))
		labels := make([]string, 0, octets+1)
		for j := octets - 1; j >= 0; j-- {
			labels = append(labels, strconv.Itoa(int(ip[j])))
		}
		out = append(out, strings.Join(append(labels, "in-addr.arpa"), "."))
	}
	return out
}

// upstreamServers returns the host's nameservers that are safe to forward
// to: IPv4 or IPv6, never our own gateway (that would loop).
func upstreamServers(gw net.IP) []net.IP {
	var out []net.IP
	for _, ip := range hostNameservers() {
		if ip.Equal(gw) || ip.IsUnspecified() {
			continue
		}
		out = append(out, ip)
	}
	return out
}

// supervisor runs one dnsmasq and restarts it with backoff when it dies.
type supervisor struct {
	bridge string
	args   []string
	paths  statePaths
	log    *slog.Logger

	mu        sync.Mutex
	cmd       *exec.Cmd
	stopped   bool // Close/Delete: stop the child and do not restart
	abandoned bool // test hook: leave the child running, like a daemon crash

	stop chan struct{}
	done chan struct{}
}

func newSupervisor(bridge string, args []string, p statePaths, log *slog.Logger) *supervisor {
	return &supervisor{
		bridge: bridge, args: args, paths: p, log: log,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start kills any leftover dnsmasq for the bridge, starts ours and waits
// until it has written its pid file (so its sockets are bound), then keeps
// supervising it in the background.
func (s *supervisor) start(ctx context.Context) error {
	cmd, err := s.spawn(ctx)
	if err != nil {
		close(s.done)
		return err
	}
	if err := s.waitReady(ctx, cmd); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		close(s.done)
		return err
	}
	go s.loop(cmd)
	return nil
}

// spawn stops strays and starts one dnsmasq child.
func (s *supervisor) spawn(ctx context.Context) (*exec.Cmd, error) {
	if err := killStrays(ctx, s.bridge, s.log); err != nil {
		return nil, err
	}
	_ = os.Remove(s.paths.pid)
	logf, err := os.OpenFile(s.paths.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open dnsmasq log for %s: %w", s.bridge, err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(dnsmasqPath, s.args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own session: a signal to the daemon's process group does not reach
	// dnsmasq, and no Pdeathsig: DHCP outlives a crashed daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dnsmasq for %s: %w", s.bridge, err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	s.log.Info("dnsmasq started", "bridge", s.bridge, "pid", cmd.Process.Pid)
	return cmd, nil
}

// waitReady polls until the pid file names the child, or the child exits.
func (s *supervisor) waitReady(ctx context.Context, cmd *exec.Cmd) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if pid, err := readPidFile(s.paths.pid); err == nil && pid == cmd.Process.Pid {
			return nil
		}
		// An exited child stays a zombie until loop reaps it, so /proc shows it.
		if processGone(cmd.Process.Pid) {
			return fmt.Errorf("dnsmasq for %s exited at start: %s", s.bridge, tailLog(s.paths.log))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for dnsmasq on %s: %w", s.bridge, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("wait for dnsmasq on %s: not ready after %s: %s", s.bridge, readyTimeout, tailLog(s.paths.log))
		case <-tick.C:
		}
	}
}

// loop waits for the child and restarts it until stopped.
func (s *supervisor) loop(cmd *exec.Cmd) {
	defer close(s.done)
	backoff := backoffMin
	for {
		started := time.Now()
		err := cmd.Wait()
		s.mu.Lock()
		stopped, abandoned := s.stopped, s.abandoned
		s.cmd = nil
		s.mu.Unlock()
		if stopped || abandoned {
			return
		}
		if time.Since(started) > backoffResetAt {
			backoff = backoffMin
		}
		s.log.Warn("dnsmasq exited; restarting", "bridge", s.bridge, "err", err, "backoff", backoff)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, backoffMax)
			next, err := s.spawn(context.Background())
			if err == nil {
				cmd = next
				break
			}
			s.log.Error("restart dnsmasq", "bridge", s.bridge, "err", err)
		}
		select { // stopped while spawning: the next Wait returns promptly
		case <-s.stop:
			_ = cmd.Process.Signal(syscall.SIGTERM)
		default:
		}
	}
}

// pid returns the running child's pid, or 0.
func (s *supervisor) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// hup asks dnsmasq to re-read its hosts file.
func (s *supervisor) hup() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return nil // restarting: the new child reads the file at start
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal dnsmasq for %s: %w", s.bridge, err)
	}
	return nil
}

// shutdown stops supervising; with kill it also stops dnsmasq (SIGTERM,
// then SIGKILL after stopTimeout).
func (s *supervisor) shutdown(ctx context.Context, kill bool) error {
	s.mu.Lock()
	if s.stopped || s.abandoned {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	if kill {
		s.stopped = true
	} else {
		s.abandoned = true
	}
	close(s.stop)
	cmd := s.cmd
	s.mu.Unlock()
	if !kill {
		return nil // the loop exits when the orphan dies
	}
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(stopTimeout):
	case <-ctx.Done():
	}
	if cmd != nil {
		_ = cmd.Process.Kill()
	}
	<-s.done
	return nil
}

// killStrays stops every dnsmasq serving this bridge that we do not
// supervise, found through /proc by its "--interface=<bridge>" argument,
// and waits until they are gone so their sockets are free.
func killStrays(ctx context.Context, bridge string, log *slog.Logger) error {
	pids := findDnsmasq(bridge)
	for _, pid := range pids {
		log.Info("stopping leftover dnsmasq", "bridge", bridge, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(stopTimeout)
	for _, pid := range pids {
		for !processGone(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("stop leftover dnsmasq %d for %s: %w", pid, bridge, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// findDnsmasq lists live dnsmasq processes in this network namespace whose
// command line holds "--interface=<bridge>". Other namespaces (other
// simulated hosts, containers) may have bridges of the same name: their
// dnsmasq is not ours.
func findDnsmasq(bridge string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	ourNS, _ := os.Readlink("/proc/self/ns/net")
	want := []byte("--interface=" + bridge)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := bytes.Split(bytes.TrimRight(raw, "\x00"), []byte{0})
		if filepath.Base(string(args[0])) != "dnsmasq" {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err != nil || ns != ourNS {
			continue
		}
		for _, a := range args[1:] {
			if bytes.Equal(a, want) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 || i+2 >= len(raw) {
		return true
	}
	state := raw[i+2]
	return state == 'Z' || state == 'X'
}

func readPidFile(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, fmt.Errorf("parse pid file %s: %w", path, err)
	}
	return pid, nil
}

// tailLog returns the end of dnsmasq's log for error messages.
func tailLog(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	const max = 512
	if len(raw) > max {
		raw = raw[len(raw)-max:]
	}
	return strings.TrimSpace(string(raw))
}
