package btrfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// Config configures a btrfs driver.
type Config struct {
	// Path is the pool directory, on an existing btrfs filesystem. The driver
	// owns everything beneath it.
	Path string
	// DisableQuotas leaves btrfs quotas alone: Info().Quotas is false and
	// SetQuota fails with ErrNotSupported. Qgroup accounting makes snapshot
	// creation and deletion roughly twice as slow.
	DisableQuotas bool
}

// Driver is the btrfs storage.Driver. It is safe for concurrent use on
// different volumes.
type Driver struct {
	root   string
	quotas bool
}

var _ storage.Driver = (*Driver)(nil)

// New opens the pool at cfg.Path, which must be on btrfs, creating the
// pool's directories and enabling quotas (`btrfs quota enable`) unless
// cfg.DisableQuotas; Info().Quotas says whether enabling worked.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Path == "" {
		return nil, errors.New("btrfs: config has no path")
	}
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("btrfs: pool path: %w", err)
	}
	ok, err := isBtrfs(root)
	if err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("btrfs: %s is not on a btrfs filesystem: %w", root, storage.ErrNotSupported)
	}
	d := &Driver{root: root}
	for _, dir := range []string{d.volumesDir(), d.snapshotsDir(), d.stagingDir()} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("btrfs: %w", err)
		}
	}
	if err := d.cleanStaging(ctx); err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	if !cfg.DisableQuotas {
		d.quotas = btrfsCmd(ctx, "quota", "enable", root) == nil
	}
	return d, nil
}

// Info says what the driver can do.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: "btrfs", CoWClone: true, OptimizedSend: true, Quotas: d.quotas}
}

// Close releases nothing: the driver holds no resources between calls.
func (d *Driver) Close() error { return nil }

func (d *Driver) volumesDir() string   { return filepath.Join(d.root, "volumes") }
func (d *Driver) snapshotsDir() string { return filepath.Join(d.root, "snapshots") }
func (d *Driver) stagingDir() string   { return filepath.Join(d.root, ".staging") }

// Path is the host path of the volume's root directory.
func (d *Driver) Path(vol string) string {
	if storage.ValidateVolumeName(vol) != nil {
		return ""
	}
	return filepath.Join(d.volumesDir(), storage.EncodeVolumeName(vol))
}

// snapDir holds the volume's snapshots.
func (d *Driver) snapDir(vol string) string {
	return filepath.Join(d.snapshotsDir(), storage.EncodeVolumeName(vol))
}

// snapSubvol is the name of a snapshot's subvolume inside its directory
// <pool>/snapshots/<enc>/<snap>. The extra directory exists because btrfs
// cannot move a read-only subvolume to another directory (that would
// rewrite its ".."), so Receive receives into a fresh directory that
// becomes the snapshot's by a rename of the directory.
const snapSubvol = "subvol"

// recvPrefix starts the names of in-progress receive directories in a
// volume's snapshot directory; snapshot names never start with ".".
const recvPrefix = ".recv-"

// SnapshotPath is the host path of the snapshot's root directory.
func (d *Driver) SnapshotPath(vol, snap string) string {
	if storage.ValidateVolumeName(vol) != nil || storage.ValidateSnapshotName(snap) != nil {
		return ""
	}
	return filepath.Join(d.snapDir(vol), snap, snapSubvol)
}

// volume validates vol and returns its path; it wraps ErrNotFound when
// mustExist and the volume is missing, ErrExists when !mustExist and it is there.
func (d *Driver) volume(vol string, mustExist bool) (string, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return "", err
	}
	p := d.Path(vol)
	ok, err := isSubvolume(p)
	switch {
	case err != nil:
		return "", err
	case mustExist && !ok:
		return "", fmt.Errorf("volume %s: %w", vol, storage.ErrNotFound)
	case !mustExist && ok:
		return "", fmt.Errorf("volume %s: %w", vol, storage.ErrExists)
	}
	return p, nil
}

// snapshot validates the names and returns the snapshot's path, wrapping
// ErrNotFound/ErrExists like volume. The volume must exist.
func (d *Driver) snapshot(vol, snap string, mustExist bool) (string, error) {
	if _, err := d.volume(vol, true); err != nil {
		return "", err
	}
	return d.snapshotOnly(vol, snap, mustExist)
}

// snapshotOnly is snapshot without requiring the volume.
func (d *Driver) snapshotOnly(vol, snap string, mustExist bool) (string, error) {
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return "", err
	}
	p := d.SnapshotPath(vol, snap)
	ok, err := isSubvolume(p)
	switch {
	case err != nil:
		return "", err
	case mustExist && !ok:
		return "", fmt.Errorf("snapshot %s/%s: %w", vol, snap, storage.ErrNotFound)
	case !mustExist && ok:
		return "", fmt.Errorf("snapshot %s/%s: %w", vol, snap, storage.ErrExists)
	}
	return p, nil
}

// CreateVolume creates an empty subvolume.
func (d *Driver) CreateVolume(ctx context.Context, vol string) error {
	p, err := d.volume(vol, false)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	if err := btrfsCmd(ctx, "subvolume", "create", p); err != nil {
		return fmt.Errorf("create volume %s: %w", vol, err)
	}
	return nil
}

// CloneVolume makes dst a writable copy-on-write snapshot of src.
func (d *Driver) CloneVolume(ctx context.Context, src, dst string) error {
	sp, err := d.volume(src, true)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	dp, err := d.volume(dst, false)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	if err := btrfsCmd(ctx, "subvolume", "snapshot", sp, dp); err != nil {
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return nil
}

// CloneSnapshot makes dst a writable copy-on-write snapshot of vol's snapshot snap.
func (d *Driver) CloneSnapshot(ctx context.Context, vol, snap, dst string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	dp, err := d.volume(dst, false)
	if err != nil {
		return fmt.Errorf("clone snapshot %s/%s: %w", vol, snap, err)
	}
	if err := btrfsCmd(ctx, "subvolume", "snapshot", sp, dp); err != nil {
		return fmt.Errorf("clone snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	return nil
}

// DeleteVolume deletes the volume's snapshots, then the volume.
func (d *Driver) DeleteVolume(ctx context.Context, vol string) error {
	p, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	snapDir := d.snapDir(vol)
	snaps, err := d.allSnapshotSubvolumes(snapDir)
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	if err := deleteSubvolumes(ctx, snaps...); err != nil {
		return fmt.Errorf("delete volume %s: snapshots: %w", vol, err)
	}
	if err := os.RemoveAll(snapDir); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	if err := deleteSubvolumes(ctx, p); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	return nil
}

// allSnapshotSubvolumes lists every subvolume in a volume's snapshot
// directory: snapshots and unfinished receives.
func (d *Driver) allSnapshotSubvolumes(snapDir string) ([]string, error) {
	ents, err := os.ReadDir(snapDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		subs, err := d.subvolumesIn(filepath.Join(snapDir, e.Name()))
		if err != nil && !errors.Is(err, syscall.ENOTDIR) {
			return nil, err
		}
		out = append(out, subs...)
	}
	return out, nil
}

// subvolumesIn lists the subvolumes directly in dir (missing dir: none).
func (d *Driver) subvolumesIn(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if ok, err := isSubvolume(p); err != nil {
			return nil, err
		} else if ok {
			out = append(out, p)
		}
	}
	return out, nil
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
	if err := fsutil.RenameVolume(p, dp, d.snapDir(vol), d.snapDir(dst)); err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	return nil
}

// VolumeExists reports whether the volume exists.
func (d *Driver) VolumeExists(ctx context.Context, vol string) (bool, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return false, fmt.Errorf("volume exists: %w", err)
	}
	ok, err := isSubvolume(d.Path(vol))
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
		if !ok || !e.IsDir() || !strings.HasPrefix(vol, prefix) {
			continue
		}
		out = append(out, vol)
	}
	sort.Strings(out)
	return out, nil
}

// Usage is the volume's referenced bytes from its qgroup when quotas are
// enabled (after committing the current transaction), else the allocated
// size of its tree.
func (d *Driver) Usage(ctx context.Context, vol string) (int64, error) {
	p, err := d.volume(vol, true)
	if err != nil {
		return 0, fmt.Errorf("usage: %w", err)
	}
	if d.quotas {
		if err := btrfsCmd(ctx, "filesystem", "sync", p); err != nil {
			return 0, fmt.Errorf("usage %s: %w", vol, err)
		}
		used, _, err := qgroup(ctx, p)
		if err != nil {
			return 0, fmt.Errorf("usage %s: %w", vol, err)
		}
		return used, nil
	}
	n, err := fsutil.DiskUsage(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("usage %s: %w", vol, err)
	}
	return n, nil
}

// SetQuota sets the volume's qgroup limit on referenced bytes; 0 removes it.
func (d *Driver) SetQuota(ctx context.Context, vol string, bytes int64) error {
	if !d.quotas {
		return fmt.Errorf("set quota %s: quotas are not enabled on %s: %w", vol, d.root, storage.ErrNotSupported)
	}
	p, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	if bytes < 0 {
		return fmt.Errorf("set quota %s: negative size %d", vol, bytes)
	}
	if err := setLimit(ctx, p, bytes); err != nil {
		return fmt.Errorf("set quota %s: %w", vol, err)
	}
	return nil
}

func setLimit(ctx context.Context, path string, bytes int64) error {
	limit := "none"
	if bytes > 0 {
		limit = fmt.Sprint(bytes)
	}
	return btrfsCmd(ctx, "qgroup", "limit", limit, path)
}

// qgroup returns the referenced bytes and the limit (0: none) of the
// subvolume at path.
func qgroup(ctx context.Context, path string) (used, limit int64, err error) {
	id, err := subvolumeID(path)
	if err != nil {
		return 0, 0, err
	}
	out, err := fsutil.Output(ctx, "btrfs", "qgroup", "show", "--raw", "-r", path)
	if err != nil {
		return 0, 0, err
	}
	want := fmt.Sprintf("0/%d", id)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != want {
			continue
		}
		if _, err := fmt.Sscan(f[1], &used); err != nil {
			return 0, 0, fmt.Errorf("parse qgroup %s referenced %q: %w", want, f[1], err)
		}
		if f[3] != "none" {
			if _, err := fmt.Sscan(f[3], &limit); err != nil {
				return 0, 0, fmt.Errorf("parse qgroup %s limit %q: %w", want, f[3], err)
			}
		}
		return used, limit, nil
	}
	return 0, 0, fmt.Errorf("qgroup %s of %s not found in `btrfs qgroup show`", want, path)
}

// tempPath returns a fresh name in the staging directory.
func (d *Driver) tempPath(kind string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(d.stagingDir(), kind+"-"+hex.EncodeToString(b[:]))
}

// cleanStaging deletes what an interrupted receive or restore left behind.
func (d *Driver) cleanStaging(ctx context.Context) error {
	ents, err := os.ReadDir(d.stagingDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := d.removeStaged(ctx, filepath.Join(d.stagingDir(), e.Name())); err != nil {
			return err
		}
	}
	vols, err := os.ReadDir(d.snapshotsDir())
	if err != nil {
		return err
	}
	for _, v := range vols {
		snaps, err := os.ReadDir(filepath.Join(d.snapshotsDir(), v.Name()))
		if err != nil {
			continue
		}
		for _, e := range snaps {
			if strings.HasPrefix(e.Name(), recvPrefix) {
				if err := d.removeStaged(ctx, filepath.Join(d.snapshotsDir(), v.Name(), e.Name())); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// removeStaged removes a staging entry: a subvolume, or a directory that
// may hold subvolumes (a receive directory).
func (d *Driver) removeStaged(ctx context.Context, p string) error {
	if ok, err := isSubvolume(p); err != nil {
		return err
	} else if ok {
		return deleteSubvolumes(ctx, p)
	}
	subs, err := d.subvolumesIn(p)
	if err == nil {
		err = deleteSubvolumes(ctx, subs...)
	}
	if err != nil && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("clean %s: %w", p, err)
	}
	return os.RemoveAll(p)
}
