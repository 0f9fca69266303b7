package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"
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
	if err := writeCRIUArgs(dir, o.ExtraDump, o.ExtraRestore); err != nil {
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
			strings.TrimSpace(string(out)), criuLogTail(filepath.Join(dir, "dump.log")))
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
func (r *Runtime) Restore(ctx context.Context, name, dir string) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	if c.State() != lxc.STOPPED {
		return fmt.Errorf("runtime: restore %s: %w", name, ErrRunning)
	}
	if !r.host.CgroupV2 {
		if err := removeMonitorCgroups(name, 0); err != nil {
			r.log.Warn("stale monitor cgroups", "container", name, "err", err)
		}
	}
	// The restore daemonizes an "[lxc monitor]" that inherits our stdout
	// and stderr: give it a file, never a pipe we would wait on forever.
	outPath := filepath.Join(dir, "lxc-restore.out")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	defer out.Close()
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "lxc-checkpoint", "-r", "-n", name, "-P", r.lxcPath,
		"--rcfile", r.ConfigPath(name), "-D", dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(outPath)
		return fmt.Errorf("runtime: restore %s: %w: %v: %s%s", name, ErrCheckpoint, err,
			strings.TrimSpace(string(b)), criuLogTail(filepath.Join(dir, "restore.log")))
	}
	if !waitState(ctx, c, startTimeout, lxc.RUNNING, lxc.FROZEN) {
		return fmt.Errorf("runtime: restore %s: %w: not running after restore (state %s)%s",
			name, ErrCheckpoint, c.State(), criuLogTail(filepath.Join(dir, "restore.log")))
	}
	pid := c.InitPid()
	if pid <= 0 {
		return fmt.Errorf("runtime: restore %s: no init pid", name)
	}
	r.reapMonitor(name, pid)
	// A container dumped frozen (a live move holds it so) comes back
	// frozen: thaw it.
	if err := r.Unfreeze(ctx, name); err != nil {
		return fmt.Errorf("runtime: restore %s: %w", name, err)
	}
	r.log.Info("restored", "container", name, "pid", pid, "took", time.Since(t0))
	return nil
}

// shareWithRoot gives a checkpoint directory to the container's root
// (the mapped root of an unprivileged container), which restores it.
func (r *Runtime) shareWithRoot(name, dir string) error {
	_, m, err := r.rootfsOf(name)
	if err != nil || m.IsZero() {
		return err
	}
	return ChownCheckpoint(dir, int(m.HostUID), int(m.HostGID))
}

// ChownCheckpoint gives the files of a checkpoint directory to uid:gid
// (a received checkpoint must be readable by the container's mapped root).
func ChownCheckpoint(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
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

// SetRestoreArgs replaces the extra CRIU restore arguments recorded in a
// checkpoint directory (the dump arguments are kept).
func SetRestoreArgs(dir string, restore []string) error {
	var dump []string
	if b, err := os.ReadFile(filepath.Join(dir, CRIUArgsFile)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if a, ok := strings.CutPrefix(l, "dump: "); ok {
				dump = append(dump, a)
			}
		}
	}
	return writeCRIUArgs(dir, dump, restore)
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
