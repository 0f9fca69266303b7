package node

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/storage"
)

// Custom storage volumes live in a pool next to the containers' volumes,
// as the driver's volume "custom/NAME". The cluster records which member
// holds each (cluster.FSM.Volume); this file only does the host's part.

// CustomVolumeName is the driver volume holding a custom storage volume.
func CustomVolumeName(name string) string { return "custom/" + name }

// volumeLock serializes the host's work on one custom volume.
func (n *Node) volumeLock(pool, name string) func() {
	return n.locks.lock("vol/" + cluster.VolumeKey(pool, name))
}

// CreateCustomVolume makes an empty custom volume in pool, owned by the
// containers' root, with a quota of size bytes (0: none). What an earlier,
// failed attempt left under the name goes first: the caller has checked
// that the cluster records no such volume.
func (n *Node) CreateCustomVolume(ctx context.Context, pool, name string, size int64) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	vol := CustomVolumeName(name)
	if ok, _ := d.VolumeExists(ctx, vol); ok {
		n.log.Warn("removing leftovers of an interrupted operation", "volume", cluster.VolumeKey(pool, name))
		if err := d.DeleteVolume(ctx, vol); err != nil {
			return fmt.Errorf("storage volume %s: remove leftovers: %w", cluster.VolumeKey(pool, name), err)
		}
	}
	if err := d.CreateVolume(ctx, vol); err != nil {
		return fmt.Errorf("storage volume %s: %w", cluster.VolumeKey(pool, name), err)
	}
	undo := func() { _ = d.DeleteVolume(context.WithoutCancel(ctx), vol) }
	// The containers' root owns the top directory, as in LXD: what a
	// container writes there is its own.
	uid, gid := n.idmap.ToHost(0, 0)
	if err := os.Chown(d.Path(vol), int(uid), int(gid)); err != nil {
		undo()
		return fmt.Errorf("storage volume %s: %w", cluster.VolumeKey(pool, name), err)
	}
	if err := os.Chmod(d.Path(vol), 0o755); err != nil {
		undo()
		return fmt.Errorf("storage volume %s: %w", cluster.VolumeKey(pool, name), err)
	}
	if size > 0 {
		if err := d.SetQuota(ctx, vol, size); err != nil {
			undo()
			return fmt.Errorf("storage volume %s: size: %w", cluster.VolumeKey(pool, name), err)
		}
	}
	return nil
}

// SetCustomVolumeSize sets (0: removes) a custom volume's quota.
func (n *Node) SetCustomVolumeSize(ctx context.Context, pool, name string, size int64) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.SetQuota(ctx, CustomVolumeName(name), size); err != nil {
		return fmt.Errorf("storage volume %s: size: %w", cluster.VolumeKey(pool, name), err)
	}
	return nil
}

// DeleteCustomVolume deletes a custom volume and its snapshots from this
// host (already gone is fine).
func (n *Node) DeleteCustomVolume(ctx context.Context, pool, name string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.DeleteVolume(ctx, CustomVolumeName(name)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("storage volume %s: %w", cluster.VolumeKey(pool, name), err)
	}
	return nil
}

// DropCustomVolume deletes this host's copy of a custom volume the cluster
// places on another member (or nowhere): what a move left behind. It
// refuses while the cluster places it here.
func (n *Node) DropCustomVolume(ctx context.Context, pool, name string) error {
	if v, err := n.fsm.Volume(pool, name); err == nil && v.GetNode() == n.cfg.Name {
		return fmt.Errorf("storage volume %s is on this member: %w", cluster.VolumeKey(pool, name), ErrConflict)
	}
	return n.DeleteCustomVolume(ctx, pool, name)
}

// RenameCustomVolume renames a custom volume on this host.
func (n *Node) RenameCustomVolume(ctx context.Context, pool, name, newName string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.RenameVolume(ctx, CustomVolumeName(name), CustomVolumeName(newName)); err != nil {
		return fmt.Errorf("storage volume %s: rename to %s: %w", cluster.VolumeKey(pool, name), newName, err)
	}
	return nil
}

// SnapshotCustomVolume takes a read-only snapshot of a custom volume.
func (n *Node) SnapshotCustomVolume(ctx context.Context, pool, name, snap string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.CreateSnapshot(ctx, CustomVolumeName(name), snap); err != nil {
		return fmt.Errorf("snapshot %s/%s: %w", cluster.VolumeKey(pool, name), snap, err)
	}
	return nil
}

// DeleteCustomVolumeSnapshot deletes one snapshot of a custom volume.
func (n *Node) DeleteCustomVolumeSnapshot(ctx context.Context, pool, name, snap string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.DeleteSnapshot(ctx, CustomVolumeName(name), snap); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("snapshot %s/%s: %w", cluster.VolumeKey(pool, name), snap, err)
	}
	return nil
}

// RestoreCustomVolumeSnapshot makes a custom volume's content its
// snapshot's. The caller makes sure no running container uses it.
func (n *Node) RestoreCustomVolumeSnapshot(ctx context.Context, pool, name, snap string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := d.RestoreSnapshot(ctx, CustomVolumeName(name), snap); err != nil {
		return fmt.Errorf("restore %s/%s: %w", cluster.VolumeKey(pool, name), snap, err)
	}
	return nil
}

// CopyCustomVolume makes custom volume dst a copy of src in the same pool:
// a copy-on-write clone without snapshots, else the named snapshots
// brought along (oldest first) and the live content on top.
func (n *Node) CopyCustomVolume(ctx context.Context, pool, src, dst string, snaps []string) error {
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if err := copyVolume(ctx, d, CustomVolumeName(src), CustomVolumeName(dst), snaps); err != nil {
		return fmt.Errorf("copy storage volume %s to %s: %w", cluster.VolumeKey(pool, src), dst, err)
	}
	return nil
}

// CustomVolumeUsage says how many bytes a custom volume uses here.
func (n *Node) CustomVolumeUsage(ctx context.Context, pool, name string) (int64, error) {
	d, err := n.pool(pool)
	if err != nil {
		return 0, err
	}
	return d.Usage(ctx, CustomVolumeName(name))
}

// customVolumePath is the host path of a custom volume in a pool of this
// host ("" when the pool is not here).
func (n *Node) customVolumePath(pool, name string) string {
	d, err := n.pool(pool)
	if err != nil {
		return ""
	}
	return d.Path(CustomVolumeName(name))
}
