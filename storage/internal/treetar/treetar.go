// Package treetar writes a directory tree as a PAX tar stream and reads
// one back, keeping everything a container's root filesystem holds:
// ownership, modes (setuid included), nanosecond mtimes, xattrs,
// symlinks, hardlinks, fifos and device nodes. It is the generic volume
// stream of the drivers without a native one (dir, lvm), so their
// streams are one format. Reading never writes outside the target.
package treetar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const xattrPrefix = "SCHILY.xattr."

// Write writes the tree at root to w as a PAX tar stream keeping
// ownership, modes (setuid included), nanosecond mtimes, xattrs, symlinks,
// hardlinks, fifos and device nodes. The root directory is the entry ".".
// Sockets are skipped.
func Write(ctx context.Context, root string, w io.Writer) error {
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		hdr := &tar.Header{
			Name:    filepath.ToSlash(rel),
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			Format:  tar.FormatPAX,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			key := inode{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			} else {
				if st.Nlink > 1 {
					links[key] = hdr.Name
				}
				hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
			}
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			if hdr.Name != "." {
				hdr.Name += "/"
			}
		case unix.S_IFLNK:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return nil // sockets cannot be copied
		}
		if hdr.Typeflag != tar.TypeLink {
			if hdr.PAXRecords, err = readXattrs(p); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header %s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, hdr.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("tar %s: %w", hdr.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// readXattrs returns p's xattrs as PAX records (nil when it has none).
func readXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	var recs map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		val := make([]byte, sz)
		if sz, err = unix.Lgetxattr(p, name, val); err != nil {
			return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		if recs == nil {
			recs = map[string]string{}
		}
		recs[xattrPrefix+name] = string(val[:sz])
	}
	return recs, nil
}

// Read extracts a stream written by Write into the existing, empty
// directory dst. Every entry stays inside dst: names are checked and parent
// directories are resolved through an os.Root, so no symlink in the stream
// can lead outside.
func Read(ctx context.Context, r io.Reader, dst string) error {
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	ex := &extractor{root: root, dst: dst}
	defer ex.closeParent()
	tr := tar.NewReader(r)
	type dirTime struct {
		name string
		mtim time.Time
	}
	var dirs []dirTime
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name := path.Clean(hdr.Name)
		if name != "." && !filepath.IsLocal(name) {
			return fmt.Errorf("tar entry %q leaves the volume", hdr.Name)
		}
		if err := ex.entry(name, hdr, tr); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		}
	}
	// Directory mtimes last, deepest first, once nothing more is written in them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chtimes(dirs[i].name, dirs[i].mtim, dirs[i].mtim); err != nil {
			return fmt.Errorf("extract %s: %w", dirs[i].name, err)
		}
	}
	return nil
}

type extractor struct {
	root       *os.Root
	dst        string
	parentName string
	parent     *os.File
}

func (ex *extractor) closeParent() {
	if ex.parent != nil {
		ex.parent.Close()
		ex.parent = nil
	}
}

// parentFD opens (and caches) the directory holding name, inside the root.
func (ex *extractor) parentFD(name string) (int, error) {
	dir := path.Dir(name)
	if ex.parent != nil && ex.parentName == dir {
		return int(ex.parent.Fd()), nil
	}
	ex.closeParent()
	f, err := ex.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err = ex.root.MkdirAll(dir, 0o755); err == nil {
			f, err = ex.root.Open(dir)
		}
	}
	if err != nil {
		return -1, err
	}
	ex.parent, ex.parentName = f, dir
	return int(f.Fd()), nil
}

func (ex *extractor) entry(name string, hdr *tar.Header, r io.Reader) error {
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("root entry is not a directory")
		}
		fd, err := unix.Open(ex.dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return setAttrs(fd, ".", hdr, false)
	}
	fd, err := ex.parentFD(name)
	if err != nil {
		return err
	}
	base := path.Base(name)
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(fd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	case tar.TypeReg:
		ffd, err := unix.Openat(fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(ffd), name)
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeLink:
		target := path.Clean(hdr.Linkname)
		if !filepath.IsLocal(target) {
			return fmt.Errorf("hardlink target %q leaves the volume", hdr.Linkname)
		}
		return ex.root.Link(target, name)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, fd, base); err != nil {
			return err
		}
		return setAttrs(fd, base, hdr, true)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(fd, base, kind|mode, int(dev)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	return setAttrs(fd, base, hdr, false)
}

// setAttrs applies owner, mode, xattrs and (except for directories) times to
// base in directory fd, in the order that keeps them: chown clears setuid
// bits and file capabilities, so chmod and xattrs come after it.
func setAttrs(fd int, base string, hdr *tar.Header, symlink bool) error {
	if err := unix.Fchownat(fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if !symlink {
		if err := unix.Fchmodat(fd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		p := fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
		if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(fd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
