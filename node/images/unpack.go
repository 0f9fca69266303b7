package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
	"github.com/shoal-dev/shoal/internal/tarsafe"
)

// Unpack reads a unified image tarball (plain, gzip, xz, zstd or bzip2) from r and
// extracts its rootfs/ into dst, an existing and normally empty directory
// such as a fresh storage volume. It returns the tarball's metadata.yaml.
//
// Ownership, modes (setuid included), mtimes, symlinks, hard links, device
// nodes, fifos and extended attributes are restored; rootfs/ itself sets
// dst's owner and mode. Entries outside rootfs/ other than metadata.yaml
// (LXD's templates/) are ignored. Unpack refuses, with ErrInvalid, any entry
// whose name is absolute or contains "..", and any entry or hard link that
// would be reached through a symlink leading outside dst: every path is
// resolved with openat2(RESOLVE_BENEATH), so nothing is ever written outside
// dst. On error dst holds a partial tree the caller must discard.
func Unpack(ctx context.Context, r io.Reader, dst string) (Metadata, error) {
	zr, closer, err := decompress(r)
	if err != nil {
		return Metadata{}, fmt.Errorf("unpack into %s: %w", dst, err)
	}
	defer closer.Close()
	root, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Metadata{}, fmt.Errorf("unpack into %s: open: %w", dst, err)
	}
	u := &unpacker{root: root, parentFD: -1, buf: make([]byte, 1<<20), prefix: rootfsPrefix}
	defer u.close()
	md, err := u.run(ctx, tar.NewReader(zr))
	if err != nil {
		return Metadata{}, fmt.Errorf("unpack into %s: %w", dst, err)
	}
	return md, nil
}

// unpacker holds the state of one Unpack.
type unpacker struct {
	root       int    // dst, opened
	parentFD   int    // cached directory fd for parentPath, or -1
	parentPath string // relative to root
	buf        []byte
	dirs       []dirTime // directory mtimes, set last
	prefix     string    // tar name of the tree's root ("rootfs/")
	ids        func(uid, gid int) (int, int)
	// markImplied makes mkdirAll record the directories it creates that
	// no entry named in dirs, marked implied (their mtime is the caller's
	// to set).
	markImplied bool
}

// dirTime is a directory's mtime to restore once its children exist.
type dirTime struct {
	rel   string
	mtime unix.Timespec
	// implied: no entry named it (a parent made for one that did).
	implied bool
}

// close releases the unpacker's descriptors.
func (u *unpacker) close() {
	u.dropParent()
	unix.Close(u.root)
}

// run extracts every entry of tr.
func (u *unpacker) run(ctx context.Context, tr *tar.Reader) (Metadata, error) {
	var md Metadata
	haveMD, haveRoot := false, false
	for {
		if err := ctx.Err(); err != nil {
			return Metadata{}, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Metadata{}, fmt.Errorf("%w: read tar: %v", ErrInvalid, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return Metadata{}, err
		}
		if err := refuseSparse(hdr); err != nil {
			return Metadata{}, err
		}
		switch {
		case name == metadataName:
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return Metadata{}, fmt.Errorf("%w: read metadata.yaml: %v", ErrInvalid, err)
			}
			if md, err = parseMetadata(b); err != nil {
				return Metadata{}, err
			}
			haveMD = true
		case name == "rootfs":
			haveRoot = true
			if hdr.Typeflag != tar.TypeDir {
				return Metadata{}, fmt.Errorf("%w: rootfs is not a directory", ErrInvalid)
			}
			if err := u.attrs(u.root, hdr, true); err != nil {
				return Metadata{}, fmt.Errorf("rootfs/: %w", err)
			}
			u.dirs = append(u.dirs, dirTime{rel: ".", mtime: unix.NsecToTimespec(hdr.ModTime.UnixNano())})
		case strings.HasPrefix(name, rootfsPrefix):
			haveRoot = true
			if err := u.entry(tr, name[len(rootfsPrefix):], hdr); err != nil {
				return Metadata{}, fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
	}
	if !haveMD {
		return Metadata{}, fmt.Errorf("%w: no metadata.yaml", ErrInvalid)
	}
	if !haveRoot {
		return Metadata{}, fmt.Errorf("%w: no rootfs/", ErrInvalid)
	}
	return md, u.finishDirs()
}

// Extractor writes the entries of one tree of a tarball into a directory
// with Unpack's checks: no absolute names or "..", nothing reached through
// a symlink leading out, no sparse entries, hard links only within the
// tree. Errors about the input wrap ErrInvalid.
type Extractor struct{ u *unpacker }

// NewExtractor opens dst, an existing and normally empty directory, for
// the tree whose root is the tar name opts.Prefix.
func NewExtractor(dst string, opts TreeOptions) (*Extractor, error) {
	root, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("extract into %s: open: %w", dst, err)
	}
	return &Extractor{u: &unpacker{root: root, parentFD: -1, buf: make([]byte, 1<<20), prefix: opts.Prefix, ids: opts.IDs}}, nil
}

// Add writes one entry, its data read from r. Its name must be the tree's
// root or lie under it.
func (e *Extractor) Add(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if err := refuseSparse(hdr); err != nil {
		return err
	}
	h := *hdr
	if e.u.ids != nil {
		h.Uid, h.Gid = e.u.ids(h.Uid, h.Gid)
	}
	rootName := strings.TrimSuffix(e.u.prefix, "/")
	switch {
	case name == rootName:
		if h.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: %s is not a directory", ErrInvalid, hdr.Name)
		}
		if err := e.u.attrs(e.u.root, &h, true); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		e.u.dirs = append(e.u.dirs, dirTime{rel: ".", mtime: unix.NsecToTimespec(h.ModTime.UnixNano())})
		return nil
	case strings.HasPrefix(name, e.u.prefix):
		if err := e.u.entry(r, name[len(e.u.prefix):], &h); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %s lies outside %s", ErrInvalid, hdr.Name, e.u.prefix)
}

// Finish sets the directories' mtimes once every entry is in.
func (e *Extractor) Finish() error { return e.u.finishDirs() }

// Close releases the extractor's descriptors.
func (e *Extractor) Close() { e.u.close() }

// refuseSparse refuses sparse entries: a few kilobytes of tarball would
// write their whole declared size (see tarsafe.Sparse).
func refuseSparse(hdr *tar.Header) error {
	if tarsafe.Sparse(hdr) {
		return fmt.Errorf("%w: %s: sparse entries are not supported (it would expand to %d bytes); repack the image without --sparse", ErrInvalid, hdr.Name, hdr.Size)
	}
	return nil
}

// cleanName checks a tar entry name and returns it without "./" and
// trailing slashes. Absolute names and ".." components are refused.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path %q in tarball", ErrInvalid, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path %q escapes the image", ErrInvalid, name)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: NUL in path %q", ErrInvalid, name)
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// entry creates one rootfs entry at rel (relative to dst).
func (u *unpacker) entry(tr io.Reader, rel string, hdr *tar.Header) error {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode & 0o7777)
	if hdr.Typeflag != tar.TypeDir {
		if err := u.clear(pfd, base, rel); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err := unix.Mkdirat(pfd, base, 0o700)
		if errors.Is(err, unix.EEXIST) {
			var st unix.Stat_t
			if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if err := u.clear(pfd, base, rel); err != nil {
					return err
				}
				err = unix.Mkdirat(pfd, base, 0o700)
			} else {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open dir: %w", err)
		}
		defer unix.Close(fd)
		u.dirs = append(u.dirs, dirTime{rel: rel, mtime: unix.NsecToTimespec(hdr.ModTime.UnixNano())})
		return u.attrs(fd, hdr, true)
	case tar.TypeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		if _, err := io.CopyBuffer(fileWriter{f}, tr, u.buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return u.attrs(fd, hdr, false)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return u.attrsAt(pfd, base, hdr)
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(target, u.prefix) {
			return fmt.Errorf("%w: hard link to %q outside %s", ErrInvalid, hdr.Linkname, u.prefix)
		}
		tdir, tbase := path.Split(target[len(u.prefix):])
		tfd, err := u.openBeneath(strings.TrimSuffix(tdir, "/"))
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		defer unix.Close(tfd)
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			kind = unix.S_IFCHR
		case tar.TypeBlock:
			kind = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, kind|mode, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return u.attrsAt(pfd, base, hdr)
	default:
		logger().Debug("unpack: skipping entry type", "name", hdr.Name, "type", strconv.Itoa(int(hdr.Typeflag)))
		return nil
	}
}

// fileWriter hides *os.File's ReadFrom so io.CopyBuffer uses our buffer
// instead of probing copy_file_range and splice for every file.
type fileWriter struct{ f *os.File }

// Write writes p to the file.
func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// clear removes whatever non-directory sits at base, so a later tar entry
// replaces an earlier one. An existing directory is removed only if empty.
func (u *unpacker) clear(pfd int, base, rel string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(pfd, base, flags); err != nil {
		return fmt.Errorf("replace existing %s: %w", rel, err)
	}
	if u.parentPath == rel || strings.HasPrefix(u.parentPath, rel+"/") {
		u.dropParent() // the cached parent was rel or lay under it
	}
	return nil
}

// attrs sets ownership, mode and xattrs through an open fd, and the mtime
// unless it is a directory (done last, in finishDirs).
func (u *unpacker) attrs(fd int, hdr *tar.Header, isDir bool) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	// chmod after chown: chown clears setuid and setgid.
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattr); ok {
			if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
				logger().Debug("unpack: xattr not restored", "name", hdr.Name, "xattr", name, "err", err)
			}
		}
	}
	if isDir {
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
		// Older kernels lack AT_EMPTY_PATH for utimensat; use the fd path.
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0); err != nil {
			return fmt.Errorf("set mtime: %w", err)
		}
	}
	return nil
}

// attrsAt sets ownership, mode, xattrs and mtime of a symlink or device node
// named base in the directory pfd, never following a symlink.
func (u *unpacker) attrsAt(pfd int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattr); ok {
			p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
			if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
				logger().Debug("unpack: xattr not restored", "name", hdr.Name, "xattr", name, "err", err)
			}
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// parent returns an fd for directory dir (relative to dst, "" for dst),
// creating missing directories. The fd is cached and owned by u.
func (u *unpacker) parent(dir string) (int, error) {
	if dir == "" {
		return u.root, nil
	}
	if u.parentFD >= 0 && u.parentPath == dir {
		return u.parentFD, nil
	}
	u.dropParent()
	fd, err := u.openBeneath(dir)
	if errors.Is(err, unix.ENOENT) {
		fd, err = u.mkdirAll(dir)
	}
	if err != nil {
		return -1, fmt.Errorf("parent %s: %w", dir, err)
	}
	u.parentFD, u.parentPath = fd, dir
	return fd, nil
}

// dropParent closes the cached parent fd.
func (u *unpacker) dropParent() {
	if u.parentFD >= 0 {
		unix.Close(u.parentFD)
		u.parentFD, u.parentPath = -1, ""
	}
}

// openBeneath opens directory rel under dst. Symlinks are followed only while
// they stay beneath dst; one leading outside (absolute or through "..")
// fails with ErrInvalid. Resolution is the kernel's, in the same call as
// the open (openat2 RESOLVE_BENEATH), or internal/inroot's per-component
// walk where openat2 is missing.
func (u *unpacker) openBeneath(rel string) (int, error) {
	fd, err := inroot.Open(u.root, rel, unix.O_RDONLY|unix.O_DIRECTORY, inroot.Beneath)
	switch {
	case errors.Is(err, inroot.ErrEscape):
		return -1, fmt.Errorf("%w: %s resolves outside the root filesystem", ErrInvalid, rel)
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("%w: %s is not a directory", ErrInvalid, rel)
	case err != nil:
		return -1, err
	}
	return fd, nil
}

// mkdirAll creates the missing directories of rel (mode 0755, root-owned, as
// tar does for implied parents) and returns an fd for the last one.
func (u *unpacker) mkdirAll(rel string) (int, error) {
	fd, err := unix.Dup(u.root)
	if err != nil {
		return -1, err
	}
	done := ""
	for _, c := range strings.Split(rel, "/") {
		done = path.Join(done, c)
		if err := unix.Mkdirat(fd, c, 0o755); err == nil && u.markImplied {
			u.dirs = append(u.dirs, dirTime{rel: done, implied: true})
		} else if err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, fmt.Errorf("mkdir %s: %w", done, err)
		}
		next, err := u.openBeneath(done)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// finishDirs sets directory mtimes, deepest first, now that their contents
// are complete.
func (u *unpacker) finishDirs() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fd, err := u.openBeneath(d.rel)
		if err != nil {
			return fmt.Errorf("%s: %w", d.rel, err)
		}
		ts := []unix.Timespec{d.mtime, d.mtime}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: set mtime: %w", d.rel, err)
		}
	}
	return nil
}
