package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// Pack writes a unified image tarball of rootfs to w: gzip-compressed tar with
// metadata.yaml first, then rootfs/ and everything under it in lexical order.
//
// Entries keep their uid, gid, mode (setuid, setgid, sticky included), mtime
// (to the second), symlink targets, hard links (the first path in order
// carries the data, later ones link to it), character and block devices,
// fifos and extended attributes (as PAX SCHILY.xattr records). Sockets are
// skipped. User and group names are never written, so the output depends only
// on the tree and md: the same input gives the same bytes (for one version of
// the gzip encoder, klauspost/compress at its fastest level).
func Pack(ctx context.Context, rootfs string, md Metadata, w io.Writer) error {
	mdBytes, err := marshalMetadata(md)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return fmt.Errorf("pack %s: %w", rootfs, err)
	}
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     metadataName,
		Mode:     0o644,
		Size:     int64(len(mdBytes)),
		ModTime:  time.Unix(md.CreationDate, 0),
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("pack %s: metadata.yaml: %w", rootfs, err)
	}
	if _, err := tw.Write(mdBytes); err != nil {
		return fmt.Errorf("pack %s: metadata.yaml: %w", rootfs, err)
	}
	if err := PackTree(ctx, tw, rootfs, TreeOptions{Prefix: rootfsPrefix}); err != nil {
		return fmt.Errorf("pack %s: %w", rootfs, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", rootfs, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", rootfs, err)
	}
	return nil
}

// TreeOptions says where a tree sits in a tarball and how its owners
// translate (PackTree, NewExtractor).
type TreeOptions struct {
	// Prefix is the tar name of the tree's root directory, ending in "/"
	// ("rootfs/", "backup/container/").
	Prefix string
	// IDs maps an entry's owner on the way in or out (nil: unchanged), such
	// as a container's shifted host ids to the ids it sees.
	IDs func(uid, gid int) (int, int)
}

// PackTree writes the tree at root into tw under opts.Prefix with Pack's
// rules (entry order, what is kept, hard links within the tree). It does
// not close tw.
func PackTree(ctx context.Context, tw *tar.Writer, root string, opts TreeOptions) error {
	p := packer{ctx: ctx, root: root, tw: tw, links: map[fileID]string{}, buf: make([]byte, 1<<20), prefix: opts.Prefix, ids: opts.IDs}
	return filepath.WalkDir(root, p.add)
}

// fileID identifies an inode for hard link detection.
type fileID struct{ dev, ino uint64 }

// packer holds the state of one Pack walk.
type packer struct {
	ctx    context.Context
	root   string
	tw     *tar.Writer
	links  map[fileID]string // inode → first tar name, for nlink > 1
	buf    []byte
	prefix string
	ids    func(uid, gid int) (int, int)
}

// add writes one walked entry. WalkDir reads each directory sorted by name,
// so the order is deterministic.
func (p *packer) add(path string, _ fs.DirEntry, walkErr error) error {
	if walkErr != nil {
		return walkErr
	}
	if err := p.ctx.Err(); err != nil {
		return err
	}
	rel, err := filepath.Rel(p.root, path)
	if err != nil {
		return err
	}
	name := p.prefix
	if rel != "." {
		name += filepath.ToSlash(rel)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	if p.ids != nil {
		hdr.Uid, hdr.Gid = p.ids(hdr.Uid, hdr.Gid)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		if rel == "." {
			hdr.Name = p.prefix
		}
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
		if st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if first, ok := p.links[id]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				hdr.Size = 0
			} else {
				p.links[id] = name
			}
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default: // sockets cannot be archived
		logger().Debug("pack: skipping socket", "path", path)
		return nil
	}
	if err := p.xattrs(path, hdr); err != nil {
		return err
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(p.tw, io.LimitReader(f, hdr.Size), p.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: file shrank while packing (%d of %d bytes)", name, n, hdr.Size)
	}
	return nil
}

// xattrs copies path's extended attributes into hdr as PAX records.
func (p *packer) xattrs(path string, hdr *tar.Header) error {
	names, err := listXattrs(path)
	if err != nil || len(names) == 0 {
		return err
	}
	for _, n := range names {
		v, err := getXattr(path, n)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "lgetxattr " + n, Path: path, Err: err}
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+n] = string(v)
	}
	return nil
}

// paxXattr prefixes extended attribute records in PAX headers.
const paxXattr = "SCHILY.xattr."

// listXattrs returns the names of path's extended attributes, not following
// a final symlink. Filesystems without xattr support give none.
func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, buf)
		switch {
		case errors.Is(err, unix.ERANGE):
			buf = make([]byte, len(buf)*4)
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case err != nil:
			return nil, &fs.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// getXattr reads one extended attribute of path, not following a final
// symlink.
func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
