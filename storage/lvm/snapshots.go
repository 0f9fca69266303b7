package lvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/treetar"
)

// CreateSnapshot makes a read-only thin snapshot of the volume (LVM
// suspends the origin, which freezes its filesystem, so the copy is
// clean) and mounts it read-only.
func (d *Driver) CreateSnapshot(ctx context.Context, vol, snap string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, _, err := d.snapshot(ctx, vol, snap, false)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	lv, seq := newLV("s"), d.nextSeq()
	if err := d.thinSnapshot(ctx, ix.vols[vol].name, lv, true, snapOfTag(vol), snapTag(snap), seq); err != nil {
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, err)
	}
	if err := mount(ctx, d.dev(lv), d.SnapshotPath(vol, snap), true); err != nil {
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, errors.Join(err, d.remove(ctx, lv)))
	}
	ix.snaps[vol] = append(ix.snaps[vol], lvRef{name: lv, snapOf: vol, snap: snap, seq: seq[len(tagSeq):]})
	return nil
}

// DeleteSnapshot unmounts and removes one snapshot.
func (d *Driver) DeleteSnapshot(ctx context.Context, vol, snap string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, s, err := d.snapshot(ctx, vol, snap, true)
	if err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	if err := unmount(ctx, d.SnapshotPath(vol, snap)); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	if err := d.remove(ctx, s.name); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	ix.snaps[vol] = slices.DeleteFunc(ix.snaps[vol], func(r lvRef) bool { return r.name == s.name })
	return nil
}

// RenameSnapshot retags the snapshot's LV and mounts it at the new name;
// its place in the order (its sequence tag) stays.
func (d *Driver) RenameSnapshot(ctx context.Context, vol, snap, dst string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, s, err := d.snapshot(ctx, vol, snap, true)
	if err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	if err := storage.ValidateSnapshotName(dst); err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	if _, ok := ix.snapshot(vol, dst); ok {
		return fmt.Errorf("rename snapshot %s/%s: %s: %w", vol, snap, dst, storage.ErrExists)
	}
	if err := unmount(ctx, d.SnapshotPath(vol, snap)); err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	if _, err := run(ctx, "lvchange", "-q", "--deltag", snapTag(snap), "--addtag", snapTag(dst), d.vg+"/"+s.name); err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, errors.Join(err, d.mountAll(ctx)))
	}
	if err := mount(ctx, d.dev(s.name), d.SnapshotPath(vol, dst), true); err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	for i := range ix.snaps[vol] {
		if ix.snaps[vol][i].name == s.name {
			ix.snaps[vol][i].snap = dst
		}
	}
	return nil
}

// ListSnapshots lists the volume's snapshots, oldest first.
func (d *Driver) ListSnapshots(ctx context.Context, vol string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, _, err := d.volume(ctx, vol, true)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := []string{}
	for _, s := range ix.snaps[vol] {
		out = append(out, s.snap)
	}
	return out, nil
}

// RestoreSnapshot replaces the volume's LV with a writable thin snapshot
// of the snapshot, mounted at the same path, keeping the quota.
func (d *Driver) RestoreSnapshot(ctx context.Context, vol, snap string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, s, err := d.snapshot(ctx, vol, snap, true)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if err := d.replaceVolume(ctx, ix, vol, ix.vols[vol].name, s.name); err != nil {
		return fmt.Errorf("restore snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// replaceVolume makes volume vol (LV old) a writable thin snapshot of LV
// origin at the same path, and carries its quota limit over.
func (d *Driver) replaceVolume(ctx context.Context, ix *index, vol, old, origin string) error {
	_, limit, err := getQuota(d.dev(old))
	if err != nil {
		return err
	}
	lv := newLV("v")
	if err := d.thinSnapshot(ctx, origin, lv, false, tagStaging); err != nil {
		return err
	}
	p := d.Path(vol)
	if err := unmount(ctx, p); err != nil {
		return errors.Join(err, d.remove(ctx, lv), mount(ctx, d.dev(old), p, false))
	}
	// The old LV becomes the staging one (New removes it if we stop
	// here), the new one the volume's.
	if _, err := run(ctx, "lvchange", "-q", "--deltag", volTag(vol), "--addtag", tagStaging, d.vg+"/"+old); err != nil {
		return errors.Join(err, d.remove(ctx, lv), mount(ctx, d.dev(old), p, false))
	}
	if _, err := run(ctx, "lvchange", "-q", "--deltag", tagStaging, "--addtag", volTag(vol), d.vg+"/"+lv); err != nil {
		return err
	}
	if err := mount(ctx, d.dev(lv), p, false); err != nil {
		return err
	}
	ix.vols[vol] = lvRef{name: lv, vol: vol}
	if err := setQuota(d.dev(lv), limit); err != nil {
		return err
	}
	return d.remove(ctx, old)
}

// Send writes the snapshot's tree as a tar stream (treetar). parent, if
// set, must exist; the stream is always the full content.
func (d *Driver) Send(ctx context.Context, vol, snap, parent string, w io.Writer) error {
	d.mu.Lock()
	_, _, err := d.snapshot(ctx, vol, snap, true)
	if err == nil && parent != "" {
		if _, _, perr := d.snapshot(ctx, vol, parent, true); perr != nil {
			err = fmt.Errorf("parent: %w", perr)
		}
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("send %s/%s: %w", vol, snap, err)
	}
	// A snapshot is read-only: it can be read without the lock.
	if err := treetar.Write(ctx, d.SnapshotPath(vol, snap), w); err != nil {
		return fmt.Errorf("send %s/%s: %w", vol, snap, err)
	}
	return nil
}

// Receive extracts a stream from Send into a fresh thin LV, makes it
// snapshot snap of vol (read-only) and vol a writable thin snapshot of it,
// replacing an existing vol in place.
func (d *Driver) Receive(ctx context.Context, vol, snap string, r io.Reader) (err error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if err := storage.ValidateSnapshotName(snap); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.invalidate(&err)
	ix, err := d.load(ctx)
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if _, ok := ix.snapshot(vol, snap); ok {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, storage.ErrExists)
	}
	lv := newLV("s")
	if err := d.createThin(ctx, lv, tagStaging); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	stage := filepath.Join(d.stagingDir(), lv)
	done := false
	defer func() {
		if !done {
			cctx := context.WithoutCancel(ctx)
			if cerr := errors.Join(unmount(cctx, stage), d.remove(cctx, lv)); cerr != nil {
				err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
			}
		}
	}()
	if err := mount(ctx, d.dev(lv), stage, false); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := prepareRoot(stage); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := treetar.Read(ctx, r, stage); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := unmount(ctx, stage); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	seq := d.nextSeq()
	if _, err := run(ctx, "lvchange", "-q", "-p", "r", "--deltag", tagStaging,
		"--addtag", snapOfTag(vol), "--addtag", snapTag(snap), "--addtag", seq, d.vg+"/"+lv); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	done = true
	ix.snaps[vol] = append(ix.snaps[vol], lvRef{name: lv, snapOf: vol, snap: snap, seq: seq[len(tagSeq):]})
	if err := mount(ctx, d.dev(lv), d.SnapshotPath(vol, snap), true); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if old, ok := ix.vols[vol]; ok {
		err = d.replaceVolume(ctx, ix, vol, old.name, lv)
	} else {
		err = d.cloneInto(ctx, ix, lv, vol)
	}
	if err != nil {
		return fmt.Errorf("receive %s/%s: volume: %w", vol, snap, err)
	}
	return nil
}
