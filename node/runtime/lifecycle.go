package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// startTimeout bounds how long Start waits for RUNNING.
const startTimeout = 30 * time.Second

// Start starts the container daemonized (its init is the image's
// /sbin/init) and returns once it is RUNNING with a known init pid.
//
// It runs lxc-start rather than liblxc's in-process start: liblxc 5.0.2
// moves the calling process (all of shoald) into the container's
// lxc.monitor.<name> cgroups when it daemonizes from an API caller, which
// both mis-accounts the daemon and pins those cgroups forever.
func (r *Runtime) Start(ctx context.Context, name string) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if c.Running() {
		return fmt.Errorf("runtime: start %s: %w", name, ErrRunning)
	}
	if !r.host.CgroupV2 {
		if err := removeMonitorCgroups(name); err != nil {
			r.log.Warn("stale monitor cgroups", "container", name, "err", err)
		}
	}
	if err := r.stageMounts(name); err != nil {
		return fmt.Errorf("runtime: start %s: %w", name, err)
	}
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	args := []string{"lxc-start", "-n", name, "-P", r.lxcPath, "-f", r.ConfigPath(name)}
	if isApp(c) {
		// An application container (app.go): LXC's minimal init runs the
		// configured lxc.execute.cmd (lxc-execute stays in the foreground
		// unless told otherwise).
		args = append([]string{"lxc-execute", "-d"}, args[1:]...)
	}
	cmd := exec.CommandContext(sctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runtime: start %s: %w: %s (see %s)", name, err, strings.TrimSpace(string(out)),
			filepath.Join(r.lxcPath, name, "lxc.log"))
	}
	if !waitState(ctx, c, startTimeout, lxc.RUNNING) {
		return fmt.Errorf("runtime: start %s: not running after start (state %s)", name, c.State())
	}
	pid := c.InitPid()
	if pid <= 0 {
		return fmt.Errorf("runtime: start %s: no init pid", name)
	}
	r.reapMonitor(name, pid)
	if err := r.recordStarted(name); err != nil {
		r.log.Warn("record the devices it started with", "container", name, "err", err)
	}
	r.log.Info("started", "container", name, "pid", pid, "took", time.Since(t0))
	return nil
}

// isApp reports whether the container's configuration runs an
// application under LXC's minimal init.
func isApp(c *lxc.Container) bool {
	v := c.ConfigItem("lxc.execute.cmd")
	return len(v) > 0 && strings.TrimSpace(v[0]) != ""
}

// parentPid returns pid's parent (0 when pid is gone).
func parentPid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// reapMonitor waits, in the background, for the monitor process of the
// container whose init is pid, when that monitor is our child (we are a
// child subreaper); see New.
func (r *Runtime) reapMonitor(name string, initPid int) {
	mon := parentPid(initPid)
	if mon <= 1 {
		return
	}
	if parentPid(mon) != os.Getpid() {
		return // not our child: its parent reaps it
	}
	go func() {
		var ws unix.WaitStatus
		var err error
		for {
			_, err = unix.Wait4(mon, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		r.log.Debug("monitor reaped", "container", name, "pid", mon, "err", err, "status", ws)
	}()
}

// Stop stops the container: first cleanly (LXC's halt signal to init,
// waiting up to timeout), then by force. A zero timeout kills at once.
// Stopping a stopped container is not an error.
func (r *Runtime) Stop(ctx context.Context, name string, timeout time.Duration) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	st := r.status(c)
	if st == StatusStopped {
		return nil
	}
	frozen := st == StatusFrozen || st == "FREEZING"
	if timeout > 0 && !frozen {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
			timeout = time.Until(dl)
		}
		if err := c.Shutdown(timeout); err == nil {
			r.log.Info("stopped cleanly", "container", name)
			r.unstage(name)
			return nil
		}
		r.log.Warn("clean shutdown timed out, killing", "container", name, "timeout", timeout)
	}
	if frozen {
		// A frozen task cannot die; thaw it first.
		if err := r.Unfreeze(ctx, name); err != nil {
			r.log.Warn("unfreeze before kill", "container", name, "err", err)
		}
	}
	if err := c.Stop(); err != nil && c.State() != lxc.STOPPED {
		return fmt.Errorf("runtime: stop %s: %w", name, err)
	}
	if !waitState(ctx, c, 10*time.Second, lxc.STOPPED) {
		return fmt.Errorf("runtime: stop %s: still %s after kill", name, c.State())
	}
	r.log.Info("killed", "container", name)
	r.unstage(name)
	return nil
}

// Freeze freezes every task of a running container.
func (r *Runtime) Freeze(ctx context.Context, name string) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if !c.Running() {
		return fmt.Errorf("runtime: freeze %s: %w", name, ErrNotRunning)
	}
	if !r.host.CgroupV2 {
		if err := freezeV1(ctx, c.InitPid()); err != nil {
			return fmt.Errorf("runtime: freeze %s: %w", name, err)
		}
		return nil
	}
	if err := c.Freeze(); err != nil {
		return fmt.Errorf("runtime: freeze %s: %w", name, err)
	}
	return nil
}

// Unfreeze thaws a frozen container.
func (r *Runtime) Unfreeze(ctx context.Context, name string) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if c.State() == lxc.STOPPED {
		return fmt.Errorf("runtime: unfreeze %s: %w", name, ErrNotRunning)
	}
	if !r.host.CgroupV2 {
		if err := thawV1(c.InitPid()); err != nil {
			return fmt.Errorf("runtime: unfreeze %s: %w", name, err)
		}
		return nil
	}
	if r.status(c) != StatusFrozen {
		return nil
	}
	if err := c.Unfreeze(); err != nil {
		return fmt.Errorf("runtime: unfreeze %s: %w", name, err)
	}
	return nil
}

// State reports the container's status and, when it runs, its init pid,
// IPv4 addresses (read by netlink in its network namespace, no attach) and
// cgroup usage.
func (r *Runtime) State(ctx context.Context, name string) (State, error) {
	c, err := r.container(name)
	if err != nil {
		return State{}, err
	}
	if !r.host.CgroupV2 {
		return r.stateV1(c)
	}
	s := State{Status: r.status(c)}
	if s.Status == StatusStopped {
		return s, nil
	}
	s.PID = c.InitPid()
	s.MemoryBytes = cgroupInt(c, "memory.current")
	for _, l := range c.CgroupItem("cpu.stat") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			s.CPUNanos = n * 1000
		}
	}
	s.Processes = cgroupInt(c, "pids.current")
	return s, nil
}

// stateV1 reads a container's state on cgroup v1 with one round trip to its
// monitor (the init pid; none means stopped) and the rest from cgroup files:
// `shoal list` asks this for every container.
func (r *Runtime) stateV1(c *lxc.Container) (State, error) {
	pid := c.InitPid()
	if pid <= 0 {
		return State{Status: StatusStopped}, nil
	}
	s := State{Status: StatusRunning, PID: pid}
	dirs, err := v1CgroupDirs(pid)
	if err != nil {
		// The init went away between the two reads.
		return State{Status: StatusStopped}, nil
	}
	if b, err := os.ReadFile(filepath.Join(dirs["freezer"], "freezer.state")); err == nil {
		if fs := strings.TrimSpace(string(b)); fs != "THAWED" {
			s.Status = fs
		}
	}
	s.MemoryBytes = readCgroupInt(dirs["memory"], "memory.usage_in_bytes")
	s.CPUNanos = readCgroupInt(dirs["cpuacct"], "cpuacct.usage")
	s.Processes = readCgroupInt(dirs["pids"], "pids.current")
	return s, nil
}

// Addresses lists the global IPv4 addresses inside a running container's
// network namespace.
func (r *Runtime) Addresses(ctx context.Context, name string) ([]string, error) {
	c, err := r.container(name)
	if err != nil {
		return nil, err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, name)
	}
	return ipv4InNetns(pid)
}

// readCgroupInt reads one integer cgroup file, 0 when unreadable.
func readCgroupInt(dir, file string) int64 {
	if dir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// status returns the container's status. On cgroup v1 the freezer is read
// directly: this package freezes through it, and liblxc's own state does
// not always reflect that.
func (r *Runtime) status(c *lxc.Container) string {
	st := c.State()
	if st == lxc.RUNNING && !r.host.CgroupV2 {
		if fs, err := freezerStateV1(c.InitPid()); err == nil && fs != "THAWED" {
			return fs
		}
	}
	return st.String()
}

// cgroupInt reads an integer cgroup item, 0 when absent.
func cgroupInt(c *lxc.Container, key string) int64 {
	v := c.CgroupItem(key)
	if len(v) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
	return n
}

// ipv4InNetns lists the global-scope IPv4 addresses in pid's network
// namespace.
func ipv4InNetns(pid int) ([]string, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		if a.IP.IsLoopback() || a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		out = append(out, a.IP.String())
	}
	return out, nil
}

// SetLimits persists l in the container's configuration and, when it runs,
// applies it live through its cgroup. Zero fields remove the limit (live:
// back to unlimited; an empty CPUSet gives back every CPU the parent cgroup
// allows), except DiskPriority, which stays as it is live until the next
// start. A DiskPriority the host cannot enforce is refused
// (ErrUnenforceable) and nothing changes.
func (r *Runtime) SetLimits(ctx context.Context, name string, l Limits) error {
	if l.DiskPriority < 0 || l.DiskPriority > 10 || strings.ContainsAny(l.CPUSet, "\n\r") {
		return fmt.Errorf("%w: limits %+v", ErrInvalid, l)
	}
	if err := r.host.checkLimits(l); err != nil {
		return fmt.Errorf("runtime: set limits of %s: %w", name, err)
	}
	c, err := r.container(name)
	if err != nil {
		return err
	}
	path := r.ConfigPath(name)
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("runtime: set limits of %s: %w", name, err)
	}
	conf := ReplaceLimits(string(old), l, r.host)
	if c.Running() {
		if err := r.applyLive(c, l); err != nil {
			return fmt.Errorf("runtime: set limits of %s: %w", name, err)
		}
	}
	if err := writeFileAtomic(path, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("runtime: set limits of %s: %w", name, err)
	}
	// The cached handle needs no reload: cgroup limits in the config only
	// matter to lxc-start, which reads the file itself.
	r.log.Info("limits set", "container", name, "limits", fmt.Sprintf("%+v", l))
	return nil
}

// applyLive writes l into a running container's cgroups.
func (r *Runtime) applyLive(c *lxc.Container, l Limits) error {
	set := func(k, v string) error {
		if err := c.SetCgroupItem(k, v); err != nil {
			return fmt.Errorf("cgroup %s = %s: %w", k, v, err)
		}
		return nil
	}
	orUnlimited := func(v int64, unlimited string) string {
		if v <= 0 {
			return unlimited
		}
		return strconv.FormatInt(v, 10)
	}
	unpin := func() error {
		if err := unpinCPUs(c.InitPid(), r.host.CgroupV2); err != nil {
			return fmt.Errorf("cgroup cpuset.cpus back to the parent's: %w", err)
		}
		return nil
	}
	if r.host.CgroupV2 {
		for _, kv := range limitItems(l, r.host) {
			if err := set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		if l.CPUSet == "" {
			if err := unpin(); err != nil {
				return err
			}
		}
		if l.MemoryBytes <= 0 {
			if err := set("memory.max", "max"); err != nil {
				return err
			}
		}
		if l.CPUQuotaUs <= 0 {
			if err := set("cpu.max", "max"); err != nil {
				return err
			}
		}
		if l.Processes <= 0 {
			return set("pids.max", "max")
		}
		return nil
	}
	if l.CPUSet != "" {
		if err := set("cpuset.cpus", l.CPUSet); err != nil {
			return err
		}
	} else if err := unpin(); err != nil {
		return err
	}
	if l.CPUPeriodUs > 0 {
		if err := set("cpu.cfs_period_us", strconv.FormatInt(l.CPUPeriodUs, 10)); err != nil {
			return err
		}
	}
	if err := set("cpu.cfs_quota_us", orUnlimited(l.CPUQuotaUs, "-1")); err != nil {
		return err
	}
	// memsw must stay >= the memory limit at every step: raise memsw
	// first, lower it last.
	mem := orUnlimited(l.MemoryBytes, "-1")
	cur := cgroupInt(c, "memory.limit_in_bytes")
	growing := l.MemoryBytes <= 0 || l.MemoryBytes > cur
	steps := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	if growing {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, k := range steps {
		if k == "memory.memsw.limit_in_bytes" && !r.host.Memsw {
			continue
		}
		if err := set(k, mem); err != nil {
			return err
		}
	}
	if err := set("pids.max", orUnlimited(l.Processes, "max")); err != nil {
		return err
	}
	if l.DiskPriority > 0 && r.host.BFQWeight {
		return set("blkio.bfq.weight", strconv.FormatInt(bfqWeight(l.DiskPriority), 10))
	}
	return nil
}

// ReplaceLimits returns conf with its cgroup limit keys replaced by l's.
func ReplaceLimits(conf string, l Limits, h Host) string {
	managed := []string{"cpuset.cpus", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.max",
		"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "memory.swap.max",
		"pids.max", "blkio.bfq.weight", "io.bfq.weight"}
	var out []string
	var tail []string
	for _, line := range strings.Split(strings.TrimRight(conf, "\n"), "\n") {
		key, _, _ := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		drop := false
		for _, m := range managed {
			if key == h.cgroupPrefix()+m {
				drop = true
			}
		}
		switch {
		case drop:
		case key == "lxc.start.auto":
			tail = append(tail, line)
		default:
			out = append(out, line)
		}
	}
	for _, kv := range limitItems(l, h) {
		out = append(out, fmt.Sprintf("%s%s = %s", h.cgroupPrefix(), kv[0], kv[1]))
	}
	out = append(out, tail...)
	return strings.Join(out, "\n") + "\n"
}

// ConsoleLog returns the console log file's content (empty when the
// container never wrote one: with lxc.console.path = none, chosen for
// checkpointability, LXC allocates no console and logs nothing).
func (r *Runtime) ConsoleLog(ctx context.Context, name string) ([]byte, error) {
	if _, err := r.container(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(r.lxcPath, name, "console.log"))
	if errors.Is(err, os.ErrNotExist) {
		return []byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime: console log of %s: %w", name, err)
	}
	return b, nil
}
