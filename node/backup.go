package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/revert"
	"github.com/shoal-dev/shoal/node/backup"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Backups (node/backup holds the format): the host side of export and
// import. An export reads snapshots: the container's own, and for its
// current content a temporary read-only one taken at the start (unless it
// is stopped on a pool without copy-on-write, where the volume is read as
// it is). An import builds the volume under the lock of the container's
// name and records it through the caller before it lets go, so a failure
// at any point leaves neither volume nor record.

// BackupOptions says what an export writes.
type BackupOptions struct {
	// InstanceOnly leaves the snapshots out.
	InstanceOnly bool
	// Optimized writes the driver's streams (btrfs send) instead of trees.
	Optimized bool
	// Compression is backup.Gzip (or "") or backup.None.
	Compression string
}

// ExportBackup writes a backup tarball of ct to w. start is called once,
// before any data, with the index and the bytes of data the tarball will
// carry before compression.
func (n *Node) ExportBackup(ctx context.Context, ct *shoalv1.Container, opts BackupOptions, w io.Writer, start func(ix *backup.Index, size int64) error) error {
	name := ct.GetName()
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	info := d.Info()
	if opts.Optimized && !info.OptimizedSend {
		return fmt.Errorf("export %s: %w: pool %s uses the %s driver, which has no optimized format; export without --optimized-storage", name, backup.ErrUnsupported, ct.GetPool(), info.Name)
	}
	bw, err := backup.NewWriter(w, opts.Compression)
	if err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	vol := volumeName(name)
	var snaps []string
	if !opts.InstanceOnly {
		have, err := d.ListSnapshots(ctx, vol)
		if err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		for _, s := range ct.GetSnapshots() {
			if !slices.Contains(have, s.GetName()) {
				return fmt.Errorf("export %s: snapshot %s is recorded but not on this host: %w", name, s.GetName(), storage.ErrNotFound)
			}
			snaps = append(snaps, s.GetName())
		}
	}
	// The content now: a read-only snapshot of this instant.
	st, err := n.rt.State(ctx, name)
	stopped := err == nil && st.Status == runtime.StatusStopped
	current := d.Path(vol)
	tmp := ""
	if opts.Optimized || info.CoWClone || !stopped {
		tmp = fmt.Sprintf("backup-%d", time.Now().UnixNano())
		if err := d.CreateSnapshot(ctx, vol, tmp); err != nil {
			return fmt.Errorf("export %s: snapshot: %w", name, err)
		}
		defer func() {
			if err := d.DeleteSnapshot(context.WithoutCancel(ctx), vol, tmp); err != nil {
				n.log.Warn("delete the snapshot of an export", "container", name, "snapshot", tmp, "err", err)
			}
		}()
		current = d.SnapshotPath(vol, tmp)
	}
	privileged := config.Bool(cluster.ExpandedConfig(ct), "security.privileged")
	ix := &backup.Index{Name: name, Backend: info.Name, Pool: ct.GetPool(), Optimized: opts.Optimized, Type: "container", Snapshots: snaps}
	rec := proto.Clone(ct).(*shoalv1.Container)
	rec.Snapshots = nil
	for _, s := range ct.GetSnapshots() {
		if slices.Contains(snaps, s.GetName()) {
			rec.Snapshots = append(rec.Snapshots, s)
		}
	}
	if err := ix.SetContainer(rec); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	if opts.Optimized {
		return n.exportStreams(ctx, d, vol, snaps, tmp, ix, privileged, bw, start)
	}
	// Trees hold the ids the container sees.
	var ids func(uid, gid int) (int, int)
	if !privileged && !n.idmap.IsZero() {
		ids = func(uid, gid int) (int, int) {
			u, g := n.idmap.ToContainer(uint32(uid), uint32(gid))
			return int(u), int(g)
		}
	}
	roots := make([]string, 0, len(snaps)+1)
	for _, s := range snaps {
		roots = append(roots, d.SnapshotPath(vol, s))
	}
	roots = append(roots, current)
	var size int64
	for _, r := range roots {
		b, err := backup.TreeSize(ctx, r)
		if err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		size += b
	}
	if err := start(ix, size); err != nil {
		return err
	}
	if err := bw.Index(ix); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	for i, r := range roots {
		snap := ""
		if i < len(snaps) {
			snap = snaps[i]
		}
		if err := bw.Tree(ctx, snap, r, ids); err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	return nil
}

// exportStreams writes an optimized backup: each snapshot sent on the one
// before, then the temporary snapshot on the last. The streams go to
// files under STATE/tmp first (a tar entry needs its size up front).
func (n *Node) exportStreams(ctx context.Context, d storage.Driver, vol string, snaps []string, tmp string, ix *backup.Index,
	privileged bool, bw *backup.Writer, start func(*backup.Index, int64) error) error {
	name := ix.Name
	if !privileged && !n.idmap.IsZero() {
		ix.Config.IDMap = &backup.IDMap{HostUID: n.idmap.HostUID, HostGID: n.idmap.HostGID, Size: n.idmap.Size}
	}
	dir, err := os.MkdirTemp(filepath.Join(n.cfg.StateDir, "tmp"), "export-")
	if err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	defer os.RemoveAll(dir)
	order := append(append([]string{}, snaps...), tmp)
	files := make([]string, len(order))
	var size int64
	parent := ""
	for i, s := range order {
		files[i] = filepath.Join(dir, fmt.Sprintf("%d.bin", i))
		f, err := os.OpenFile(files[i], os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		err = d.Send(ctx, vol, s, parent, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("export %s: send %s: %w", name, s, err)
		}
		fi, err := os.Stat(files[i])
		if err != nil {
			return err
		}
		size += fi.Size()
		parent = s
	}
	if err := start(ix, size); err != nil {
		return err
	}
	if err := bw.Index(ix); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	for i, p := range files {
		snap := ""
		if i < len(snaps) {
			snap = snaps[i]
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err == nil {
			err = bw.Stream(snap, fi.Size(), f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	return nil
}

// ImportTarget is where an import goes, decided by the caller once it has
// read the backup's index.
type ImportTarget struct {
	// Name and Pool of the new container.
	Name, Pool string
	// Privileged: the volume keeps the ids as they are (else they are
	// shifted into this member's id map).
	Privileged bool
	// Commit records the container. It runs once the volume and its
	// snapshots are complete, under the name's lock; if it fails the
	// volume is deleted.
	Commit func(ctx context.Context) error
}

// ImportBackup reads a backup tarball from r, asks plan where it goes,
// builds the volume with its snapshots and calls the plan's Commit. On any
// failure nothing stays behind. Errors about the tarball wrap
// backup.ErrInvalid; an optimized backup of another driver, or of another
// id map for an unprivileged container, backup.ErrUnsupported.
func (n *Node) ImportBackup(ctx context.Context, r io.Reader, plan func(*backup.Index) (ImportTarget, error)) error {
	br, err := backup.NewReader(r)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer br.Close()
	ix := br.Index()
	t, err := plan(ix)
	if err != nil {
		return err
	}
	d, err := n.pool(t.Pool)
	if err != nil {
		return err
	}
	if ix.Optimized {
		if got := d.Info().Name; got != ix.Backend {
			return fmt.Errorf("import %s: %w: the backup holds optimized %s streams; pool %s uses the %s driver (import it into a %s pool, or export without --optimized-storage)",
				t.Name, backup.ErrUnsupported, ix.Backend, t.Pool, got, ix.Backend)
		}
		if !t.Privileged && !n.idmap.IsZero() {
			m := ix.Config.IDMap
			if m == nil || m.HostUID != n.idmap.HostUID || m.HostGID != n.idmap.HostGID || m.Size != n.idmap.Size {
				return fmt.Errorf("import %s: %w: the optimized backup's files are owned by another id range (%v) than this member maps (%s); use a plain backup",
					t.Name, backup.ErrUnsupported, m, n.idmap)
			}
		}
	}
	unlock := n.locks.lock("ct/" + t.Name)
	defer unlock()
	if _, err := n.fsm.Container(t.Name); err == nil {
		return fmt.Errorf("import %s: container %q: %w", t.Name, t.Name, cluster.ErrExists)
	} else if !errors.Is(err, cluster.ErrNotFound) {
		return err
	}
	if err := n.removeLocal(ctx, t.Name); err != nil { // leftovers of an interrupted operation
		return err
	}
	vol := volumeName(t.Name)
	rv := revert.New()
	defer rv.Fail()
	rv.Add(func() {
		if err := d.DeleteVolume(context.WithoutCancel(ctx), vol); err != nil && !errors.Is(err, storage.ErrNotFound) {
			n.log.Warn("delete the volume of a failed import", "container", t.Name, "err", err)
		}
	})
	if ix.Optimized {
		err = n.importStreams(ctx, d, vol, br)
	} else {
		err = n.importTrees(ctx, d, vol, br, t.Privileged)
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", t.Name, err)
	}
	if err := t.Commit(ctx); err != nil {
		return err
	}
	rv.Success()
	n.bus.Lifecycle(n.cfg.Name, "container-imported", t.Name)
	return nil
}

// importTrees extracts each tree into the volume, snapshotting it after
// each snapshot's tree and emptying it before the next.
func (n *Node) importTrees(ctx context.Context, d storage.Driver, vol string, br *backup.Reader, privileged bool) error {
	if err := d.CreateVolume(ctx, vol); err != nil {
		return err
	}
	var ids func(uid, gid int) (int, int)
	if !privileged && !n.idmap.IsZero() {
		ids = func(uid, gid int) (int, int) {
			u, g := n.idmap.ToHost(uint32(uid), uint32(gid))
			return int(u), int(g)
		}
	}
	root := d.Path(vol)
	first := true
	for {
		p, err := br.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !first {
			if err := emptyDir(root); err != nil {
				return err
			}
		}
		first = false
		if err := br.Extract(ctx, root, ids); err != nil {
			return err
		}
		if p.Snapshot != "" {
			if err := d.CreateSnapshot(ctx, vol, p.Snapshot); err != nil {
				return err
			}
		}
	}
}

// importStreams receives each stream into the volume; the container's
// own arrives as a temporary snapshot, deleted after.
func (n *Node) importStreams(ctx context.Context, d storage.Driver, vol string, br *backup.Reader) error {
	for {
		p, err := br.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		sr, err := br.Stream()
		if err != nil {
			return err
		}
		snap := p.Snapshot
		if snap == "" {
			snap = fmt.Sprintf("import-%d", time.Now().UnixNano())
		}
		er := &errReader{r: sr}
		if err := d.Receive(ctx, vol, snap, er); err != nil {
			if errors.Is(er.err, backup.ErrInvalid) {
				return er.err // the receiver saw the stream end early
			}
			return fmt.Errorf("receive %s: %w", snap, err)
		}
		if p.Snapshot == "" {
			if err := d.DeleteSnapshot(ctx, vol, snap); err != nil {
				return err
			}
		}
	}
}

// emptyDir removes everything inside dir, keeping dir.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// errReader keeps the first read error (a receiving command reports only
// that it failed).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}
