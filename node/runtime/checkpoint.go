package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	lxc "github.com/lxc/go-lxc"
	"github.com/vishvananda/netlink"
)

// ErrCheckpoint: CRIU could not dump or restore the container; the error
// text carries the tail of CRIU's log.
var ErrCheckpoint = errors.New("runtime: checkpoint failed")

// CRIUArgsFile is the name of a file in a checkpoint directory whose lines
// are extra arguments for CRIU's dump or restore of that directory. LXC
// passes no such flags through; Shoal's criu wrapper (scripts/criu-wrapper.sh)
// reads them: "dump: ARG" and "restore: ARG" lines.
const CRIUArgsFile = "shoal-criu.args"

// CheckpointOptions tune a dump.
type CheckpointOptions struct {
	// Stop kills the container once the dump is complete. Without it the
	// container keeps its freezer state: a container frozen before the dump
	// stays frozen after it (CRIU restores the cgroup's original state),
	// which is how a live move holds the source until the target runs.
	Stop bool
	// ExtraDump are extra CRIU dump arguments (see CRIUArgsFile).
	ExtraDump []string
	// ExtraRestore are extra CRIU restore arguments, stored in the
	// directory for the later restore.
	ExtraRestore []string
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	// KeepFrozen leaves the restored container frozen (a live move thaws
	// it once the move is committed).
	KeepFrozen bool
	// LazyPages restores without memory pages: a lazy-pages daemon
	// (StartLazyPages) in the same directory feeds them.
	LazyPages bool
}

// Checkpoint dumps the running (or frozen) container's processes into dir
// with CRIU through lxc-checkpoint. dir is created; it must be empty.
func (r *Runtime) Checkpoint(ctx context.Context, name, dir string, o CheckpointOptions) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if st := c.State(); st != lxc.RUNNING && st != lxc.FROZEN {
		return fmt.Errorf("runtime: checkpoint %s: %w", name, ErrNotRunning)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("runtime: checkpoint %s: %w", name, err)
	}
	if err := writeCRIUArgs(dir, dumpArgs(o.ExtraDump), o.ExtraRestore); err != nil {
		return fmt.Errorf("runtime: checkpoint %s: %w", name, err)
	}
	args := []string{"-n", name, "-P", r.lxcPath, "--rcfile", r.ConfigPath(name), "-D", dir}
	if o.Stop {
		args = append(args, "-s")
	}
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "lxc-checkpoint", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runtime: checkpoint %s: %w: %v: %s%s", name, ErrCheckpoint, err,
			oneLine(out), criuLogTail(filepath.Join(dir, "dump.log")))
	}
	if err := r.shareWithRoot(name, dir); err != nil {
		return fmt.Errorf("runtime: checkpoint %s: %w", name, err)
	}
	r.log.Info("checkpointed", "container", name, "dir", dir, "stop", o.Stop, "took", time.Since(t0))
	return nil
}

// Restore restores the stopped container from the checkpoint in dir
// through lxc-checkpoint and waits until it runs. Where the container was
// dumped on another host, its configuration here (Define) must name this
// host's rootfs; everything else is as dumped. CRIU does not carry every
// cgroup limit (the blkio weight is lost): callers apply them again with
// SetLimits.
func (r *Runtime) Restore(ctx context.Context, name, dir string, o RestoreOptions) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if c.State() != lxc.STOPPED {
		return fmt.Errorf("runtime: restore %s: %w", name, ErrRunning)
	}
	if err := r.stageMounts(name); err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	if !r.host.CgroupV2 {
		if err := removeMonitorCgroups(name); err != nil {
			r.log.Warn("stale monitor cgroups", "container", name, "err", err)
		}
	}
	// The restore daemonizes an "[lxc monitor]" that inherits our stdout
	// and stderr: give it a file, never a pipe we would wait on forever.
	nics, err := r.precreateVeths(c)
	if err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	restored := false
	defer func() {
		if !restored {
			for _, v := range nics {
				_ = netlink.LinkDel(v)
			}
		}
	}()
	var extra []string
	for i, v := range nics {
		extra = append(extra, "--external", fmt.Sprintf("netdev[%s]:%s", c.ConfigItem(fmt.Sprintf("lxc.net.%d.name", i))[0], v.PeerName))
	}
	if o.LazyPages {
		extra = append(extra, "--lazy-pages")
	}
	if err := addRestoreArgs(dir, extra); err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	outPath := filepath.Join(dir, "lxc-restore.out")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	defer out.Close()
	t0 := time.Now()
	cmd := exec.Command("lxc-checkpoint", "-r", "-n", name, "-P", r.lxcPath,
		"--rcfile", r.ConfigPath(name), "-D", dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := runTree(ctx, cmd); err != nil {
		b, _ := os.ReadFile(outPath)
		return fmt.Errorf("runtime: restore %s: %w: %v: %s%s", name, ErrCheckpoint, err,
			oneLine(b), criuLogTail(filepath.Join(dir, "restore.log")))
	}
	if !waitState(ctx, c, startTimeout, lxc.RUNNING, lxc.FROZEN) {
		return fmt.Errorf("runtime: restore %s: %w: not running after restore (state %s)%s",
			name, ErrCheckpoint, c.State(), criuLogTail(filepath.Join(dir, "restore.log")))
	}
	pid := c.InitPid()
	if pid <= 0 {
		return fmt.Errorf("runtime: restore %s: no init pid", name)
	}
	restored = true
	r.reapMonitor(name, pid)
	// A container dumped frozen (a live move holds it so) comes back
	// frozen: thaw it unless asked to keep it so.
	if o.KeepFrozen {
		if r.status(c) != StatusFrozen {
			if err := r.Freeze(ctx, name); err != nil {
				return fmt.Errorf("runtime: restore %s: %w", name, err)
			}
		}
	} else if err := r.Unfreeze(ctx, name); err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	r.log.Info("restored", "container", name, "pid", pid, "took", time.Since(t0))
	return nil
}

// shareWithRoot gives a checkpoint directory to the container's root
// (the mapped root of an unprivileged container), which restores it.
func (r *Runtime) shareWithRoot(name, dir string) error {
	_, m, err := r.rootfsOf(name)
	if err != nil {
		return err
	}
	if m.IsZero() {
		return restrictMemoryImages(dir)
	}
	return ChownCheckpoint(dir, int(m.HostUID), int(m.HostGID))
}

// restrictMemoryImages makes the memory images in dir 0600 (see
// ChownCheckpoint).
func restrictMemoryImages(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if IsMemoryImage(e.Name()) && e.Type().IsRegular() {
			if err := os.Chmod(filepath.Join(dir, e.Name()), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// ChownCheckpoint gives the files of a checkpoint directory to uid:gid
// (a received checkpoint must be readable by the container's mapped root),
// and makes its directories traversable by all (0711): CRIU's restored
// root task opens some images (timens) before its user namespace has its
// id map, when no ownership matches, so it needs the "other" bits. Those
// images stay 0644 as CRIU writes them, in a directory whose name is
// unguessable and that cannot be listed; but the name is in CRIU's command
// line, which every local user can read in /proc, so the memory images
// (pages-*.img, read once the id map is set) become 0600: only the
// container's root and the host's root read a container's memory.
func ChownCheckpoint(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
		if e.IsDir() {
			return os.Chmod(p, 0o711)
		}
		if IsMemoryImage(e.Name()) && e.Type().IsRegular() {
			return os.Chmod(p, 0o600)
		}
		return nil
	})
}

// IsMemoryImage reports whether a checkpoint file holds memory contents.
func IsMemoryImage(name string) bool {
	return strings.HasPrefix(name, "pages-") && strings.HasSuffix(name, ".img")
}

// runTree runs cmd; when ctx ends first, it kills cmd and every process
// below it — for a restore that is CRIU and the half-restored container's
// tasks, which killing lxc-checkpoint alone would leave stuck (a
// post-copy restore whose page server is gone waits forever).
func runTree(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	killTree(cmd.Process.Pid)
	<-done
	return ctx.Err()
}

// killTree SIGKILLs pid and all its descendants, thawing any v1 freezer
// cgroup that holds them (a frozen task cannot die).
func killTree(pid int) {
	for round := 0; round < 3; round++ {
		tree := descendants(pid)
		if round == 0 {
			tree = append([]int{pid}, tree...)
		}
		if len(tree) == 0 {
			return
		}
		for _, p := range tree {
			if dirs, err := v1CgroupDirs(p); err == nil {
				if d, ok := dirs["freezer"]; ok && d != filepath.Join(cgroupV1Root, "freezer") {
					_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0o644)
				}
			}
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// descendants lists the processes below pid (by their parent links).
func descendants(pid int) []int {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; read after ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		p, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// precreateVeths makes, for each veth NIC of the container's config, a
// veth pair on this host: the host end up (CRIU joins it to the bridge
// LXC names), the peer left for CRIU to move into the restored network namespace with
// the ifindex it had (--external netdev[NAME]:PEER). Left to itself, CRIU
// 4.2 creates the pair from the host's namespace asking for the
// container-side ifindex there (2 for LXC's eth0), which collides with the
// host's own second link and fails unprivileged restores.
func (r *Runtime) precreateVeths(c *lxc.Container) ([]*netlink.Veth, error) {
	var out []*netlink.Veth
	for i := 0; ; i++ {
		p := fmt.Sprintf("lxc.net.%d.", i)
		typ := c.ConfigItem(p + "type")
		if len(typ) == 0 || typ[0] == "" {
			return out, nil
		}
		if typ[0] != "veth" {
			continue
		}
		link := c.ConfigItem(p + "link")
		if len(link) == 0 || link[0] == "" {
			continue
		}
		// LXC tells CRIU to put the host end, by this name, on the bridge.
		pair := c.ConfigItem(p + "veth.pair")
		if len(pair) == 0 || pair[0] == "" {
			return out, fmt.Errorf("%w: restore needs %sveth.pair (the host-side name)", ErrInvalid, p)
		}
		if _, err := netlink.LinkByName(link[0]); err != nil {
			return out, fmt.Errorf("bridge %s: %w", link[0], err)
		}
		if old, err := netlink.LinkByName(pair[0]); err == nil {
			_ = netlink.LinkDel(old) // left by an earlier, failed restore
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: "vsp" + randHex(4)}
		if mtu := c.ConfigItem(p + "mtu"); len(mtu) > 0 && mtu[0] != "" {
			if m, err := strconv.Atoi(mtu[0]); err == nil {
				v.MTU, v.PeerMTU = m, uint32(m)
			}
		}
		if err := netlink.LinkAdd(v); err != nil {
			return out, fmt.Errorf("veth for %s: %w", link[0], err)
		}
		out = append(out, v)
		if err := netlink.LinkSetUp(v); err != nil {
			return out, fmt.Errorf("veth for %s: %w", link[0], err)
		}
	}
}

// randHex returns n random bytes in hex.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// addRestoreArgs appends extra CRIU restore arguments to those recorded in
// a checkpoint directory.
func addRestoreArgs(dir string, args []string) error {
	if len(args) == 0 {
		return nil
	}
	var dump, restore []string
	if b, err := os.ReadFile(filepath.Join(dir, CRIUArgsFile)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if a, ok := strings.CutPrefix(l, "dump: "); ok {
				dump = append(dump, a)
			} else if a, ok := strings.CutPrefix(l, "restore: "); ok {
				restore = append(restore, a)
			}
		}
	}
	return writeCRIUArgs(dir, dump, append(restore, args...))
}

// writeCRIUArgs records extra CRIU arguments in dir for the wrapper.
func writeCRIUArgs(dir string, dump, restore []string) error {
	var b bytes.Buffer
	for _, a := range dump {
		fmt.Fprintf(&b, "dump: %s\n", a)
	}
	for _, a := range restore {
		fmt.Fprintf(&b, "restore: %s\n", a)
	}
	p := filepath.Join(dir, CRIUArgsFile)
	if b.Len() == 0 {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	return os.WriteFile(p, b.Bytes(), 0o600)
}

// oneLine joins a tool's output lines for an error message.
func oneLine(b []byte) string {
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}

// criuLogTail returns the last error lines of a CRIU log, for messages.
func criuLogTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var errs []string
	for _, l := range lines {
		if strings.Contains(l, "Error") || strings.Contains(l, "error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 && len(lines) > 0 {
		errs = lines[max(0, len(lines)-3):]
	}
	if len(errs) > 4 {
		errs = errs[len(errs)-4:]
	}
	return "; criu (" + path + "): " + strings.Join(errs, " | ")
}
