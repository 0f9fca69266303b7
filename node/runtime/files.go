package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
	"github.com/shoal-dev/shoal/node/idmap"
)

// maxSymlinks bounds the symlinks a push follows at its last component
// (the kernel's own limit applies to the rest of the path).
const maxSymlinks = 40

// PushFile writes the content of src to path inside the container's rootfs
// (running or not), atomically (temporary file then rename), with mode
// (os.ModeSetuid etc. or raw 0o4755-style bits) and
// the container ids uid:gid (shifted through the idmap when unprivileged).
// The parent directory must exist.
//
// The path is resolved as a process in the container resolves it, by the
// kernel and in one step with the open (openat2 RESOLVE_IN_ROOT on the
// rootfs): symlinks, absolute or relative, and ".." stay inside the rootfs
// ("/.." is "/"), so a container process swapping a component for a
// symlink meanwhile cannot send the write anywhere else. A symlink at the
// last component is followed, as a write through it would be. A path that
// as written climbs above "/" ("../x", "/a/../../x") is refused with
// ErrPathEscape.
func (r *Runtime) PushFile(ctx context.Context, name, p string, src io.Reader, mode os.FileMode, uid, gid int) error {
	rootfs, m, err := r.rootfsOf(name)
	if err != nil {
		return err
	}
	if uid < 0 || gid < 0 {
		return fmt.Errorf("%w: uid/gid %d:%d", ErrInvalid, uid, gid)
	}
	huid, hgid := uint32(uid), uint32(gid)
	if !m.IsZero() {
		if !m.Contains(huid, hgid) {
			return fmt.Errorf("%w: uid/gid %d:%d outside the container's idmap", ErrInvalid, uid, gid)
		}
		huid, hgid = m.ToHost(huid, hgid)
	}
	if err := checkPath(p); err != nil {
		return fmt.Errorf("runtime: push %s:%s: %w", name, p, err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runtime: push %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	dirFd, base, err := openParent(rootFd, p)
	if err != nil {
		return fmt.Errorf("runtime: push %s:%s: %w", name, p, err)
	}
	defer unix.Close(dirFd)

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := ".shoal-push-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dirFd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("runtime: push %s:%s: create: %w", name, p, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = unix.Unlinkat(dirFd, tmp, 0)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, src}); err != nil {
		return fmt.Errorf("runtime: push %s:%s: write: %w", name, p, err)
	}
	if err := unix.Fchown(fd, int(huid), int(hgid)); err != nil {
		return fmt.Errorf("runtime: push %s:%s: chown: %w", name, p, err)
	}
	// chmod after chown: chown clears setuid/setgid.
	if err := unix.Fchmod(fd, unixMode(mode)); err != nil {
		return fmt.Errorf("runtime: push %s:%s: chmod: %w", name, p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("runtime: push %s:%s: close: %w", name, p, err)
	}
	if err := unix.Renameat(dirFd, tmp, dirFd, base); err != nil {
		if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: push %s:%s: a directory is in the way", ErrInvalid, name, p)
		}
		return fmt.Errorf("runtime: push %s:%s: rename: %w", name, p, err)
	}
	ok = true
	return nil
}

// openParent opens, inside the rootfs, the directory that a write to
// container path p lands in, and returns it with the name to write there.
// A symlink at the last component is followed (in the rootfs) first.
func openParent(rootFd int, p string) (int, string, error) {
	for hops := 0; hops <= maxSymlinks; hops++ {
		dir, base := path.Split(p)
		if base == "" || base == "." || base == ".." {
			return -1, "", fmt.Errorf("%w: not a file path", ErrInvalid)
		}
		dirFd, err := openInRoot(rootFd, dir, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return -1, "", err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirFd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return dirFd, base, nil // missing (a new file) or not a symlink
		}
		target, err := readlinkAt(dirFd, base)
		unix.Close(dirFd)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			continue // no longer a symlink: look again
		}
		if err != nil {
			return -1, "", err
		}
		if !strings.HasPrefix(target, "/") {
			target = dir + target
		}
		p = target
	}
	return -1, "", fmt.Errorf("%w: too many symlinks", ErrInvalid)
}

// readlinkAt reads the symlink name in the directory dirFd.
func readlinkAt(dirFd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirFd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// PullFile opens the regular file at path inside the container's rootfs
// (running or not). The FileInfo's Sys() is the host *syscall.Stat_t (host
// ids). The path is resolved as for PushFile (a final symlink is followed,
// inside the rootfs); a missing file is ErrNotFound, anything but a regular
// file ErrInvalid (a FIFO or device is never opened for reading).
func (r *Runtime) PullFile(ctx context.Context, name, p string) (io.ReadCloser, os.FileInfo, error) {
	rootfs, _, err := r.rootfsOf(name)
	if err != nil {
		return nil, nil, err
	}
	if err := checkPath(p); err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	// O_NONBLOCK: opening a FIFO the container put there must not wait
	// for a writer (it is refused below); O_NOCTTY: a tty never becomes
	// the daemon's.
	fd, err := openInRoot(rootFd, p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%w: pull %s:%s: not a regular file", ErrInvalid, name, p)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	return f, fi, nil
}

// rootfsOf returns the host rootfs path and idmap (zero when privileged)
// from the container's loaded configuration.
func (r *Runtime) rootfsOf(name string) (string, idmap.Map, error) {
	c, err := r.container(name)
	if err != nil {
		return "", idmap.Map{}, err
	}
	var rootfs string
	if v := c.ConfigItem("lxc.rootfs.path"); len(v) > 0 {
		rootfs = strings.TrimPrefix(v[0], "dir:")
	}
	if rootfs == "" || !strings.HasPrefix(rootfs, "/") {
		return "", idmap.Map{}, fmt.Errorf("runtime: %s: unsupported rootfs %q", name, rootfs)
	}
	var m idmap.Map
	for _, l := range c.ConfigItem("lxc.idmap") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "lxc.idmap ="))
		if len(f) != 4 || f[1] != "0" {
			continue
		}
		host, err1 := strconv.ParseUint(f[2], 10, 32)
		size, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		switch f[0] {
		case "u":
			m.HostUID, m.Size = uint32(host), uint32(size)
		case "g":
			m.HostGID = uint32(host)
		}
	}
	return rootfs, m, nil
}

// checkPath refuses a container path with a NUL, or one that as written
// climbs above "/" ("../etc", "/a/../../etc"): the container would read
// that as "/etc", but a caller who wrote it most likely meant something
// else. Symlinks are not looked at here; the kernel confines them.
func checkPath(p string) error {
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: NUL in path", ErrInvalid)
	}
	depth := 0
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth == 0 {
				return fmt.Errorf("%w: %q climbs above /", ErrPathEscape, p)
			}
			depth--
		default:
			depth++
		}
	}
	return nil
}

// openInRoot opens container path p inside the rootfs rootFd, resolved by
// the kernel as the container would resolve it (internal/inroot: openat2
// RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, or its per-component walk), and
// turns the errors into the package's sentinels.
func openInRoot(rootFd int, p string, flags int) (int, error) {
	fd, err := inroot.Open(rootFd, p, flags, inroot.InRoot)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("%w: %s", ErrNotFound, p)
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("%w: %s: too many symlinks, or a symlink where none may be", ErrInvalid, p)
	case errors.Is(err, inroot.ErrEscape):
		return -1, fmt.Errorf("%w: %s", ErrPathEscape, p)
	default:
		return -1, err
	}
}

// unixMode converts an os.FileMode's permission and special bits. Raw
// Unix special bits (0o4000, 0o2000, 0o1000) are honoured too, so callers
// may pass either os.ModeSetuid|0o755 or 0o4755.
func unixMode(m os.FileMode) uint32 {
	out := uint32(m.Perm()) | uint32(m)&0o7000
	if m&os.ModeSetuid != 0 {
		out |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		out |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		out |= unix.S_ISVTX
	}
	return out
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
