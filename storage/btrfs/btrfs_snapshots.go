package btrfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// CreateSnapshot makes a read-only snapshot of the volume.
func (d *Driver) CreateSnapshot(ctx context.Context, vol, snap string) error {
	vp, err := d.volume(vol, true)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	sp, err := d.snapshotOnly(vol, snap, false)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(sp), 0o700); err != nil {
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, err)
	}
	if err := btrfsCmd(ctx, "subvolume", "snapshot", "-r", vp, sp); err != nil {
		_ = os.Remove(filepath.Dir(sp))
		return fmt.Errorf("create snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// RenameSnapshot renames a snapshot: the directory holding its read-only
// subvolume is renamed (the subvolume itself keeps its parent, so btrfs
// allows it), and its id, hence its place in the order, stays.
func (d *Driver) RenameSnapshot(ctx context.Context, vol, snap, dst string) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	dp, err := d.snapshotOnly(vol, dst, false)
	if err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", vol, snap, err)
	}
	if _, err := os.Lstat(filepath.Dir(dp)); err == nil {
		return fmt.Errorf("rename snapshot %s/%s: %s: %w", vol, snap, dst, storage.ErrExists)
	}
	if err := os.Rename(filepath.Dir(sp), filepath.Dir(dp)); err != nil {
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
	if err := deleteSubvolumes(ctx, sp); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	if err := os.Remove(filepath.Dir(sp)); err != nil {
		return fmt.Errorf("delete snapshot %s/%s: %w", vol, snap, err)
	}
	return nil
}

// ListSnapshots lists the volume's snapshots in creation order (by
// subvolume id, which btrfs never reuses).
func (d *Driver) ListSnapshots(ctx context.Context, vol string) ([]string, error) {
	if _, err := d.volume(vol, true); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	ents, err := os.ReadDir(d.snapDir(vol))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list snapshots %s: %w", vol, err)
	}
	var paths []string
	for _, e := range ents {
		if storage.ValidateSnapshotName(e.Name()) != nil {
			continue
		}
		p := filepath.Join(d.snapDir(vol), e.Name(), snapSubvol)
		if ok, err := isSubvolume(p); err != nil {
			return nil, fmt.Errorf("list snapshots %s: %w", vol, err)
		} else if ok {
			paths = append(paths, p)
		}
	}
	type snapID struct {
		name string
		id   uint64
	}
	snaps := make([]snapID, 0, len(paths))
	for _, p := range paths {
		id, err := subvolumeID(p)
		if err != nil {
			return nil, fmt.Errorf("list snapshots %s: %w", vol, err)
		}
		snaps = append(snaps, snapID{filepath.Base(filepath.Dir(p)), id})
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].id < snaps[j].id })
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.name
	}
	return out, nil
}

// RestoreSnapshot replaces the volume's subvolume with a writable snapshot of
// snap at the same path, keeping the volume's quota.
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

// replaceVolume makes the subvolume at vp a writable snapshot of sp. An
// existing vp is swapped out by rename, so vp never holds partial content,
// and its qgroup limit carries over.
func (d *Driver) replaceVolume(ctx context.Context, vp, sp string) error {
	exists, err := isSubvolume(vp)
	if err != nil {
		return err
	}
	if !exists {
		return btrfsCmd(ctx, "subvolume", "snapshot", sp, vp)
	}
	var limit int64
	if d.quotas {
		if _, limit, err = qgroup(ctx, vp); err != nil {
			return err
		}
	}
	tmp := d.tempPath("restore")
	if err := btrfsCmd(ctx, "subvolume", "snapshot", sp, tmp); err != nil {
		return err
	}
	old := d.tempPath("old")
	if err := os.Rename(vp, old); err != nil {
		return errors.Join(err, deleteSubvolumes(ctx, tmp))
	}
	if err := os.Rename(tmp, vp); err != nil {
		return errors.Join(err, os.Rename(old, vp), deleteSubvolumes(ctx, tmp))
	}
	if err := deleteSubvolumes(ctx, old); err != nil {
		return err
	}
	if limit > 0 {
		return setLimit(ctx, vp, limit)
	}
	return nil
}

// Send writes `btrfs send` of the snapshot to w, incremental against
// snapshot parent when parent != "".
func (d *Driver) Send(ctx context.Context, vol, snap, parent string, w io.Writer) error {
	sp, err := d.snapshot(vol, snap, true)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	args := []string{"send", "-q"}
	if parent != "" {
		pp, err := d.snapshot(vol, parent, true)
		if err != nil {
			return fmt.Errorf("send %s/%s: parent: %w", vol, snap, err)
		}
		args = append(args, "-p", pp)
	}
	args = append(args, sp)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "btrfs", args...)
	cmd.Stdout = w
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("send %s/%s: %w", vol, snap, fsutil.CmdError(cmd, err, stderr.Bytes()))
	}
	return nil
}

// Receive runs `btrfs receive` into a staging directory, moves the received
// read-only subvolume to the snapshot's place, and makes the volume a
// writable snapshot of it (replacing an existing volume).
func (d *Driver) Receive(ctx context.Context, vol, snap string, r io.Reader) (err error) {
	if err := storage.ValidateVolumeName(vol); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	sp, err := d.snapshotOnly(vol, snap, false)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	snapDir := d.snapDir(vol)
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	dir := filepath.Join(snapDir, recvPrefix+filepath.Base(d.tempPath("")))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	defer func() {
		if cerr := d.removeStaged(context.WithoutCancel(ctx), dir); cerr != nil && err == nil {
			err = fmt.Errorf("receive %s/%s: clean up: %w", vol, snap, cerr)
		}
	}()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "btrfs", "receive", dir)
	cmd.Stdin = r
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, fsutil.CmdError(cmd, err, stderr.Bytes()))
	}
	got, err := d.subvolumesIn(dir)
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if len(got) != 1 {
		return fmt.Errorf("receive %s/%s: stream held %d subvolumes, want 1", vol, snap, len(got))
	}
	// A read-only subvolume can be renamed only within its directory.
	if filepath.Base(got[0]) != snapSubvol {
		if err := os.Rename(got[0], filepath.Join(dir, snapSubvol)); err != nil {
			return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
		}
	}
	if err := os.Rename(dir, filepath.Dir(sp)); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			err = fmt.Errorf("%w: %w", err, storage.ErrExists)
		}
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	if err := d.replaceVolume(ctx, d.Path(vol), sp); err != nil {
		return fmt.Errorf("receive %s/%s: volume: %w", vol, snap, err)
	}
	return nil
}
