package runtime

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/node/idmap"
)

// DeleteFile removes the file, symlink (not what it points to) or empty
// directory at path inside the container's rootfs (running or not). The
// parent is resolved as for PushFile; a missing path is ErrNotFound, a
// directory with entries ErrInvalid, "/" ErrInvalid.
func (r *Runtime) DeleteFile(ctx context.Context, name, p string) error {
	rootfs, _, err := r.rootfsOf(name)
	if err != nil {
		return err
	}
	if err := checkPath(p); err != nil {
		return fmt.Errorf("runtime: delete %s:%s: %w", name, p, err)
	}
	dir, base := path.Split(path.Clean("/" + p))
	if base == "" || base == "/" {
		return fmt.Errorf("%w: delete %s:%s: not a file path", ErrInvalid, name, p)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runtime: delete %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	dirFd, err := openInRoot(rootFd, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("runtime: delete %s:%s: %w", name, p, err)
	}
	defer unix.Close(dirFd)
	err = unix.Unlinkat(dirFd, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		err = unix.Unlinkat(dirFd, base, unix.AT_REMOVEDIR)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s", ErrNotFound, p)
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: delete %s:%s: the directory is not empty", ErrInvalid, name, p)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: delete %s:%s: a mount point", ErrInvalid, name, p)
	default:
		return fmt.Errorf("runtime: delete %s:%s: %w", name, p, err)
	}
}

// TreeInfo describes the root of a tree PullTree streams.
type TreeInfo struct {
	Mode     os.FileMode // permission and special bits (unixMode form)
	IsDir    bool
	UID, GID int // as the container sees them
}

// PullTree writes the tree at path inside the container's rootfs (a
// directory, or one file) to w as a tar stream, entries named from the
// path's base name ("etc/", "etc/hosts"): directories, regular files and
// symlinks (as links, never followed), fifos and device nodes (headers
// only), with modes, times and the container's ids; sockets are left out.
// The path itself is resolved as for PullFile; below it every entry is
// opened relative to its directory with O_NOFOLLOW, so a container
// swapping a directory for a symlink meanwhile cannot lead it outside.
// info, when not nil, is called with the root's description before the
// first byte is written.
func (r *Runtime) PullTree(ctx context.Context, name, p string, w io.Writer, info func(TreeInfo) error) error {
	rootfs, m, err := r.rootfsOf(name)
	if err != nil {
		return err
	}
	if err := checkPath(p); err != nil {
		return fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("runtime: pull %s:%s: open rootfs: %w", name, p, err)
	}
	defer unix.Close(rootFd)
	fd, err := openInRoot(rootFd, p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFDIR && kind != unix.S_IFREG {
		return fmt.Errorf("%w: pull %s:%s: not a directory or regular file", ErrInvalid, name, p)
	}
	t := &treeWriter{ctx: ctx, tw: tar.NewWriter(w), m: m}
	if info != nil {
		uid, gid := t.ids(&st)
		if err := info(TreeInfo{Mode: os.FileMode(st.Mode & 0o7777), IsDir: kind == unix.S_IFDIR, UID: uid, GID: gid}); err != nil {
			return err
		}
	}
	base := path.Base(path.Clean("/" + p))
	if base == "/" {
		base = "rootfs"
	}
	if err := t.entry(fd, base, &st); err != nil {
		return fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("runtime: pull %s:%s: %w", name, p, err)
	}
	return nil
}

// treeWriter writes one container tree as tar.
type treeWriter struct {
	ctx context.Context
	tw  *tar.Writer
	m   idmap.Map
}

// ids are the container's view of a host owner.
func (t *treeWriter) ids(st *unix.Stat_t) (int, int) {
	if t.m.IsZero() {
		return int(st.Uid), int(st.Gid)
	}
	uid, gid := 65534, 65534 // nobody: not mapped into the container
	if st.Uid >= t.m.HostUID && st.Uid-t.m.HostUID < t.m.Size {
		uid = int(st.Uid - t.m.HostUID)
	}
	if st.Gid >= t.m.HostGID && st.Gid-t.m.HostGID < t.m.Size {
		gid = int(st.Gid - t.m.HostGID)
	}
	return uid, gid
}

func (t *treeWriter) header(name string, st *unix.Stat_t, typ byte) *tar.Header {
	uid, gid := t.ids(st)
	return &tar.Header{Typeflag: typ, Name: name, Mode: int64(st.Mode & 0o7777), Uid: uid, Gid: gid,
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), Format: tar.FormatPAX}
}

// entry writes the open fd (a directory or regular file) named name.
func (t *treeWriter) entry(fd int, name string, st *unix.Stat_t) error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		h := t.header(name, st, tar.TypeReg)
		h.Size = st.Size
		if err := t.tw.WriteHeader(h); err != nil {
			return err
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			return err
		}
		dup, err := unix.Dup(fd)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(dup), name)
		defer f.Close()
		// The header's size is what it said: a file growing meanwhile is
		// cut, one shrinking is an error.
		n, err := io.Copy(t.tw, io.LimitReader(f, st.Size))
		if err == nil && n != st.Size {
			err = fmt.Errorf("%s shrank while it was read", name)
		}
		return err
	}
	if err := t.tw.WriteHeader(t.header(name+"/", st, tar.TypeDir)); err != nil {
		return err
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dup), name)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		if err := t.child(fd, name, n); err != nil {
			return err
		}
	}
	return nil
}

// child writes entry n of the directory dirFd (named dir in the tar).
func (t *treeWriter) child(dirFd int, dir, n string) error {
	full := dir + "/" + n
	var st unix.Stat_t
	if err := unix.Fstatat(dirFd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // gone meanwhile
		}
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkAt(dirFd, n)
		if err != nil {
			return err
		}
		h := t.header(full, &st, tar.TypeSymlink)
		h.Linkname = target
		return t.tw.WriteHeader(h)
	case unix.S_IFIFO:
		return t.tw.WriteHeader(t.header(full, &st, tar.TypeFifo))
	case unix.S_IFCHR, unix.S_IFBLK:
		typ := byte(tar.TypeChar)
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			typ = tar.TypeBlock
		}
		h := t.header(full, &st, typ)
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return t.tw.WriteHeader(h)
	case unix.S_IFREG, unix.S_IFDIR:
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dirFd, n, flags, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		defer unix.Close(fd)
		var now unix.Stat_t
		if err := unix.Fstat(fd, &now); err != nil {
			return err
		}
		if now.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
			return nil // replaced meanwhile by something else: left out
		}
		return t.entry(fd, full, &now)
	}
	return nil // sockets
}
