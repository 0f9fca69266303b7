package zfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// validSnap validates a volume and a snapshot name.
func validSnap(vol, snap string) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return err
	}
	return storage.ValidateSnapshotName(snap)
}

// CreateSnapshot takes a ZFS snapshot of the volume.
func (d *Driver) CreateSnapshot(ctx context.Context, vol, snap string) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds, sn := d.dataset(vol), d.snapName(vol, snap)
	args := append([]string{"snapshot"}, nameProp(propSnapshot, snap)...)
	if _, err := zfs(ctx, append(args, sn)...); err != nil {
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, d.why(ctx, err,
			missing(ds, "volume "+vol), present(sn, "snapshot "+vol+"/"+snap)))
	}
	if err := mountSnapshot(ctx, sn, d.SnapshotPath(vol, snap)); err != nil {
		_, derr := zfs(context.WithoutCancel(ctx), "destroy", sn)
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, errors.Join(err, derr))
	}
	return nil
}

// DeleteSnapshot destroys the snapshot; one that clones depend on is
// renamed to a hidden name instead, and destroyed with its last clone.
func (d *Driver) DeleteSnapshot(ctx context.Context, vol, snap string) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds, sn := d.dataset(vol), d.snapName(vol, snap)
	p := d.SnapshotPath(vol, snap)
	if err := unmountDir(ctx, p); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	_, err := zfs(ctx, "destroy", sn)
	if err == nil {
		_ = os.Remove(d.snapDir(vol)) // when it was the last one
		return nil
	}
	ix, serr := d.scan(ctx)
	switch {
	case serr != nil:
	case !ix.has(ds):
		err = fmt.Errorf("volume %s: %w (%w)", vol, storage.ErrNotFound, err)
	case !ix.has(sn):
		err = fmt.Errorf("snapshot %s/%s: %w (%w)", vol, snap, storage.ErrNotFound, err)
	case len(ix.clones[sn]) > 0:
		_, err = zfs(ctx, "rename", sn, ds+"@"+deletedSnapPrefix+randomSuffix())
		if err == nil {
			_ = os.Remove(d.snapDir(vol))
			return nil
		}
		fallthrough
	default:
		// Still there: mounted again.
		err = errors.Join(err, mountSnapshot(context.WithoutCancel(ctx), sn, p))
	}
	return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
}

// RenameSnapshot renames the ZFS snapshot: its guid and createtxg, hence
// its place in the order and the increments based on it, stay.
func (d *Driver) RenameSnapshot(ctx context.Context, vol, snap, dst string) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	if err := storage.ValidateSnapshotName(dst); err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	from, to := d.snapName(vol, snap), d.snapName(vol, dst)
	if err := unmountDir(ctx, d.SnapshotPath(vol, snap)); err != nil {
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	if _, err := zfs(ctx, "rename", from, to); err != nil {
		err = d.why(ctx, err, missing(d.dataset(vol), "volume "+vol), missing(from, "snapshot "+vol+"/"+snap),
			present(to, "snapshot "+vol+"/"+dst))
		if !errors.Is(err, storage.ErrNotFound) {
			err = errors.Join(err, mountSnapshot(context.WithoutCancel(ctx), from, d.SnapshotPath(vol, snap)))
		}
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	if err := setNameProp(ctx, propSnapshot, dst, to); err != nil {
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	if err := mountSnapshot(ctx, to, d.SnapshotPath(vol, dst)); err != nil {
		return fmt.Errorf("rename snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	return nil
}

// ListSnapshots lists the volume's snapshots by createtxg (the driver's
// hidden ones left out).
func (d *Driver) ListSnapshots(ctx context.Context, vol string) ([]string, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", vol, err)
	}
	ds := d.dataset(vol)
	if !ix.has(ds) {
		return nil, fmt.Errorf("list snapshots of %s: %w", vol, storage.ErrNotFound)
	}
	return snapshotNames(ix, ds), nil
}

// snapshotNames returns the Shoal names of ds's snapshots in order (never nil).
func snapshotNames(ix *index, ds string) []string {
	names := []string{}
	for _, s := range ix.snaps[ds] {
		c := s.snap()
		if hidden(c) {
			continue
		}
		if name, ok := nameOf(c, s.snapProp); ok && storage.ValidateSnapshotName(name) == nil {
			names = append(names, name)
		}
	}
	return names
}

// RestoreSnapshot rolls the volume back when snap is its latest snapshot
// (the driver's hidden ones counted). Otherwise, since a rollback past
// later snapshots would destroy them, it copies the snapshot's tree over
// the volume's content (a full copy: OpenZFS 2.1 cannot clone blocks
// between datasets). Properties such as refquota stay either way.
func (d *Driver) RestoreSnapshot(ctx context.Context, vol, snap string) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, err)
	}
	ds, sn := d.dataset(vol), d.snapName(vol, snap)
	switch {
	case !ix.has(ds):
		return fmt.Errorf("restore snapshot %s/%s: volume: %w", vol, snap, storage.ErrNotFound)
	case !ix.has(sn):
		return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, storage.ErrNotFound)
	}
	if len(ix.after(ds, sn)) == 0 {
		if _, err := zfs(ctx, "rollback", sn); err != nil {
			return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, err)
		}
		return nil
	}
	if err := replaceTree(ctx, d.SnapshotPath(vol, snap), d.Path(vol)); err != nil {
		return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// replaceTree makes the content of directory dst a copy of src's: it
// empties dst and copies src's tree in with `cp -a` (owners, modes,
// times, xattrs, special files and hardlinks kept, the root's owner and
// mode included).
func replaceTree(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return err
	}
	ents, err := os.ReadDir(dst)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return fsutil.Run(ctx, "cp", "-a", "--no-target-directory", src+"/.", dst)
}
