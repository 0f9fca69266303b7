package zfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Snapshots are mounted by the driver, read-only, at
// <Path>/snapshots/<volume's component>/<snapshot's component> for as
// long as the driver is open: the .zfs/snapshot directories of ZFS's
// automounter show an empty placeholder until something triggers the
// automount, which needs a usermode helper that not every host (a VM
// without udev, a container) runs. The driver's own hidden snapshots are
// never mounted. A snapshot that is mounted cannot be destroyed or
// renamed, so every change unmounts first.

func (d *Driver) snapshotsDir() string { return filepath.Join(d.root, "snapshots") }

// snapDir is the directory the volume's snapshots are mounted beneath.
func (d *Driver) snapDir(vol string) string {
	c, _ := component(vol)
	return filepath.Join(d.snapshotsDir(), c)
}

// isMountpoint reports whether p is the root of a mount of another
// filesystem than its parent's (what the driver mounts always is).
func isMountpoint(p string) (bool, error) {
	var st, pst unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("lstat %s: %w", p, err)
	}
	if err := unix.Lstat(filepath.Dir(p), &pst); err != nil {
		return false, fmt.Errorf("lstat %s: %w", filepath.Dir(p), err)
	}
	return st.Dev != pst.Dev, nil
}

// mountSnapshot mounts ZFS snapshot name read-only at dir (created when
// missing); a mount already there is left as it is.
func mountSnapshot(ctx context.Context, name, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ok, err := isMountpoint(dir); err != nil {
		return err
	} else if ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if err := unix.Mount(name, dir, "zfs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount snapshot %s at %s: %w", name, dir, err)
	}
	return nil
}

// unmountDir unmounts dir when something is mounted there, then removes
// the directory.
func unmountDir(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := isMountpoint(dir)
	if err != nil {
		return err
	}
	if ok {
		if err := unix.Unmount(dir, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// unmountAll unmounts everything in dir's subdirectories (one level:
// the snapshots of one volume) and removes them and dir.
func unmountAll(ctx context.Context, dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, unmountDir(ctx, filepath.Join(dir, e.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return unmountDir(ctx, dir)
}

// visibleSnaps returns the components of filesystem ds's snapshots that
// the driver shows (its hidden ones and unnamed digests left out), in
// order.
func visibleSnaps(ix *index, ds string) []string {
	var cs []string
	for _, s := range ix.snaps[ds] {
		c := s.snap()
		if hidden(c) {
			continue
		}
		if _, ok := nameOf(c, s.snapProp); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

// mountAllSnapshots makes the snapshot mounts what the datasets say: it
// mounts every visible snapshot of every volume that is not mounted, and
// unmounts and removes whatever else is under the snapshots directory
// (left by an interrupted change).
func (d *Driver) mountAllSnapshots(ctx context.Context, ix *index) error {
	want := map[string]string{} // mount directory → snapshot
	for _, e := range ix.fs {
		if filepath.Dir(e.name) != d.volumes() {
			continue
		}
		vc := filepath.Base(e.name)
		for _, c := range visibleSnaps(ix, e.name) {
			want[filepath.Join(d.snapshotsDir(), vc, c)] = e.name + "@" + c
		}
	}
	var errs []error
	vdirs, err := os.ReadDir(d.snapshotsDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, v := range vdirs {
		vdir := filepath.Join(d.snapshotsDir(), v.Name())
		sdirs, err := os.ReadDir(vdir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range sdirs {
			if p := filepath.Join(vdir, s.Name()); want[p] == "" {
				errs = append(errs, unmountDir(ctx, p))
			}
		}
	}
	for dir, name := range want {
		errs = append(errs, mountSnapshot(ctx, name, dir))
	}
	for _, v := range vdirs {
		// Directories of volumes without snapshots go (rmdir fails on the others).
		_ = os.Remove(filepath.Join(d.snapshotsDir(), v.Name()))
	}
	return errors.Join(errs...)
}

// unmountSnapshots unmounts the mounts under the snapshots directory and
// removes it (Close, Destroy).
func (d *Driver) unmountSnapshots(ctx context.Context) error {
	vdirs, err := os.ReadDir(d.snapshotsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vdirs {
		errs = append(errs, unmountAll(ctx, filepath.Join(d.snapshotsDir(), v.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return unmountDir(ctx, d.snapshotsDir())
}

// remountSnapshots reads the datasets and mounts the snapshots as they
// are now (after a change, or to put back what a failed one unmounted).
func (d *Driver) remountSnapshots(ctx context.Context) error {
	ix, err := d.scan(ctx)
	if err != nil {
		return err
	}
	return d.mountAllSnapshots(ctx, ix)
}

// unmountShown unmounts those of vol's snapshots in es that may be
// mounted (not the driver's hidden ones), before a change destroys them.
func (d *Driver) unmountShown(ctx context.Context, vol string, es []*entry) error {
	var errs []error
	for _, e := range es {
		if c := e.snap(); !hidden(c) {
			errs = append(errs, unmountDir(ctx, filepath.Join(d.snapDir(vol), c)))
		}
	}
	return errors.Join(errs...)
}
