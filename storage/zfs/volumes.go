package zfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/storage"
)

// Most methods run the one ZFS command that does the work and, only when
// it fails, read the datasets to say why with a sentinel (a missing
// volume, a name taken): the common path costs one command, and no error
// text is ever matched.

// reason inspects the datasets after a failure and returns a sentinel
// error when it explains it, nil otherwise.
type reason func(ix *index) error

// missing explains a failure by ZFS name not existing.
func missing(name, what string) reason {
	return func(ix *index) error {
		if !ix.has(name) {
			return fmt.Errorf("%s: %w", what, storage.ErrNotFound)
		}
		return nil
	}
}

// present explains a failure by ZFS name existing.
func present(name, what string) reason {
	return func(ix *index) error {
		if ix.has(name) {
			return fmt.Errorf("%s: %w", what, storage.ErrExists)
		}
		return nil
	}
}

// why returns err, wrapped with the first reason that explains it.
func (d *Driver) why(ctx context.Context, err error, reasons ...reason) error {
	ix, serr := d.scan(ctx)
	if serr != nil {
		return err
	}
	for _, r := range reasons {
		if s := r(ix); s != nil {
			return fmt.Errorf("%w (%w)", s, err)
		}
	}
	return err
}

// nameProp returns the -o argument that records a hashed component's
// Shoal name (none for an escaped one: its name is its component).
func nameProp(propName, name string) []string {
	if _, hashed := component(name); hashed {
		return []string{"-o", prop(propName, name)}
	}
	return nil
}

// setNameProp records name on a renamed dataset or snapshot whose new
// component is hashed.
func setNameProp(ctx context.Context, propName, name, target string) error {
	if _, hashed := component(name); !hashed {
		return nil
	}
	_, err := zfs(ctx, "set", prop(propName, name), target)
	return err
}

// CreateVolume creates an empty filesystem, mounted at Path(vol).
func (d *Driver) CreateVolume(ctx context.Context, vol string) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds := d.dataset(vol)
	args := append([]string{"create"}, nameProp(propVolume, vol)...)
	if _, err := zfs(ctx, append(args, ds)...); err != nil {
		return fmt.Errorf("create volume %s: %w", vol, d.why(ctx, err, present(ds, "volume "+vol)))
	}
	return nil
}

// CloneVolume clones dst from a hidden snapshot of src taken for it
// (collected when the clone and src are gone).
func (d *Driver) CloneVolume(ctx context.Context, src, dst string) error {
	if err := storage.ValidateVolumeName(src); err != nil {
		return fmt.Errorf("clone volume: %w", err)
	}
	if err := storage.ValidateVolumeName(dst); err != nil {
		return fmt.Errorf("clone volume: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sds, dds := d.dataset(src), d.dataset(dst)
	origin := sds + "@" + cloneSnapPrefix + randomSuffix()
	if _, err := zfs(ctx, "snapshot", origin); err != nil {
		return fmt.Errorf("clone volume %s: %w", src, d.why(ctx, err, missing(sds, "volume "+src)))
	}
	args := append([]string{"clone"}, nameProp(propVolume, dst)...)
	if _, err := zfs(ctx, append(args, origin, dds)...); err != nil {
		err = d.why(ctx, err, present(dds, "volume "+dst))
		if _, derr := zfs(context.WithoutCancel(ctx), "destroy", origin); derr != nil {
			err = errors.Join(err, derr)
		}
		return fmt.Errorf("clone volume %s to %s: %w", src, dst, err)
	}
	return nil
}

// CloneSnapshot clones dst from the snapshot (which cannot then be
// destroyed before dst: DeleteSnapshot hides it instead).
func (d *Driver) CloneSnapshot(ctx context.Context, vol, snap, dst string) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	if err := storage.ValidateVolumeName(dst); err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sn, dds := d.snapName(vol, snap), d.dataset(dst)
	args := append([]string{"clone"}, nameProp(propVolume, dst)...)
	if _, err := zfs(ctx, append(args, sn, dds)...); err != nil {
		return fmt.Errorf("clone snapshot %s/%s to %s: %w", vol, snap, dst, d.why(ctx, err,
			missing(d.dataset(vol), "volume "+vol), missing(sn, "snapshot "+vol+"/"+snap), present(dds, "volume "+dst)))
	}
	return nil
}

// DeleteVolume destroys the volume with its snapshots. When clones depend
// on some of them, the volume is moved, unmounted, into the internal
// dataset instead and destroyed once the last clone is gone.
func (d *Driver) DeleteVolume(ctx context.Context, vol string) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	ds := d.dataset(vol)
	if !ix.has(ds) {
		return fmt.Errorf("delete volume %s: %w", vol, storage.ErrNotFound)
	}
	if err := unmountAll(ctx, d.snapDir(vol)); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	if err := d.removeFS(ctx, ix, ds); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, errors.Join(err, d.remountSnapshots(context.WithoutCancel(ctx))))
	}
	// ZFS leaves the mountpoint directory of an inherited mountpoint.
	if err := os.Remove(d.Path(vol)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	return nil
}

// removeFS destroys filesystem ds with its snapshots, or moves it into
// the internal dataset when clones depend on some of its snapshots
// (destroying the others), then collects what its own origin leaves.
func (d *Driver) removeFS(ctx context.Context, ix *index, ds string) error {
	var free []string
	kept := false
	for _, s := range ix.snaps[ds] {
		if len(ix.clones[s.name]) > 0 {
			kept = true
		} else {
			free = append(free, s.snap())
		}
	}
	if !kept {
		if _, err := zfs(ctx, "destroy", "-r", ds); err != nil {
			return err
		}
	} else {
		if len(free) > 0 {
			if _, err := zfs(ctx, "destroy", ds+"@"+strings.Join(free, ",")); err != nil {
				return err
			}
		}
		if _, err := zfs(ctx, "rename", ds, d.internal()+"/"+deletedPrefix+randomSuffix()); err != nil {
			return err
		}
	}
	if o := ix.byName[ds].origin; o != "" && d.collectable(o) {
		return d.collect(ctx)
	}
	return nil
}

// collectable reports whether snapshot name is one the driver keeps only
// for its clones (hidden, or of a deleted volume).
func (d *Driver) collectable(name string) bool {
	ds, s, _ := strings.Cut(name, "@")
	return hidden(s) || path.Dir(ds) == d.internal()
}

// collect destroys the hidden snapshots no clone depends on, and the
// deleted volumes none of whose snapshots has a clone, until nothing is
// left to collect (destroying one may free its own origin).
func (d *Driver) collect(ctx context.Context) error {
	for {
		ix, err := d.scan(ctx)
		if err != nil {
			return err
		}
		done := 0
		for _, e := range ix.fs {
			deleted := path.Dir(e.name) == d.internal() && strings.HasPrefix(path.Base(e.name), deletedPrefix)
			var free []string
			needed := false
			for _, s := range ix.snaps[e.name] {
				if len(ix.clones[s.name]) > 0 {
					needed = true
				} else if deleted || hidden(s.snap()) {
					free = append(free, s.snap())
				}
			}
			var err error
			switch {
			case deleted && !needed:
				_, err = zfs(ctx, "destroy", "-r", e.name)
			case len(free) > 0:
				_, err = zfs(ctx, "destroy", e.name+"@"+strings.Join(free, ","))
			default:
				continue
			}
			if err != nil {
				return err
			}
			done++
		}
		if done == 0 {
			return nil
		}
	}
}

// RenameVolume renames the volume's filesystem: its snapshots go with it
// (same guids, so increments still apply) and it is mounted again at the
// new Path.
func (d *Driver) RenameVolume(ctx context.Context, vol, dst string) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("rename volume: %w", err)
	}
	if err := storage.ValidateVolumeName(dst); err != nil {
		return fmt.Errorf("rename volume: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	from, to := d.dataset(vol), d.dataset(dst)
	// The snapshots' mounts move with the volume's name.
	if err := unmountAll(ctx, d.snapDir(vol)); err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	if _, err := zfs(ctx, "rename", from, to); err != nil {
		err = d.why(ctx, err, missing(from, "volume "+vol), present(to, "volume "+dst))
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, errors.Join(err, d.remountSnapshots(context.WithoutCancel(ctx))))
	}
	if err := setNameProp(ctx, propVolume, dst, to); err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	if err := os.Remove(d.Path(vol)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	if err := d.remountSnapshots(ctx); err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	return nil
}

// VolumeExists reports whether the volume's filesystem exists.
func (d *Driver) VolumeExists(ctx context.Context, vol string) (bool, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return false, fmt.Errorf("volume exists: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return false, fmt.Errorf("volume exists %s: %w", vol, err)
	}
	return ix.has(d.dataset(vol)), nil
}

// ListVolumes lists the volumes whose names start with prefix, sorted.
func (d *Driver) ListVolumes(ctx context.Context, prefix string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return d.volumeNames(ix, prefix), nil
}

// volumeNames returns the Shoal names of the filesystems in the volumes
// dataset that start with prefix, sorted (never nil).
func (d *Driver) volumeNames(ix *index, prefix string) []string {
	vols := []string{}
	for _, e := range ix.fs {
		if path.Dir(e.name) != d.volumes() {
			continue
		}
		name, ok := nameOf(path.Base(e.name), e.volProp)
		if ok && strings.HasPrefix(name, prefix) && storage.ValidateVolumeName(name) == nil {
			vols = append(vols, name)
		}
	}
	sort.Strings(vols)
	return vols
}

// Usage is the volume's referenced bytes (what its quota limits), after
// a pool sync so that what was just written counts.
func (d *Driver) Usage(ctx context.Context, vol string) (int64, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return 0, fmt.Errorf("usage: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds := d.dataset(vol)
	if _, err := zpool(ctx, "sync", d.pool); err != nil {
		return 0, fmt.Errorf("usage of %s: %w", vol, err)
	}
	out, err := zfs(ctx, "get", "-H", "-p", "-o", "value", "referenced", ds)
	if err != nil {
		return 0, fmt.Errorf("usage of %s: %w", vol, d.why(ctx, err, missing(ds, "volume "+vol)))
	}
	n, err := strconv.ParseInt(firstLine(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("usage of %s: referenced %q: %w", vol, out, err)
	}
	return n, nil
}

// SetQuota sets the volume's refquota (what its snapshots hold does not
// count); 0 removes it.
func (d *Driver) SetQuota(ctx context.Context, vol string, bytes int64) error {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	if bytes < 0 {
		return fmt.Errorf("set quota of %s: %d bytes is negative", vol, bytes)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	value := "none"
	if bytes > 0 {
		value = strconv.FormatInt(bytes, 10)
	}
	ds := d.dataset(vol)
	if _, err := zfs(ctx, "set", prop("refquota", value), ds); err != nil {
		return fmt.Errorf("set quota of %s: %w", vol, d.why(ctx, err, missing(ds, "volume "+vol)))
	}
	return nil
}

// PoolUsed is the bytes the driver's root dataset uses, its volumes,
// snapshots and hidden datasets included (what the node reports as the
// pool's use: the pool directory holds only mountpoints).
func (d *Driver) PoolUsed(ctx context.Context) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out, err := zfs(ctx, "get", "-H", "-p", "-o", "value", "used", d.ds)
	if err != nil {
		return 0, fmt.Errorf("pool used: %w", err)
	}
	n, err := strconv.ParseInt(firstLine(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pool used: %q: %w", out, err)
	}
	return n, nil
}
