package lvm

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/storage"
)

func volTag(vol string) string    { return tagVol + hex.EncodeToString([]byte(vol)) }
func snapOfTag(vol string) string { return tagSnapOf + hex.EncodeToString([]byte(vol)) }
func snapTag(snap string) string  { return tagSnap + hex.EncodeToString([]byte(snap)) }

// volume validates vol, loads the index and checks vol's existence:
// ErrNotFound when mustExist and it is missing, ErrExists when !mustExist
// and it is there.
func (d *Driver) volume(ctx context.Context, vol string, mustExist bool) (*index, lvRef, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return nil, lvRef{}, err
	}
	ix, err := d.load(ctx)
	if err != nil {
		return nil, lvRef{}, err
	}
	r, ok := ix.vols[vol]
	switch {
	case mustExist && !ok:
		return nil, lvRef{}, fmt.Errorf("volume %s: %w", vol, storage.ErrNotFound)
	case !mustExist && ok:
		return nil, lvRef{}, fmt.Errorf("volume %s: %w", vol, storage.ErrExists)
	}
	return ix, r, nil
}

// snapshot is volume for a snapshot of an existing volume.
func (d *Driver) snapshot(ctx context.Context, vol, snap string, mustExist bool) (*index, lvRef, error) {
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return nil, lvRef{}, err
	}
	ix, _, err := d.volume(ctx, vol, true)
	if err != nil {
		return nil, lvRef{}, err
	}
	s, ok := ix.snapshot(vol, snap)
	switch {
	case mustExist && !ok:
		return nil, lvRef{}, fmt.Errorf("snapshot %s/%s: %w", vol, snap, storage.ErrNotFound)
	case !mustExist && ok:
		return nil, lvRef{}, fmt.Errorf("snapshot %s/%s: %w", vol, snap, storage.ErrExists)
	}
	return ix, s, nil
}

// createThin creates a thin LV of the configured size and formats it
// ext4 with project quotas.
func (d *Driver) createThin(ctx context.Context, lv string, tags ...string) error {
	args := []string{"-q", "-y", "-T", d.vg + "/" + d.pool, "-V", strconv.FormatInt(d.size, 10) + "b", "-n", lv}
	for _, t := range tags {
		args = append(args, "--addtag", t)
	}
	if _, err := run(ctx, "lvcreate", args...); err != nil {
		return err
	}
	if _, err := run(ctx, "mkfs.ext4", "-q", "-F", "-I", "256", "-m", "0", "-O", "quota,project",
		"-E", "quotatype=prjquota,nodiscard,lazy_itable_init=1,lazy_journal_init=1", d.dev(lv)); err != nil {
		return errors.Join(err, d.remove(ctx, lv))
	}
	return nil
}

// prepareRoot makes a fresh filesystem's root an empty volume root: no
// lost+found, everything created beneath it in the quota project.
func prepareRoot(dir string) error {
	if err := os.Remove(filepath.Join(dir, "lost+found")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return setProject(dir)
}

// thinSnapshot creates LV lv as a thin snapshot of origin, active (not
// skipped at activation), read-only or writable.
func (d *Driver) thinSnapshot(ctx context.Context, origin, lv string, readOnly bool, tags ...string) error {
	perm := "rw"
	if readOnly {
		perm = "r"
	}
	args := []string{"-q", "-s", "-kn", "-p", perm, "-n", lv}
	for _, t := range tags {
		args = append(args, "--addtag", t)
	}
	args = append(args, d.vg+"/"+origin)
	_, err := run(ctx, "lvcreate", args...)
	return err
}

// CreateVolume creates a thin LV with an empty ext4 filesystem, mounted
// at the volume's path.
func (d *Driver) CreateVolume(ctx context.Context, vol string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, _, err := d.volume(ctx, vol, false)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	lv := newLV("v")
	if err := d.createThin(ctx, lv, volTag(vol)); err != nil {
		return fmt.Errorf("create volume %s: %w", vol, err)
	}
	p := d.Path(vol)
	if err := mount(ctx, d.dev(lv), p, false); err != nil {
		return fmt.Errorf("create volume %s: %w", vol, errors.Join(err, d.remove(ctx, lv)))
	}
	if err := prepareRoot(p); err != nil {
		return fmt.Errorf("create volume %s: %w", vol, errors.Join(err, unmount(ctx, p), d.remove(ctx, lv)))
	}
	ix.vols[vol] = lvRef{name: lv, vol: vol}
	return nil
}

// cloneInto makes volume dst a writable thin snapshot of LV origin.
func (d *Driver) cloneInto(ctx context.Context, ix *index, origin, dst string) error {
	lv := newLV("v")
	if err := d.thinSnapshot(ctx, origin, lv, false, volTag(dst)); err != nil {
		return err
	}
	if err := mount(ctx, d.dev(lv), d.Path(dst), false); err != nil {
		return errors.Join(err, d.remove(ctx, lv))
	}
	ix.vols[dst] = lvRef{name: lv, vol: dst}
	return nil
}

// CloneVolume makes dst a writable thin snapshot of src.
func (d *Driver) CloneVolume(ctx context.Context, src, dst string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, sr, err := d.volume(ctx, src, true)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	if _, _, err := d.volume(ctx, dst, false); err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	if err := d.cloneInto(ctx, ix, sr.name, dst); err != nil {
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return nil
}

// CloneSnapshot makes dst a writable thin snapshot of vol's snapshot snap.
func (d *Driver) CloneSnapshot(ctx context.Context, vol, snap, dst string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, s, err := d.snapshot(ctx, vol, snap, true)
	if err != nil {
		return fmt.Errorf("clone snapshot: %w", err)
	}
	if _, _, err := d.volume(ctx, dst, false); err != nil {
		return fmt.Errorf("clone snapshot %s/%s: %w", vol, snap, err)
	}
	if err := d.cloneInto(ctx, ix, s.name, dst); err != nil {
		return fmt.Errorf("clone snapshot %s/%s to %s: %w", vol, snap, dst, err)
	}
	return nil
}

// DeleteVolume unmounts and removes the volume's snapshots, then the volume.
func (d *Driver) DeleteVolume(ctx context.Context, vol string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, r, err := d.volume(ctx, vol, true)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	lvs := []string{}
	for _, s := range ix.snaps[vol] {
		if err := unmount(ctx, d.SnapshotPath(vol, s.snap)); err != nil {
			return fmt.Errorf("delete volume %s: %w", vol, err)
		}
		lvs = append(lvs, s.name)
	}
	if err := unmount(ctx, d.Path(vol)); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	if err := d.remove(ctx, append(lvs, r.name)...); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	delete(ix.vols, vol)
	delete(ix.snaps, vol)
	if err := os.RemoveAll(d.snapDir(vol)); err != nil {
		return fmt.Errorf("delete volume %s: %w", vol, err)
	}
	return nil
}

// RenameVolume retags the volume's LV and its snapshots' and mounts them
// at the new name's paths.
func (d *Driver) RenameVolume(ctx context.Context, vol, dst string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, r, err := d.volume(ctx, vol, true)
	if err != nil {
		return fmt.Errorf("rename volume: %w", err)
	}
	if _, _, err := d.volume(ctx, dst, false); err != nil {
		return fmt.Errorf("rename volume %s: %w", vol, err)
	}
	snaps := ix.snaps[vol]
	for _, s := range snaps {
		if err := unmount(ctx, d.SnapshotPath(vol, s.snap)); err != nil {
			return fmt.Errorf("rename volume %s: %w", vol, err)
		}
	}
	if err := unmount(ctx, d.Path(vol)); err != nil {
		return fmt.Errorf("rename volume %s: %w", vol, err)
	}
	if _, err := run(ctx, "lvchange", "-q", "--deltag", volTag(vol), "--addtag", volTag(dst), d.vg+"/"+r.name); err != nil {
		return fmt.Errorf("rename volume %s: %w", vol, errors.Join(err, d.mountAll(ctx)))
	}
	if len(snaps) > 0 {
		args := []string{"-q", "--deltag", snapOfTag(vol), "--addtag", snapOfTag(dst)}
		for _, s := range snaps {
			args = append(args, d.vg+"/"+s.name)
		}
		if _, err := run(ctx, "lvchange", args...); err != nil {
			return fmt.Errorf("rename volume %s: snapshots: %w", vol, errors.Join(err, d.mountAll(ctx)))
		}
	}
	_ = os.RemoveAll(d.snapDir(vol))
	r.vol = dst
	ix.vols[dst] = r
	delete(ix.vols, vol)
	if len(snaps) > 0 {
		for i := range snaps {
			snaps[i].snapOf = dst
		}
		ix.snaps[dst] = snaps
		delete(ix.snaps, vol)
	}
	if err := d.mountAll(ctx); err != nil {
		return fmt.Errorf("rename volume %s to %s: %w", vol, dst, err)
	}
	return nil
}

// VolumeExists reports whether the volume exists.
func (d *Driver) VolumeExists(ctx context.Context, vol string) (bool, error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return false, fmt.Errorf("volume exists: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.load(ctx)
	if err != nil {
		return false, fmt.Errorf("volume exists %s: %w", vol, err)
	}
	_, ok := ix.vols[vol]
	return ok, nil
}

// ListVolumes lists the volumes whose names start with prefix, sorted.
func (d *Driver) ListVolumes(ctx context.Context, prefix string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := []string{}
	for vol := range ix.vols {
		if strings.HasPrefix(vol, prefix) {
			out = append(out, vol)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Usage is the bytes the volume's files take: its quota project's usage
// (its filesystem's used blocks where quotas fail).
func (d *Driver) Usage(ctx context.Context, vol string) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, r, err := d.volume(ctx, vol, true)
	if err != nil {
		return 0, fmt.Errorf("usage: %w", err)
	}
	used, _, qerr := getQuota(d.dev(r.name))
	if qerr == nil {
		return used, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.Path(vol), &st); err != nil {
		return 0, fmt.Errorf("usage %s: %w", vol, errors.Join(qerr, err))
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}

// SetQuota sets the hard limit of the volume's quota project (see
// Config.ProjectQuotas); 0 removes it.
func (d *Driver) SetQuota(ctx context.Context, vol string, bytes int64) error {
	if !d.quotas {
		return fmt.Errorf("set quota %s: project quotas are off in pool %s/%s: %w", vol, d.vg, d.pool, storage.ErrNotSupported)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, r, err := d.volume(ctx, vol, true)
	if err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	if bytes < 0 {
		return fmt.Errorf("set quota %s: negative size %d", vol, bytes)
	}
	if err := setQuota(d.dev(r.name), bytes); err != nil {
		return fmt.Errorf("set quota %s: %w", vol, err)
	}
	return nil
}

// PoolUsed is the bytes allocated in the driver's thin pool (its data
// percent of its size): what the node reports as the pool's use, since
// the pool directory holds only mountpoints.
func (d *Driver) PoolUsed(ctx context.Context) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out, err := run(ctx, "lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size,data_percent", d.vg+"/"+d.pool)
	if err != nil {
		return 0, fmt.Errorf("pool used: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("pool used: lvs said %q", out)
	}
	size, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("pool used: size %q: %w", f[0], err)
	}
	pct, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return 0, fmt.Errorf("pool used: data percent %q: %w", f[1], err)
	}
	return int64(size * pct / 100), nil
}
