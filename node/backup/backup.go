package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shoal-dev/shoal/node/images"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

var (
	// ErrInvalid marks a tarball that is not a backup Shoal can import: no
	// index first, parts missing or out of order, a name leading outside
	// its tree, a truncated stream. The message names what is wrong.
	ErrInvalid = errors.New("invalid backup")
	// ErrUnsupported marks a backup or an export the pool cannot take: an
	// optimized stream of another driver, or one a driver cannot make.
	ErrUnsupported = errors.New("backup not supported here")
)

// Tar names of the parts.
const (
	IndexName     = "backup/index.yaml"
	containerTree = "backup/container/"
	containerBin  = "backup/container.bin"
	snapshotsDir  = "backup/snapshots/"
)

// Compression names.
const (
	Gzip = "gzip"
	None = "none"
)

// Index is backup/index.yaml (LXD's fields, and Shoal's idmap).
type Index struct {
	Name            string   `yaml:"name"`
	Backend         string   `yaml:"backend"`
	Pool            string   `yaml:"pool"`
	Optimized       bool     `yaml:"optimized"`
	OptimizedHeader bool     `yaml:"optimized_header"`
	Type            string   `yaml:"type"`
	Snapshots       []string `yaml:"snapshots,omitempty"`
	Config          Config   `yaml:"config"`
}

// Config holds the container's record.
type Config struct {
	// Container is the record (shoal.v1.Container) in its JSON form.
	Container map[string]any `yaml:"container,omitempty"`
	// IDMap is the host id range the files of an optimized backup of an
	// unprivileged container are owned by (a plain backup holds the ids
	// the container sees).
	IDMap *IDMap `yaml:"idmap,omitempty"`
}

// IDMap is a container's id range on the host that made the backup.
type IDMap struct {
	HostUID uint32 `yaml:"host_uid"`
	HostGID uint32 `yaml:"host_gid"`
	Size    uint32 `yaml:"size"`
}

// SetContainer stores ct as the index's record.
func (ix *Index) SetContainer(ct *shoalv1.Container) error {
	b, err := protojson.Marshal(ct)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	ix.Config.Container = m
	return nil
}

// Container returns the index's record.
func (ix *Index) Container() (*shoalv1.Container, error) {
	if ix.Config.Container == nil {
		return nil, fmt.Errorf("%w: index.yaml has no config.container", ErrInvalid)
	}
	b, err := json.Marshal(ix.Config.Container)
	if err != nil {
		return nil, fmt.Errorf("%w: index.yaml: config.container: %v", ErrInvalid, err)
	}
	ct := &shoalv1.Container{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, ct); err != nil {
		return nil, fmt.Errorf("%w: index.yaml: config.container: %v", ErrInvalid, err)
	}
	return ct, nil
}

// check validates what a reader relies on.
func (ix *Index) check() error {
	if ix.Name == "" {
		return fmt.Errorf("%w: index.yaml has no name", ErrInvalid)
	}
	if ix.Type != "" && ix.Type != "container" {
		return fmt.Errorf("%w: index.yaml: type %q (only containers)", ErrInvalid, ix.Type)
	}
	seen := map[string]bool{}
	for _, s := range ix.Snapshots {
		if err := storage.ValidateSnapshotName(s); err != nil {
			return fmt.Errorf("%w: index.yaml: snapshot %q: %v", ErrInvalid, s, err)
		}
		if seen[s] {
			return fmt.Errorf("%w: index.yaml: snapshot %q listed twice", ErrInvalid, s)
		}
		seen[s] = true
	}
	if ix.Optimized && ix.Backend == "" {
		return fmt.Errorf("%w: index.yaml: an optimized backup names no backend", ErrInvalid)
	}
	return nil
}

// Writer writes a backup tarball: Index first, then each snapshot oldest
// first (Tree or Stream), then the container, then Close.
type Writer struct {
	zw      io.WriteCloser // nil without compression
	tw      *tar.Writer
	indexed bool
	snapDir bool // backup/snapshots/ written
	mtime   time.Time
}

// NewWriter starts a tarball on w, compressed with gzip ("" or "gzip") or
// not ("none").
func NewWriter(w io.Writer, compression string) (*Writer, error) {
	out := &Writer{mtime: time.Now().Truncate(time.Second)}
	switch compression {
	case "", Gzip:
		zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		out.zw, out.tw = zw, tar.NewWriter(zw)
	case None:
		out.tw = tar.NewWriter(w)
	default:
		return nil, fmt.Errorf("%w: compression %q (gzip or none)", ErrUnsupported, compression)
	}
	return out, nil
}

// Index writes backup/index.yaml; it must come first.
func (w *Writer) Index(ix *Index) error {
	if err := ix.check(); err != nil {
		return err
	}
	b, err := yaml.Marshal(ix)
	if err != nil {
		return err
	}
	if err := w.dir("backup/"); err != nil {
		return err
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: IndexName, Mode: 0o644, Size: int64(len(b)), ModTime: w.mtime}); err != nil {
		return err
	}
	if _, err := w.tw.Write(b); err != nil {
		return err
	}
	w.indexed = true
	return nil
}

func (w *Writer) dir(name string) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: w.mtime})
}

// Tree writes the root filesystem at root as snapshot snap ("" for the
// container), its owners passed through ids (nil: unchanged).
func (w *Writer) Tree(ctx context.Context, snap, root string, ids func(uid, gid int) (int, int)) error {
	if !w.indexed {
		return errors.New("backup: the index goes first")
	}
	prefix := containerTree
	if snap != "" {
		prefix = snapshotsDir + snap + "/"
		if err := w.snapshotsDir(); err != nil {
			return err
		}
	}
	if err := images.PackTree(ctx, w.tw, root, images.TreeOptions{Prefix: prefix, IDs: ids}); err != nil {
		return fmt.Errorf("backup %s: %w", strings.TrimSuffix(prefix, "/"), err)
	}
	return nil
}

// snapshotsDir writes backup/snapshots/ once.
func (w *Writer) snapshotsDir() error {
	if w.snapDir {
		return nil
	}
	w.snapDir = true
	return w.dir(snapshotsDir)
}

// Stream writes an optimized stream of size bytes as snapshot snap ("" for
// the container).
func (w *Writer) Stream(snap string, size int64, r io.Reader) error {
	if !w.indexed {
		return errors.New("backup: the index goes first")
	}
	name := containerBin
	if snap != "" {
		name = snapshotsDir + snap + ".bin"
		if err := w.snapshotsDir(); err != nil {
			return err
		}
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: size, ModTime: w.mtime}); err != nil {
		return err
	}
	n, err := io.Copy(w.tw, r)
	if err != nil {
		return fmt.Errorf("backup %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("backup %s: %d bytes of %d", name, n, size)
	}
	return nil
}

// Close ends the tarball (it does not close the underlying writer).
func (w *Writer) Close() error {
	if err := w.tw.Close(); err != nil {
		return err
	}
	if w.zw != nil {
		return w.zw.Close()
	}
	return nil
}

// TreeSize sums the sizes of the regular files under root: the bytes of
// data a Tree of it carries.
func TreeSize(ctx context.Context, root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			total += st.Size
		}
		return nil
	})
	return total, err
}

// Part is one volume image in a tarball.
type Part struct {
	// Snapshot is the snapshot's name, "" for the container itself.
	Snapshot string
	// Optimized: a driver stream (Reader.Stream), else a tree (Extract).
	Optimized bool
	// Size is a stream's size in bytes.
	Size int64
}

// Reader reads a backup tarball from outside: NewReader reads the index,
// Next each part in order (the index's snapshots, then the container),
// Extract or Stream its content.
type Reader struct {
	tr      *tar.Reader
	zr      io.Closer
	cnt     *countReader
	ix      *Index
	pending *tar.Header // read ahead: the first entry of the next part
	last    struct {    // where the last entry's data ends, for the end check
		end int64
	}
	cur   *Part
	used  bool
	nsnap int  // snapshots seen
	done  bool // the container was seen
}

// countReader counts what the tar reader consumes.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// NewReader opens a tarball (gzip or plain) and reads its index, which
// must be its first file.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil {
		return nil, fmt.Errorf("%w: empty or truncated tarball (%v)", ErrInvalid, err)
	}
	var src io.Reader = br
	out := &Reader{}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		src, out.zr = zr, zr
	}
	out.cnt = &countReader{r: src}
	out.tr = tar.NewReader(out.cnt)
	for {
		h, err := out.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: no %s", ErrInvalid, IndexName)
			}
			return nil, err
		}
		if h.Typeflag == tar.TypeDir && clean(h.Name) == "backup" {
			continue
		}
		if clean(h.Name) != IndexName {
			return nil, fmt.Errorf("%w: the first file is %s, not %s", ErrInvalid, h.Name, IndexName)
		}
		b, err := io.ReadAll(io.LimitReader(out.tr, 4<<20))
		if err != nil {
			return nil, out.readErr(err)
		}
		ix := &Index{}
		if err := yaml.Unmarshal(b, ix); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, IndexName, err)
		}
		if err := ix.check(); err != nil {
			return nil, err
		}
		out.ix = ix
		return out, nil
	}
}

// Index is the tarball's index.
func (r *Reader) Index() *Index { return r.ix }

// Close releases the decompressor.
func (r *Reader) Close() error {
	if r.zr != nil {
		return r.zr.Close()
	}
	return nil
}

// next reads the next header, the read-ahead one first.
func (r *Reader) next() (*tar.Header, error) {
	if h := r.pending; h != nil {
		r.pending = nil
		return h, nil
	}
	h, err := r.tr.Next()
	if errors.Is(err, io.EOF) {
		// A tar ends with two zero blocks; a stream cut at an entry's
		// end lacks them.
		if r.cnt.n < r.last.end+1024 {
			return nil, fmt.Errorf("%w: truncated (the tarball ends without its end-of-archive blocks)", ErrInvalid)
		}
		// Read to the end, so that gzip checks its trailer.
		if _, err := io.Copy(io.Discard, r.cnt); err != nil {
			return nil, r.readErr(err)
		}
		return nil, io.EOF
	}
	if err != nil {
		return nil, r.readErr(err)
	}
	if strings.ContainsRune(h.Name, 0) {
		return nil, fmt.Errorf("%w: NUL in entry name", ErrInvalid)
	}
	r.last.end = r.cnt.n + (h.Size+511)/512*512
	return h, nil
}

// readErr words an error reading the stream.
func (r *Reader) readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated (%v)", ErrInvalid, err)
	}
	return fmt.Errorf("%w: read: %v", ErrInvalid, err)
}

// clean is a tar name without "./" and trailing slashes.
func clean(name string) string {
	name = strings.TrimPrefix(name, "./")
	return strings.TrimRight(name, "/")
}

// partOf says which part an entry belongs to.
func partOf(h *tar.Header) (p Part, ok bool) {
	name := clean(h.Name)
	switch {
	case name == containerBin:
		return Part{Optimized: true, Size: h.Size}, true
	case name == strings.TrimSuffix(containerTree, "/") || strings.HasPrefix(name, containerTree):
		return Part{}, true
	case strings.HasPrefix(name, snapshotsDir):
		rest := name[len(snapshotsDir):]
		if s, found := strings.CutSuffix(rest, ".bin"); found && !strings.Contains(s, "/") {
			return Part{Snapshot: s, Optimized: true, Size: h.Size}, true
		}
		s, _, _ := strings.Cut(rest, "/")
		return Part{Snapshot: s}, true
	}
	return Part{}, false
}

// Next moves to the next part (skipping what is left of the current one)
// and returns it; io.EOF after the container. Parts must come in the
// index's order, of the index's kind (optimized or not).
func (r *Reader) Next() (Part, error) {
	if r.cur != nil && !r.used {
		if err := r.skip(); err != nil {
			return Part{}, err
		}
	}
	r.cur, r.used = nil, false
	for {
		h, err := r.next()
		if errors.Is(err, io.EOF) {
			if r.nsnap < len(r.ix.Snapshots) {
				return Part{}, fmt.Errorf("%w: snapshot %s is missing", ErrInvalid, r.ix.Snapshots[r.nsnap])
			}
			if !r.done {
				return Part{}, fmt.Errorf("%w: backup/container is missing", ErrInvalid)
			}
			return Part{}, io.EOF
		}
		if err != nil {
			return Part{}, err
		}
		if h.Typeflag == tar.TypeDir && clean(h.Name) == strings.TrimSuffix(snapshotsDir, "/") {
			continue
		}
		p, ok := partOf(h)
		if !ok {
			return Part{}, fmt.Errorf("%w: unexpected entry %s", ErrInvalid, h.Name)
		}
		if r.done {
			return Part{}, fmt.Errorf("%w: %s after backup/container", ErrInvalid, h.Name)
		}
		if p.Optimized != r.ix.Optimized {
			return Part{}, fmt.Errorf("%w: %s in a backup whose index says optimized: %v", ErrInvalid, h.Name, r.ix.Optimized)
		}
		if p.Snapshot != "" {
			if r.nsnap >= len(r.ix.Snapshots) || r.ix.Snapshots[r.nsnap] != p.Snapshot {
				return Part{}, fmt.Errorf("%w: %s: snapshot %q is not the next one index.yaml lists", ErrInvalid, h.Name, p.Snapshot)
			}
			r.nsnap++
		} else {
			if r.nsnap < len(r.ix.Snapshots) {
				return Part{}, fmt.Errorf("%w: snapshot %s is missing", ErrInvalid, r.ix.Snapshots[r.nsnap])
			}
			r.done = true
		}
		r.pending = h
		r.cur = &p
		return p, nil
	}
}

// skip reads past the current part's entries.
func (r *Reader) skip() error {
	return r.entries(func(*tar.Header) error { return nil })
}

// entries calls f for each entry of the current part.
func (r *Reader) entries(f func(*tar.Header) error) error {
	want := *r.cur
	for {
		h, err := r.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p, ok := partOf(h)
		if !ok || p.Snapshot != want.Snapshot || p.Optimized != want.Optimized {
			r.pending = h
			return nil
		}
		r.used = true
		if err := f(h); err != nil {
			return err
		}
		if want.Optimized {
			return nil
		}
	}
}

// Extract writes the current part, a tree, into dst (an empty directory),
// its owners passed through ids (nil: unchanged).
func (r *Reader) Extract(ctx context.Context, dst string, ids func(uid, gid int) (int, int)) error {
	if r.cur == nil || r.cur.Optimized || r.used {
		return errors.New("backup: Extract needs a tree part not read yet")
	}
	prefix := containerTree
	if r.cur.Snapshot != "" {
		prefix = snapshotsDir + r.cur.Snapshot + "/"
	}
	ex, err := images.NewExtractor(dst, images.TreeOptions{Prefix: prefix, IDs: ids})
	if err != nil {
		return err
	}
	defer ex.Close()
	err = r.entries(func(h *tar.Header) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.Name = strings.TrimPrefix(h.Name, "./")
		data := &readTracker{r: r.tr}
		if err := ex.Add(h, data); err != nil {
			if data.err != nil {
				return r.readErr(data.err) // the stream broke, not the disk
			}
			if errors.Is(err, images.ErrInvalid) {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return r.readErr(err)
			}
			return err
		}
		return nil
	})
	r.used = true
	if err != nil {
		return err
	}
	return ex.Finish()
}

// Stream returns the current part's data, an optimized stream; reading
// past a truncated end fails with ErrInvalid.
func (r *Reader) Stream() (io.Reader, error) {
	if r.cur == nil || !r.cur.Optimized || r.used {
		return nil, errors.New("backup: Stream needs an optimized part not read yet")
	}
	var data io.Reader
	if err := r.entries(func(*tar.Header) error { data = r.tr; return nil }); err != nil {
		return nil, err
	}
	if data == nil {
		return nil, fmt.Errorf("%w: empty part", ErrInvalid)
	}
	return &streamReader{r: r, data: data}, nil
}

// streamReader words a truncation of an optimized part.
type streamReader struct {
	r    *Reader
	data io.Reader
}

func (s *streamReader) Read(p []byte) (int, error) {
	n, err := s.data.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = s.r.readErr(err)
	}
	return n, err
}

// readTracker keeps the first error reading an entry's data.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && t.err == nil {
		t.err = err
	}
	return n, err
}
