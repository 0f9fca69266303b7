package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// OCI whiteouts: a ".wh.NAME" entry deletes NAME of the layers below; a
// ".wh..wh..opq" entry in a directory hides everything the layers below
// put in it.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// layerApplier applies layers, in order, into one root directory with
// Unpack's safety: every path is resolved beneath the root (no absolute
// names, no "..", no symlink leading out), sparse entries are refused.
type layerApplier struct {
	u *unpacker
	// created holds what the current layer made (and their parents):
	// whiteouts and opaque directories hide only what lower layers made.
	created map[string]bool
}

// newLayerApplier opens dst, an existing empty directory.
func newLayerApplier(dst string) (*layerApplier, error) {
	root, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dst, err)
	}
	return &layerApplier{u: &unpacker{root: root, parentFD: -1, buf: make([]byte, 1<<20), markImplied: true}}, nil
}

// close releases the applier's descriptors.
func (l *layerApplier) close() { l.u.close() }

// apply reads one layer tar stream (uncompressed) and applies it.
func (l *layerApplier) apply(ctx context.Context, r io.Reader) error {
	l.created = map[string]bool{}
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: read layer tar: %v", ErrInvalid, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if err := refuseSparse(hdr); err != nil {
			return err
		}
		if err := l.entry(tr, name, hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

// entry applies one layer entry.
func (l *layerApplier) entry(r io.Reader, name string, hdr *tar.Header) error {
	if name == "" { // the layer's root: "./"
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: the root is not a directory", ErrInvalid)
		}
		return l.u.attrs(l.u.root, hdr, true)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case base == whiteoutOpaque:
		return l.opaque(dir)
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(dir, base[len(whiteoutPrefix):])
		if base == whiteoutPrefix || target == "" || strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix) {
			return fmt.Errorf("%w: bad whiteout name", ErrInvalid)
		}
		if l.created[target] {
			return nil // made by this layer: a whiteout hides lower layers only
		}
		return l.remove(target)
	}
	if hdr.Typeflag != tar.TypeDir {
		// A file replaces a directory of a lower layer, contents and all
		// (unpacker.entry only replaces non-directories and empty ones).
		if isDir, err := l.isDir(name); err != nil {
			return err
		} else if isDir {
			if err := l.remove(name); err != nil {
				return err
			}
		}
	}
	if err := l.u.entry(r, name, hdr); err != nil {
		return err
	}
	for p := name; p != "." && p != ""; p = path.Dir(p) {
		l.created[p] = true
	}
	return nil
}

// isDir reports whether rel (beneath the root) is a directory, not
// following a final symlink.
func (l *layerApplier) isDir(rel string) (bool, error) {
	dir, base := path.Split(rel)
	pfd, err := l.u.openBeneath(strings.TrimSuffix(dir, "/"))
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closeUnlessRoot(l.u, pfd)
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// opaque removes what lower layers put in dir ("" for the root).
func (l *layerApplier) opaque(dir string) error {
	fd, err := l.u.openBeneath(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := readNames(fd)
	closeUnlessRoot(l.u, fd)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, n := range names {
		child := path.Join(dir, n)
		if l.created[child] {
			continue
		}
		if err := l.remove(child); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes rel and everything under it, never following a symlink.
// A missing rel is not an error.
func (l *layerApplier) remove(rel string) error {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if l.u.parentPath == rel || strings.HasPrefix(l.u.parentPath, rel+"/") {
		l.u.dropParent()
	}
	pfd, err := l.u.openBeneath(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closeUnlessRoot(l.u, pfd)
	if err := removeAt(pfd, base); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	// Its directories' mtimes are no longer to be set.
	kept := l.u.dirs[:0]
	for _, d := range l.u.dirs {
		if d.rel != rel && !strings.HasPrefix(d.rel, rel+"/") {
			kept = append(kept, d)
		}
	}
	l.u.dirs = kept
	return nil
}

// closeUnlessRoot closes fd unless it is the unpacker's root.
func closeUnlessRoot(u *unpacker, fd int) {
	if fd != u.root {
		unix.Close(fd)
	}
}

// removeAt removes name in the directory pfd, recursively, without
// following symlinks.
func removeAt(pfd int, name string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(pfd, name, 0)
	}
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

// readNames lists a directory opened as fd (fd stays open).
func readNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

// finish sets the directories' mtimes (a directory several layers name
// gets the uppermost's; the root, and parents no layer names, rootMtime),
// so the same archive always packs into the same image.
func (l *layerApplier) finish(rootMtime time.Time) error {
	t := unix.NsecToTimespec(rootMtime.UnixNano())
	for i := range l.u.dirs {
		if l.u.dirs[i].implied {
			l.u.dirs[i].mtime = t
		}
	}
	l.u.dirs = append([]dirTime{{rel: ".", mtime: t}}, l.u.dirs...)
	seen := map[string]bool{}
	var dirs []dirTime
	for i := len(l.u.dirs) - 1; i >= 0; i-- {
		if d := l.u.dirs[i]; !seen[d.rel] {
			seen[d.rel] = true
			dirs = append(dirs, d)
		}
	}
	// finishDirs walks from the end: deepest (latest) first. Restore the
	// archive order.
	for i, j := 0, len(dirs)-1; i < j; i, j = i+1, j-1 {
		dirs[i], dirs[j] = dirs[j], dirs[i]
	}
	l.u.dirs = dirs
	return l.u.finishDirs()
}

// layerReader returns the uncompressed tar stream of a layer blob, checking
// as it is read the blob's digest and size and the tar's diff_id. verify
// must be called once the tar has been read: it drains the rest and
// compares. The caller calls done in every case.
func layerReader(blob io.Reader, layer ociLayer) (out io.Reader, verify func() error, done func(), err error) {
	var blobHash hash.Hash
	var counted countingWriter
	src := blob
	if layer.digest != "" {
		blobHash = sha256.New()
		src = io.TeeReader(blob, io.MultiWriter(blobHash, &counted))
	}
	var plain io.Reader
	var closeFn func()
	switch layer.compression {
	case "none":
		// Producers mislabel: a gzip or zstd stream under a plain media
		// type is read as what it is.
		zr, closer, err := decompressor(src)
		if err != nil {
			return nil, nil, nil, err
		}
		plain, closeFn = zr, func() { closer.Close() }
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: layer %s is not gzip (%s): %v", ErrInvalid, layer.digest, layer.mediaType, err)
		}
		plain, closeFn = zr, func() { zr.Close() }
	case "zstd":
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: layer %s is not zstd (%s): %v", ErrInvalid, layer.digest, layer.mediaType, err)
		}
		plain, closeFn = zr, zr.Close
	default:
		return nil, nil, nil, fmt.Errorf("%w: layer compression %q", ErrInvalid, layer.compression)
	}
	diffHash := sha256.New()
	out = io.TeeReader(plain, diffHash)
	verify = func() error {
		if _, err := io.Copy(io.Discard, out); err != nil {
			return fmt.Errorf("%w: layer %s: %v", ErrInvalid, cmpOr(layer.digest, layer.name), err)
		}
		if blobHash != nil {
			if _, err := io.Copy(io.Discard, src); err != nil {
				return fmt.Errorf("read layer %s: %w", layer.digest, err)
			}
			var sum [sha256.Size]byte
			copy(sum[:], blobHash.Sum(nil))
			if err := checkDigest(layer.digest, layer.size, sum, counted.n); err != nil {
				return err
			}
		}
		var sum [sha256.Size]byte
		copy(sum[:], diffHash.Sum(nil))
		if err := checkDigest(layer.diffID, -1, sum, 0); err != nil {
			return fmt.Errorf("%w: layer %s: its uncompressed content does not match the config's diff_id %s", ErrInvalid, cmpOr(layer.digest, layer.name), layer.diffID)
		}
		return nil
	}
	return out, verify, closeFn, nil
}

// countingWriter counts bytes written.
type countingWriter struct{ n int64 }

// Write counts p.
func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// cmpOr returns a unless it is empty, else b.
func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
