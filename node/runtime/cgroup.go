package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// v1CgroupDir returns the host directory of pid's cgroup in the v1
// hierarchy holding controller.
func v1CgroupDir(pid int, controller string) (string, error) {
	dirs, err := v1CgroupDirs(pid)
	if err != nil {
		return "", err
	}
	if d, ok := dirs[controller]; ok {
		return d, nil
	}
	return "", fmt.Errorf("no %s cgroup for pid %d", controller, pid)
}

// v1CgroupDirs maps each v1 controller of pid to its host directory.
func v1CgroupDirs(pid int) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	dirs := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			dirs[c] = filepath.Join(cgroupV1Root, c, parts[2])
		}
	}
	return dirs, nil
}

// freezeV1 freezes the v1 freezer cgroup of pid and polls (with a short,
// growing delay) until the kernel reports FROZEN. liblxc's own v1 freeze
// sleeps a whole second between checks.
func freezeV1(ctx context.Context, pid int) error {
	dir, err := v1CgroupDir(pid, "freezer")
	if err != nil {
		return err
	}
	state := filepath.Join(dir, "freezer.state")
	if err := os.WriteFile(state, []byte("FROZEN"), 0); err != nil {
		return err
	}
	delay := 100 * time.Microsecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(state)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == "FROZEN" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = os.WriteFile(state, []byte("THAWED"), 0)
			return errors.New("freezer did not reach FROZEN")
		}
		// Writing FROZEN again retries tasks that were busy.
		_ = os.WriteFile(state, []byte("FROZEN"), 0)
		time.Sleep(delay)
		if delay < 10*time.Millisecond {
			delay *= 2
		}
	}
}

// monitorCgroupsOf returns the v1 cgroup directories of the "[lxc
// monitor]" of the container whose init is initPid (its parent), when they
// are LXC monitor cgroups.
func monitorCgroupsOf(initPid int) []string {
	mon := parentPid(initPid)
	if mon <= 1 {
		return nil
	}
	dirs, err := v1CgroupDirs(mon)
	if err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if strings.Contains(filepath.Base(d), "lxc.monitor.") && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// removeCgroupDirs removes the given (empty) cgroup directories, retrying
// until wait passes while their tasks exit.
func removeCgroupDirs(dirs []string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				left = append(left, d)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups left: %s", strings.Join(left, " "))
		}
		time.Sleep(5 * time.Millisecond)
		dirs = left
	}
}

// removeMonitorCgroups removes the empty v1 "lxc.monitor.<name>" cgroups
// liblxc 5.0.2 leaves behind on this host when a container stops (those of
// a monitor still running stay: rmdir refuses a cgroup with tasks).
func removeMonitorCgroups(name string) error {
	var dirs []string
	for _, pat := range []string{"lxc.monitor." + name, "lxc.monitor." + name + "-[0-9]*"} {
		m, _ := filepath.Glob(filepath.Join(cgroupV1Root, "*", pat))
		dirs = append(dirs, m...)
	}
	return removeCgroupDirs(dirs, 0)
}

// thawV1 thaws the v1 freezer cgroup of pid.
func thawV1(pid int) error {
	dir, err := v1CgroupDir(pid, "freezer")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
}

// freezerStateV1 reads the v1 freezer state (THAWED, FREEZING, FROZEN) of
// pid's cgroup.
func freezerStateV1(pid int) (string, error) {
	dir, err := v1CgroupDir(pid, "freezer")
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
	return strings.TrimSpace(string(b)), err
}

// CPUSet returns the CPUs a running container's cgroup allows, as the
// kernel lists them ("0-1,3"); "" where the cgroup sets none (v2 without
// a cpuset: the parent's apply).
func (r *Runtime) CPUSet(ctx context.Context, name string) (string, error) {
	c, err := r.container(name)
	if err != nil {
		return "", err
	}
	if !c.Running() {
		return "", fmt.Errorf("runtime: cpuset of %s: %w", name, ErrNotRunning)
	}
	v := c.CgroupItem("cpuset.cpus")
	if len(v) == 0 {
		return "", nil
	}
	return strings.TrimSpace(v[0]), nil
}

// unpinCPUs gives the running container whose init is pid back every CPU
// its parent cgroup allows: on v1 it copies the parent's cpuset.cpus (an
// empty set is refused while tasks run), on v2 it empties cpuset.cpus,
// which means "inherit".
func unpinCPUs(pid int, v2 bool) error {
	if v2 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				return os.WriteFile(filepath.Join(cgroupV1Root, p, "cpuset.cpus"), []byte("\n"), 0)
			}
		}
		return fmt.Errorf("no unified cgroup for pid %d", pid)
	}
	dir, err := v1CgroupDir(pid, "cpuset")
	if err != nil {
		return err
	}
	parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "cpuset.cpus"))
	if err != nil {
		return err
	}
	cur, err := os.ReadFile(filepath.Join(dir, "cpuset.cpus"))
	if err != nil || strings.TrimSpace(string(cur)) == strings.TrimSpace(string(parent)) {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cpuset.cpus"), parent, 0)
}
