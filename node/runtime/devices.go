package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrDeviceSource is returned when a device's host source is missing or
// of the wrong kind.
var ErrDeviceSource = errors.New("device source unusable")

// Mount is a host path bound into the container (LXD's disk device).
type Mount struct {
	// Name is the device's name.
	Name string
	// Source is the host path.
	Source string
	// Path is where it appears, absolute inside the container.
	Path string
	// ReadOnly binds it read-only.
	ReadOnly bool
	// Optional skips a source that does not exist (required=false).
	Optional bool
}

// DevNode is a host device node made available inside the container
// (unix-char, unix-block): a node of the same numbers, owned and
// permissioned as asked, and allowed by the devices cgroup.
type DevNode struct {
	// Name is the device's name.
	Name string
	// Source is the host's node (its numbers are used).
	Source string
	// Path is where it appears inside (default: Source).
	Path string
	// UID, GID own it inside the container; Mode is its permission bits.
	UID, GID uint32
	Mode     uint32
}

// Devices are a container's disk and unix devices.
type Devices struct {
	Mounts   []Mount   `json:"mounts,omitempty"`
	DevNodes []DevNode `json:"dev_nodes,omitempty"`
}

func (d Devices) validate() error {
	for _, m := range d.Mounts {
		for _, v := range []string{m.Source, m.Path} {
			if !filepath.IsAbs(v) || strings.ContainsAny(v, " \t\n\r\\") {
				return fmt.Errorf("%w: device %s: bad path %q (absolute, no whitespace or backslash)", ErrInvalid, m.Name, v)
			}
		}
	}
	for _, n := range d.DevNodes {
		for _, v := range []string{n.Source, n.inside()} {
			if !filepath.IsAbs(v) || strings.ContainsAny(v, " \t\n\r\\") {
				return fmt.Errorf("%w: device %s: bad path %q (absolute, no whitespace or backslash)", ErrInvalid, n.Name, v)
			}
		}
	}
	return nil
}

func (n DevNode) inside() string {
	if n.Path != "" {
		return n.Path
	}
	return n.Source
}

// devNumbers reads a host node's type and numbers.
func devNumbers(n DevNode) (kind byte, major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(n.Source, &st); err != nil {
		return 0, 0, 0, fmt.Errorf("device %s: source %s: %w: %v", n.Name, n.Source, ErrDeviceSource, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		kind = 'c'
	case unix.S_IFBLK:
		kind = 'b'
	default:
		return 0, 0, 0, fmt.Errorf("device %s: source %s is not a device node: %w", n.Name, n.Source, ErrDeviceSource)
	}
	return kind, unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// deviceConfig returns the lxc.mount.entry and cgroup lines of a container's
// devices; nodes are made under dir. A missing required source is an
// error naming the device.
func (r *Runtime) deviceConfig(spec Spec, dir string) ([]string, error) {
	var lines []string
	for _, m := range spec.Devices.Mounts {
		st, err := os.Stat(m.Source)
		if err != nil {
			if m.Optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("device %s: source %s: %w: %v", m.Name, m.Source, ErrDeviceSource, err)
		}
		opts := "rbind,create=dir"
		if !st.IsDir() {
			opts = "bind,create=file"
		}
		if m.ReadOnly {
			opts += ",ro"
		}
		// The container binds the staged copy (stageMounts): its root,
		// mapped to an unprivileged host id, may not reach the source.
		lines = append(lines, fmt.Sprintf("lxc.mount.entry = %s %s none %s 0 0", filepath.Join(dir, "disk."+m.Name),
			strings.TrimPrefix(filepath.Clean(m.Path), "/"), opts))
	}
	for _, n := range spec.Devices.DevNodes {
		node, rule, err := r.makeNode(spec, dir, n)
		if err != nil {
			return nil, err
		}
		lines = append(lines, r.host.cgroupPrefix()+"devices.allow = "+rule,
			fmt.Sprintf("lxc.mount.entry = %s %s none bind,create=file 0 0", node, strings.TrimPrefix(filepath.Clean(n.inside()), "/")))
	}
	return lines, nil
}

// makeNode creates the node a DevNode binds in, owned by the host ids its
// container ids map to, and returns it with its devices cgroup rule.
func (r *Runtime) makeNode(spec Spec, dir string, n DevNode) (string, string, error) {
	kind, major, minor, err := devNumbers(n)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", "", err
	}
	path := filepath.Join(dir, n.Name)
	_ = os.Remove(path)
	mode := n.Mode
	if mode == 0 {
		mode = 0o660
	}
	typ := uint32(unix.S_IFCHR)
	if kind == 'b' {
		typ = unix.S_IFBLK
	}
	if err := unix.Mknod(path, typ|mode, int(unix.Mkdev(major, minor))); err != nil {
		return "", "", fmt.Errorf("device %s: make node: %w", n.Name, err)
	}
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		return "", "", err
	}
	uid, gid := n.UID, n.GID
	if !spec.Privileged {
		uid, gid = spec.IDMap.ToHost(uid, gid)
	}
	if err := os.Lchown(path, int(uid), int(gid)); err != nil {
		return "", "", fmt.Errorf("device %s: own node: %w", n.Name, err)
	}
	return path, fmt.Sprintf("%c %d:%d rwm", kind, major, minor), nil
}

// devicesDir holds a container's device nodes on the host.
func (r *Runtime) devicesDir(name string) string { return filepath.Join(r.lxcPath, name, "devices") }

// appliedPath records the devices a running container has now (those it
// started with, then each hot-plug's).
func (r *Runtime) appliedPath(name string) string {
	return filepath.Join(r.lxcPath, name, "devices.applied.json")
}

func (r *Runtime) definedPath(name string) string {
	return filepath.Join(r.lxcPath, name, "devices.json")
}

func readDevices(path string) (Devices, error) {
	var d Devices
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return d, err
	}
	return d, json.Unmarshal(b, &d)
}

func writeDevices(path string, d Devices) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

// SetDevices makes a running container's disk and unix devices those of
// want without a restart (hot-plug): a device gone or changed is unmounted
// inside, a new one is bound in through the container's mount namespace.
// The definition (Define) must already hold want, so a restart has it too.
func (r *Runtime) SetDevices(ctx context.Context, name string, spec Spec) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return ErrNotRunning
	}
	have, err := readDevices(r.appliedPath(name))
	if err != nil {
		return fmt.Errorf("runtime: devices of %s: %w", name, err)
	}
	want := spec.Devices
	if err := want.validate(); err != nil {
		return err
	}
	save := func() error { return writeDevices(r.appliedPath(name), have) }
	// Mount points are made as the container's root, so that they are
	// its own (and a tmpfs of its user namespace accepts them).
	var root [2]uint32
	if !spec.Privileged {
		root[0], root[1] = spec.IDMap.ToHost(0, 0)
	}
	for _, m := range slices.Clone(have.Mounts) {
		if slices.Contains(want.Mounts, m) {
			continue
		}
		if err := inMountNS(pid, func() error { return unmountIfMounted(m.Path) }); err != nil {
			return fmt.Errorf("runtime: unplug device %s from %s: %w", m.Name, name, err)
		}
		have.Mounts = slices.DeleteFunc(have.Mounts, func(x Mount) bool { return x == m })
		if err := save(); err != nil {
			return err
		}
	}
	for _, n := range slices.Clone(have.DevNodes) {
		if slices.Contains(want.DevNodes, n) {
			continue
		}
		if err := inMountNS(pid, func() error {
			if err := unmountIfMounted(n.inside()); err != nil {
				return err
			}
			return os.Remove(n.inside())
		}); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("runtime: unplug device %s from %s: %w", n.Name, name, err)
		}
		if kind, major, minor, err := devNumbers(n); err == nil && !r.host.CgroupV2 {
			_ = c.SetCgroupItem("devices.deny", fmt.Sprintf("%c %d:%d rwm", kind, major, minor))
		}
		have.DevNodes = slices.DeleteFunc(have.DevNodes, func(x DevNode) bool { return x == n })
		if err := save(); err != nil {
			return err
		}
	}
	for _, m := range want.Mounts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if slices.Contains(have.Mounts, m) {
			continue
		}
		if _, err := os.Stat(m.Source); err != nil && m.Optional {
			continue
		}
		if err := hotMount(pid, root, m.Source, m.Path, m.ReadOnly); err != nil {
			return fmt.Errorf("runtime: plug device %s into %s: %w", m.Name, name, err)
		}
		have.Mounts = append(have.Mounts, m)
		if err := save(); err != nil {
			return err
		}
	}
	for _, n := range want.DevNodes {
		if slices.Contains(have.DevNodes, n) {
			continue
		}
		node, rule, err := r.makeNode(spec, r.devicesDir(name), n)
		if err != nil {
			return fmt.Errorf("runtime: plug device %s into %s: %w", n.Name, name, err)
		}
		if err := c.SetCgroupItem("devices.allow", rule); err != nil {
			return fmt.Errorf("runtime: plug device %s into %s: allow %s: %w", n.Name, name, rule, err)
		}
		if err := hotMount(pid, root, node, n.inside(), false); err != nil {
			return fmt.Errorf("runtime: plug device %s into %s: %w", n.Name, name, err)
		}
		have.DevNodes = append(have.DevNodes, n)
		if err := save(); err != nil {
			return err
		}
	}
	return nil
}

// hotMount binds a host path into a running container: the tree is cloned
// on the host (open_tree), made read-only if asked, and moved onto the
// target from inside the container's mount namespace, where the target is
// created if missing (a directory, or an empty file for a file source),
// owned by owner (host uid and gid).
func hotMount(pid int, owner [2]uint32, source, target string, readonly bool) error {
	st, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("source %s: %w: %v", source, ErrDeviceSource, err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", source, err)
	}
	defer unix.Close(tree)
	if readonly {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			return fmt.Errorf("make %s read-only: %w", source, err)
		}
	}
	return inMountNS(pid, func() error {
		// Per thread, and this thread is never reused.
		unix.Setfsgid(int(owner[1]))
		unix.Setfsuid(int(owner[0]))
		if st.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		} else {
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount onto %s: %w", target, err)
		}
		return nil
	})
}

// unmountIfMounted detaches what is mounted at path (nothing if nothing is).
func unmountIfMounted(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// inMountNS runs f on a thread that joined the mount namespace of pid.
// The thread first stops sharing its filesystem attributes with the rest
// of the process (setns into a mount namespace requires that), and it is
// never handed back: it ends with the goroutine, so no other goroutine
// ever runs in the container's namespace.
func inMountNS(pid int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare CLONE_FS: %w", err)
			}
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open mount namespace of %d: %w", pid, err)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("join mount namespace of %d: %w", pid, err)
			}
			return f()
		}()
	}()
	return <-errc
}

// stageMounts binds each disk device's source under the container's
// devices directory, as real root on the host, before the container
// starts: LXC mounts the entries as the container's root, an unprivileged
// host id that may not traverse the source's parents (LXD stages its disk
// devices the same way). Whatever an earlier start staged is unmounted
// first.
func (r *Runtime) stageMounts(name string) error {
	if err := r.unstageMounts(name); err != nil {
		return err
	}
	d, err := readDevices(r.definedPath(name))
	if err != nil {
		return err
	}
	dir := r.devicesDir(name)
	for _, m := range d.Mounts {
		st, err := os.Stat(m.Source)
		if err != nil {
			if m.Optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("device %s: source %s: %w: %v", m.Name, m.Source, ErrDeviceSource, err)
		}
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return err
		}
		target := filepath.Join(dir, "disk."+m.Name)
		if st.IsDir() {
			err = os.Mkdir(target, 0o755)
		} else {
			err = os.WriteFile(target, nil, 0o644)
		}
		if err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("device %s: stage %s: %w", m.Name, m.Source, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("device %s: stage %s read-only: %w", m.Name, m.Source, err)
			}
		}
	}
	return nil
}

// unstageMounts unmounts every staged disk source of a container and
// removes the mount points; an error means one is still mounted, and the
// devices directory must then not be removed (it would reach the source).
func (r *Runtime) unstageMounts(name string) error {
	dir := r.devicesDir(name)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "disk.") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		for {
			// Repeated: a source staged twice (an interrupted start).
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				if errors.Is(err, unix.EINVAL) {
					break
				}
				return fmt.Errorf("unstage device %s: %w", e.Name(), err)
			}
		}
		// Remove (not RemoveAll): an empty mount point, never what a
		// mount might still show.
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("unstage device %s: %w", e.Name(), err)
		}
	}
	return nil
}

// recordStarted notes, as a container starts, that it has the devices of
// its definition.
func (r *Runtime) recordStarted(name string) error {
	d, err := readDevices(r.definedPath(name))
	if err != nil {
		return err
	}
	return writeDevices(r.appliedPath(name), d)
}

// unstage unmounts a stopped container's staged disk sources, logging
// what it cannot (the next start or the undefine tries again).
func (r *Runtime) unstage(name string) {
	if err := r.unstageMounts(name); err != nil {
		r.log.Warn("unstage disk devices", "container", name, "err", err)
	}
}
