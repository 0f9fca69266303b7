package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/node/idmap"
)

// maxSymlinks bounds symlink hops while resolving a container path.
const maxSymlinks = 40

// PushFile writes the content of src to path inside the container's rootfs
// (running or not), atomically (temporary file then rename), with mode
// (os.ModeSetuid etc. or raw 0o4755-style bits) and
// the container ids uid:gid (shifted through the idmap when unprivileged).
// The parent directory must exist. Paths that leave the rootfs, by ".." or
// by a relative symlink climbing above it, return ErrPathEscape; absolute
// symlinks resolve inside the rootfs, as they would in the container.
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
	rel, err := resolveInRoot(rootfs, p, true)
	if err != nil {
		return fmt.Errorf("runtime: push %s:%s: %w", name, p, err)
	}
	dir, base := path.Split(rel)
	if base == "" || base == "." {
		return fmt.Errorf("%w: push %s:%s: not a file path", ErrInvalid, name, p)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runtime: push %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	dirFd, err := openInRoot(rootFd, dir, unix.O_RDONLY|unix.O_DIRECTORY)
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
		return fmt.Errorf("runtime: push %s:%s: rename: %w", name, p, err)
	}
	ok = true
	return nil
}

// PullFile opens the regular file at path inside the container's rootfs
// (running or not). The FileInfo's Sys() is the host *syscall.Stat_t (host
// ids). Confinement is as for PushFile; a missing file is ErrNotFound.
func (r *Runtime) PullFile(ctx context.Context, name, p string) (io.ReadCloser, os.FileInfo, error) {
	rootfs, _, err := r.rootfsOf(name)
	if err != nil {
		return nil, nil, err
	}
	rel, err := resolveInRoot(rootfs, p, false)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	fd, err := openInRoot(rootFd, rel, unix.O_RDONLY)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: pull %s:%s: not a regular file", ErrInvalid, name, p)
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

// resolveInRoot resolves container path p against the host directory root
// the way the container would see it, returning a clean path relative to
// root. ".." above the root, directly or through a relative symlink, is
// ErrPathEscape; absolute symlinks restart at root. With allowMissingLast
// the final component may not exist (it is not resolved further then).
func resolveInRoot(root, p string, allowMissingLast bool) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: NUL in path", ErrInvalid)
	}
	todo := splitPath(p)
	var done []string
	hops := 0
	for len(todo) > 0 {
		comp := todo[0]
		todo = todo[1:]
		switch comp {
		case ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", fmt.Errorf("%w: %q", ErrPathEscape, p)
			}
			done = done[:len(done)-1]
			continue
		}
		cur := append(done[:len(done):len(done)], comp)
		hostPath := root + "/" + strings.Join(cur, "/")
		fi, err := os.Lstat(hostPath)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if len(todo) == 0 && allowMissingLast {
					return strings.Join(cur, "/"), nil
				}
				return "", fmt.Errorf("%w: %q", ErrNotFound, p)
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = cur
			continue
		}
		hops++
		if hops > maxSymlinks {
			return "", fmt.Errorf("%w: too many symlinks in %q", ErrInvalid, p)
		}
		target, err := os.Readlink(hostPath)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		todo = append(splitPath(target), todo...)
	}
	return strings.Join(done, "/"), nil
}

// splitPath splits p on '/' dropping empty components.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// openInRoot opens rel beneath rootFd with the kernel confining resolution
// to the root (a second line of defence against races with the walk).
func openInRoot(rootFd int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(rootFd, rel, &how)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("%w: %s", ErrNotFound, rel)
	case errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("%w: %s", ErrPathEscape, rel)
	default:
		return -1, fmt.Errorf("open %s: %w", rel, err)
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
