package dir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/fsutil"
	"github.com/shoal-dev/shoal/storage/internal/treetar"
)

// Config configures a dir driver.
type Config struct {
	// Path is the pool directory; it is created if missing. The driver owns
	// everything beneath it.
	Path string
}

// Driver is the plain-directory storage.Driver. It is safe for concurrent
// use on different volumes.
type Driver struct {
	root string
	mu   sync.Mutex // guards the .order files
}

var _ storage.Driver = (*Driver)(nil)

// orderFile is the per-volume file listing snapshot names in creation order.
// Snapshot names never start with ".", so it cannot clash with one.
const orderFile = ".order"

// New opens (creating if needed) the pool at cfg.Path.
func New(cfg Config) (*Driver, error) {
	if cfg.Path == "" {
		return nil, errors.New("dir: config has no path")
	}
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("dir: pool path: %w", err)
	}
	d := &Driver{root: root}
	for _, p := range []string{d.volumesDir(), d.snapshotsDir(), d.stagingDir()} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return nil, fmt.Errorf("dir: %w", err)
		}
	}
	// Whatever is in staging was left by an interrupted operation.
	ents, err := os.ReadDir(d.stagingDir())
	if err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d.stagingDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("dir: clean staging: %w", err)
		}
	}
	return d, nil
}

// Info says what the driver can do: full copies, tar streams, no quotas.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: "dir"}
}

// Close releases nothing: the driver holds no resources between calls.
func (d *Driver) Close() error { return nil }

func (d *Driver) volumesDir() string   { return filepath.Join(d.root, "volumes") }
func (d *Driver) snapshotsDir() string { return filepath.Join(d.root, "snapshots") }
func (d *Driver) stagingDir() string   { return filepath.Join(d.root, ".staging") }

func (d *Driver) snapDir(vol string) string {
	return filepath.Join(d.snapshotsDir(), storage.EncodeVolumeName(vol))
}

// Path is the host path of the volume's root directory.
func (d *Driver) Path(vol string) string {
	if storage.ValidateVolumeName(vol) != nil {
		return ""
	}
	return filepath.Join(d.volumesDir(), storage.EncodeVolumeName(vol))
}

// SnapshotPath is the host path of the snapshot's root directory.
func (d *Driver) SnapshotPath(vol, snap string) string {
	if storage.ValidateVolumeName(vol) != nil || storage.ValidateSnapshotName(snap) != nil {
		return ""
	}
	return filepath.Join(d.snapDir(vol), snap)
}

func isDir(p string) (bool, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

// check validates a name whose path is p and wraps ErrNotFound when
// mustExist and p is missing, ErrExists when !mustExist and p is there.
func check(what, p string, mustExist bool) error {
	ok, err := isDir(p)
	switch {
	case err != nil:
		return err
	case mustExist && !ok:
		return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
	case !mustExist && ok:
		return fmt.Errorf("%s: %w", what, storage.ErrExists)
	}
	return nil
}

func (d *Driver) volume(vol string, mustExist bool) (string, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return "", err
	}
	p := d.Path(vol)
	return p, check("volume "+vol, p, mustExist)
}

func (d *Driver) snapshot(vol, snap string, mustExist bool) (string, error) {
	if _, err := d.volume(vol, true); err != nil {
		return "", err
	}
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return "", err
	}
	p := d.SnapshotPath(vol, snap)
	return p, check("snapshot "+vol+"/"+snap, p, mustExist)
}

// tempPath returns a fresh name in the staging directory.
func (d *Driver) tempPath(kind string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(d.stagingDir(), kind+"-"+hex.EncodeToString(b[:]))
}

// copyInto copies the tree src to dst (which must not exist) through a
// staging copy, so dst appears complete or not at all.
func (d *Driver) copyInto(ctx context.Context, src, dst string) error {
	tmp := d.tempPath("copy")
	if err := fsutil.CopyTree(ctx, src, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return nil
}

// CreateVolume creates an empty directory.
func (d *Driver) CreateVolume(ctx context.Context, vol string) error {
	p, err := d.volume(vol, false)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%w: %w", err, storage.ErrExists)
		}
		return fmt.Errorf("create volume %s: %w", vol, err)
	}
	return nil
}

// CloneVolume makes dst a full copy of src.
func (d *Driver) CloneVolume(ctx context.Context, src, dst string) error {
	sp, err := d.volume(src, true)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	dp, err := d.volume(dst, false)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	if err := d.copyInto(ctx, sp, dp); err != nil {
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return nil
}

// CloneSnapshot makes dst a full copy of vol's snapshot snap.
func (d *Driver) CloneSnapshot(ctx context.Context, vol, snap, dst string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	dp, err := d.volume(dst, false)
	if err != nil {
		return fmt.Errorf("clone snapshot %s/%s: %w", vol, snap, err)
	}
	if err := d.copyInto(ctx, sp, dp); err != nil {
		return fmt.Errorf("clone snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	return nil
}

// removeTree moves p into staging (so it vanishes at once) and removes it.
func (d *Driver) removeTree(p string) error {
	trash := d.tempPath("trash")
	if err := os.Rename(p, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(trash)
}

// DeleteVolume deletes the volume's snapshots, then the volume.
func (d *Driver) DeleteVolume(ctx context.Context, vol string) error {
	p, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	d.mu.Lock()
	err = d.removeTree(d.snapDir(vol))
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("delete volume %s: snapshots: %w", vol, err)
	}
	if err := d.removeTree(p); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	return nil
}

// RenameVolume moves the volume and its snapshots to the name dst.
func (d *Driver) RenameVolume(ctx context.Context, vol, dst string) error {
	p, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("rename volume: %w", err)
	}
	dp, err := d.volume(dst, false)
	if err != nil {
		return fmt.Errorf("rename volume %s: %w", vol, err)
	}
	d.mu.Lock()
	err = fsutil.RenameVolume(p, dp, d.snapDir(vol), d.snapDir(dst))
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	return nil
}

// VolumeExists reports whether the volume exists.
func (d *Driver) VolumeExists(ctx context.Context, vol string) (bool, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return false, fmt.Errorf("volume exists: %w", err)
	}
	ok, err := isDir(d.Path(vol))
	if err != nil {
		return false, fmt.Errorf("volume exists %s: %w", vol, err)
	}
	return ok, nil
}

// ListVolumes lists the volumes whose names start with prefix, sorted.
func (d *Driver) ListVolumes(ctx context.Context, prefix string) ([]string, error) {
	ents, err := os.ReadDir(d.volumesDir())
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := []string{}
	for _, e := range ents {
		vol, ok := storage.DecodeVolumeName(e.Name())
		if ok && e.IsDir() && strings.HasPrefix(vol, prefix) {
			out = append(out, vol)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Usage is the allocated size of the volume's tree.
func (d *Driver) Usage(ctx context.Context, vol string) (int64, error) {
	p, err := d.volume(vol, true)
	if err != nil {
		return 0, fmt.Errorf("usage: %w", err)
	}
	n, err := fsutil.DiskUsage(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("usage %s: %w", vol, err)
	}
	return n, nil
}

// SetQuota always fails with ErrNotSupported: plain directories have no quotas.
func (d *Driver) SetQuota(ctx context.Context, vol string, bytes int64) error {
	return fmt.Errorf("set quota %s: dir driver: %w", vol, storage.ErrNotSupported)
}

// CreateSnapshot makes a full copy of the volume.
func (d *Driver) CreateSnapshot(ctx context.Context, vol, snap string) error {
	vp, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	if _, err := d.snapshot(vol, snap, false); err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	tmp := d.tempPath("snapshot")
	if err := fsutil.CopyTree(ctx, vp, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, err)
	}
	if err := d.placeSnapshot(vol, snap, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// placeSnapshot renames the finished tree tmp to the snapshot's path and
// records it as the newest snapshot.
func (d *Driver) placeSnapshot(vol, snap, tmp string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.snapDir(vol)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	sp := filepath.Join(dir, snap)
	if ok, err := isDir(sp); err != nil {
		return err
	} else if ok {
		return storage.ErrExists
	}
	order, err := readOrder(dir)
	if err != nil {
		return err
	}
	order = append(slices.DeleteFunc(order, func(s string) bool { return s == snap }), snap)
	if err := writeOrder(dir, order); err != nil {
		return err
	}
	return os.Rename(tmp, sp)
}

// RenameSnapshot renames a snapshot's tree and its entry in the order.
func (d *Driver) RenameSnapshot(ctx context.Context, vol, snap, dst string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	dp, err := d.snapshot(vol, dst, false)
	if err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	order, err := readOrder(d.snapDir(vol))
	if err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	if err := os.Rename(sp, dp); err != nil {
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	for i, s := range order {
		if s == snap {
			order[i] = dst
		}
	}
	if err := writeOrder(d.snapDir(vol), order); err != nil {
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	return nil
}

// DeleteSnapshot deletes one snapshot.
func (d *Driver) DeleteSnapshot(ctx context.Context, vol, snap string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.removeTree(sp); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	order, err := readOrder(d.snapDir(vol))
	if err == nil {
		err = writeOrder(d.snapDir(vol), slices.DeleteFunc(order, func(s string) bool { return s == snap }))
	}
	if err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// ListSnapshots lists the volume's snapshots in creation order.
func (d *Driver) ListSnapshots(ctx context.Context, vol string) ([]string, error) {
	if _, err := d.volume(vol, true); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.snapDir(vol)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots %s: %w", vol, err)
	}
	order, err := readOrder(dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots %s: %w", vol, err)
	}
	rank := map[string]int{}
	for i, s := range order {
		rank[s] = i
	}
	out := []string{}
	for _, e := range ents {
		if e.IsDir() && storage.ValidateSnapshotName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, iok := rank[out[i]]
		rj, jok := rank[out[j]]
		if iok != jok {
			return iok // recorded ones first
		}
		if iok {
			return ri < rj
		}
		return out[i] < out[j]
	})
	return out, nil
}

func readOrder(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, orderFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func writeOrder(dir string, order []string) error {
	tmp := filepath.Join(dir, orderFile+".tmp")
	data := strings.Join(order, "\n") + "\n"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, orderFile))
}

// RestoreSnapshot replaces the volume's content with a copy of the
// snapshot, keeping the volume's path.
func (d *Driver) RestoreSnapshot(ctx context.Context, vol, snap string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if err := d.replaceVolume(ctx, d.Path(vol), sp); err != nil {
		return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// replaceVolume makes vp a copy of sp: the copy is made in staging, then
// swapped in by rename, so vp never holds partial content.
func (d *Driver) replaceVolume(ctx context.Context, vp, sp string) error {
	tmp := d.tempPath("restore")
	if err := fsutil.CopyTree(ctx, sp, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	old := d.tempPath("old")
	if err := os.Rename(vp, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, vp); err != nil {
		_ = os.Rename(old, vp)
		_ = os.RemoveAll(tmp)
		return err
	}
	return os.RemoveAll(old)
}

// Send writes the snapshot as a tar stream. parent, if set, must exist but
// is otherwise ignored: the dir driver always sends the full content.
func (d *Driver) Send(ctx context.Context, vol, snap, parent string, w io.Writer) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if parent != "" {
		if _, err := d.snapshot(vol, parent, true); err != nil {
			return fmt.Errorf("send %s/%s: parent: %w", vol, snap, err)
		}
	}
	if err := treetar.Write(ctx, sp, w); err != nil {
		return fmt.Errorf("send %s/%s: %w", vol, snap, err)
	}
	return nil
}

// Receive extracts a tar stream from Send into snapshot snap of vol, then
// makes the volume a copy of it (creating or replacing the volume).
func (d *Driver) Receive(ctx context.Context, vol, snap string, r io.Reader) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if err := check("snapshot "+vol+"/"+snap, d.SnapshotPath(vol, snap), false); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	tmp := d.tempPath("receive")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := treetar.Read(ctx, r, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := d.placeSnapshot(vol, snap, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := d.replaceVolume(ctx, d.Path(vol), d.SnapshotPath(vol, snap)); err != nil {
		return fmt.Errorf("receive %s/%s: volume: %w", vol, snap, err)
	}
	return nil
}
