package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// The volume operations HA replication needs on this host (cluster/ha's
// Host): the owner's replication snapshots of a container's volume, and
// the replica volumes this member holds for containers others own.

// SnapshotVolume takes a read-only snapshot of a container's volume, and
// of every custom volume it attaches under the same name (one replication
// round covers them all; they are taken one after the other, not at one
// instant).
func (n *Node) SnapshotVolume(ctx context.Context, ct *shoalv1.Container, snap string) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	for _, key := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
		pool, name, _ := strings.Cut(key, "/")
		if err := n.SnapshotCustomVolume(ctx, pool, name, snap); err != nil {
			return err
		}
	}
	return d.CreateSnapshot(ctx, volumeName(ct.GetName()), snap)
}

// VolumeSnapshots lists the snapshots of a container's volume whose names
// start with prefix, oldest first.
func (n *Node) VolumeSnapshots(ctx context.Context, ct *shoalv1.Container, prefix string) ([]string, error) {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return nil, err
	}
	all, err := d.ListSnapshots(ctx, volumeName(ct.GetName()))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out, nil
}

// DeleteVolumeSnapshot deletes one snapshot of a container's volume; a
// missing one is not an error.
func (n *Node) DeleteVolumeSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	if err := d.DeleteSnapshot(ctx, volumeName(ct.GetName()), snap); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	for _, key := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
		pool, name, _ := strings.Cut(key, "/")
		if err := n.DeleteCustomVolumeSnapshot(ctx, pool, name, snap); err != nil {
			return err
		}
	}
	return nil
}

// Replicas lists the containers this member holds a replica of, in any
// pool.
func (n *Node) Replicas(ctx context.Context) ([]string, error) {
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	var out []string
	for name, d := range n.pools {
		vols, err := d.ListVolumes(ctx, "replicas/")
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", name, err)
		}
		for _, v := range vols {
			out = append(out, strings.TrimPrefix(v, "replicas/"))
		}
	}
	return out, nil
}

// DeleteReplica deletes this member's replica of a container from every
// pool; not while this member owns the container and has no volume of it
// yet (a heal brought it here: the replica becomes the volume when the
// container is reconciled, ha.ErrReplicaPending).
func (n *Node) DeleteReplica(ctx context.Context, container string) error {
	defer n.locks.lock("ct/" + container)()
	if ct, err := n.fsm.Container(container); err == nil && ct.GetNode() == n.cfg.Name && !n.HasVolume(ctx, container) {
		return fmt.Errorf("replica of %s: %w", container, ha.ErrReplicaPending)
	}
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	for _, d := range n.pools {
		if err := d.DeleteVolume(ctx, migration.ReplicaVolume(container)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	return nil
}

// promoteReplica makes this member's replica of ct its volume, when it
// holds one (healing gave it the container): the replica volume is
// renamed to the container's, keeping its snapshot — the one the old
// owner took, which other replicas, and the old owner's stale copy, hold
// too, so increments go on from it — and its content is reset to that
// snapshot's (a demoted stale copy holds newer, divergent writes).
func (n *Node) promoteReplica(ctx context.Context, d storage.Driver, ct *shoalv1.Container) (bool, error) {
	rep := migration.ReplicaVolume(ct.GetName())
	snaps, err := d.ListSnapshots(ctx, rep)
	if errors.Is(err, storage.ErrNotFound) || err == nil && len(snaps) == 0 {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	snap := snaps[len(snaps)-1]
	vol := volumeName(ct.GetName())
	if err := d.RenameVolume(ctx, rep, vol); err != nil {
		return false, fmt.Errorf("promote the replica of %s (snapshot %s): %w", ct.GetName(), snap, err)
	}
	if err := d.RestoreSnapshot(ctx, vol, snap); err != nil {
		return false, fmt.Errorf("promote the replica of %s: restore snapshot %s: %w", ct.GetName(), snap, err)
	}
	n.log.Info("promoted this member's replica to the container's volume", "container", ct.GetName(), "snapshot", snap)
	for _, key := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
		pool, name, _ := strings.Cut(key, "/")
		if err := n.promoteCustomReplica(ctx, pool, name, snap); err != nil {
			return true, err
		}
	}
	n.bus.Lifecycle(n.cfg.Name, "container-promoted", ct.GetName())
	return true, nil
}

// promoteCustomReplica makes this member's replica of a custom volume the
// volume (healing brought it here with its container), reset to snapshot
// snap, the round the container's replica is at (or its newest).
func (n *Node) promoteCustomReplica(ctx context.Context, pool, name, snap string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	rep, vol := migration.CustomReplicaVolume(name), CustomVolumeName(name)
	snaps, err := d.ListSnapshots(ctx, rep)
	if errors.Is(err, storage.ErrNotFound) || err == nil && len(snaps) == 0 {
		n.log.Warn("healed a container whose storage volume has no replica here", "volume", cluster.VolumeKey(pool, name))
		return nil
	}
	if err != nil {
		return err
	}
	if !slices.Contains(snaps, snap) {
		snap = snaps[len(snaps)-1]
	}
	if ok, _ := d.VolumeExists(ctx, vol); ok {
		// A leftover of an earlier stay here: the replica is newer.
		if err := d.DeleteVolume(ctx, vol); err != nil {
			return err
		}
	}
	if err := d.RenameVolume(ctx, rep, vol); err != nil {
		return fmt.Errorf("promote the replica of storage volume %s: %w", cluster.VolumeKey(pool, name), err)
	}
	if err := d.RestoreSnapshot(ctx, vol, snap); err != nil {
		return fmt.Errorf("promote the replica of storage volume %s: restore snapshot %s: %w", cluster.VolumeKey(pool, name), snap, err)
	}
	n.log.Info("promoted this member's replica of a storage volume", "volume", cluster.VolumeKey(pool, name), "snapshot", snap)
	return nil
}

// keepCustomAsReplica turns this member's stale copy of a custom volume
// that moved elsewhere with its healed container into the volume's
// replica, keeping only snapshot snap; without it the copy is dropped.
func (n *Node) keepCustomAsReplica(ctx context.Context, pool, name, snap string) error {
	defer n.volumeLock(pool, name)()
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	vol, rep := CustomVolumeName(name), migration.CustomReplicaVolume(name)
	snaps, err := d.ListSnapshots(ctx, vol)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil || !slices.Contains(snaps, snap) {
		n.log.Warn("dropping the stale copy of a storage volume healed elsewhere: it lacks the snapshot its replica would be based on",
			"volume", cluster.VolumeKey(pool, name), "snapshot", snap)
		return d.DeleteVolume(ctx, vol)
	}
	if err := d.DeleteVolume(ctx, rep); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	for _, s := range snaps {
		if s != snap {
			if err := d.DeleteSnapshot(ctx, vol, s); err != nil {
				return fmt.Errorf("stale copy of storage volume %s: %w", cluster.VolumeKey(pool, name), err)
			}
		}
	}
	return d.RenameVolume(ctx, vol, rep)
}

// dropStaleCustom deletes this member's copy of a custom volume the
// cluster places on another member.
func (n *Node) dropStaleCustom(ctx context.Context, pool, name string) {
	if err := n.DropCustomVolume(ctx, pool, name); err != nil {
		n.log.Warn("drop the stale copy of a storage volume", "volume", cluster.VolumeKey(pool, name), "err", err)
	}
}

// KeepAsReplica turns this member's stale copy of a container healed
// elsewhere into its replica, when the cluster records this member as
// holding one (at the snapshot the new owner promoted): the container is
// undefined here and its volume renamed to the replica's with only that
// snapshot kept, so the new owner's next round is an increment on it
// rather than the whole volume. Without that snapshot the copy is
// dropped. With no record, or no stale volume, it does nothing.
func (n *Node) KeepAsReplica(ctx context.Context, name string) error {
	_, err := n.keepAsReplica(ctx, name)
	return err
}

// keepAsReplica is KeepAsReplica, reporting whether it dealt with the
// stale copy (false: no record names this member, or no volume is here).
func (n *Node) keepAsReplica(ctx context.Context, name string) (bool, error) {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	ct, err := n.fsm.Container(name)
	if err != nil || ct.GetNode() == n.cfg.Name {
		return false, nil
	}
	i := slices.IndexFunc(ct.GetReplicas(), func(r *shoalv1.Replica) bool { return r.GetMember() == n.cfg.Name })
	if i < 0 {
		return false, nil
	}
	snap := ct.GetReplicas()[i].GetSnapshot()
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return false, err
	}
	if ok, err := d.VolumeExists(ctx, volumeName(name)); err != nil || !ok {
		return false, err
	}
	if err := n.rt.Disconnect(ctx, name); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		n.log.Warn("disconnect a stale copy", "container", name, "err", err)
	}
	if st, err := n.rt.State(ctx, name); err == nil && st.Status != runtime.StatusStopped {
		if err := n.rt.Stop(ctx, name, 0); err != nil {
			return true, fmt.Errorf("stop the stale copy of %s: %w", name, err)
		}
	}
	vol, rep := volumeName(name), migration.ReplicaVolume(name)
	snaps, err := d.ListSnapshots(ctx, vol)
	if err == nil && slices.Contains(snaps, snap) {
		if err := d.DeleteVolume(ctx, rep); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return true, err
		}
		// The recorded snapshot stays, and the replication snapshots after
		// it: a round whose stream reached the new owner's replica just
		// before this member died went unrecorded, and the new owner,
		// promoted at that round, increments from it (Replicator.Replicate).
		keep := false
		for _, s := range snaps {
			keep = keep || s == snap
			if keep && strings.HasPrefix(s, ha.SnapshotPrefix) {
				continue
			}
			if err := d.DeleteSnapshot(ctx, vol, s); err != nil {
				return true, fmt.Errorf("stale copy of %s: %w", name, err)
			}
		}
		if err := d.RenameVolume(ctx, vol, rep); err != nil {
			return true, fmt.Errorf("keep the stale copy of %s as its replica: %w", name, err)
		}
		n.log.Warn("kept the stale copy of a container healed elsewhere as its replica; the owner's next round brings it up to date",
			"container", name, "owner", ct.GetNode(), "snapshot", snap)
		n.bus.Lifecycle(n.cfg.Name, "container-stale-kept", name)
		for _, key := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
			pool, vname, _ := strings.Cut(key, "/")
			if err := n.keepCustomAsReplica(ctx, pool, vname, snap); err != nil {
				n.log.Warn("keep the stale copy of a storage volume as its replica", "volume", key, "err", err)
			}
		}
	} else {
		n.log.Warn("dropping the stale copy of a container healed elsewhere: it lacks the snapshot its replica would be based on",
			"container", name, "owner", ct.GetNode(), "snapshot", snap, "err", err)
		for _, key := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
			pool, vname, _ := strings.Cut(key, "/")
			n.dropStaleCustom(ctx, pool, vname)
		}
	}
	return true, n.removeLocal(ctx, name)
}

// SetFenced marks this member fenced (cut off from a Raft quorum for
// longer than the fence lease): while it is, no HA container starts here,
// since the cluster may be starting it elsewhere.
func (n *Node) SetFenced(fenced bool) { n.fenced.Store(fenced) }

// Fenced reports whether this member is fenced.
func (n *Node) Fenced() bool { return n.fenced.Load() }

// FenceContainer stops an HA container this member runs because the
// member is fenced: frozen first (at once, so it stops answering), then
// killed.
func (n *Node) FenceContainer(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	st, err := n.rt.State(ctx, name)
	if err != nil || st.Status == runtime.StatusStopped {
		return nil
	}
	if err := n.rt.Freeze(ctx, name); err != nil {
		n.log.Warn("freeze a fenced container", "container", name, "err", err)
	}
	if err := n.rt.Stop(ctx, name, 0); err != nil {
		return fmt.Errorf("stop fenced container %s: %w", name, err)
	}
	n.log.Warn("stopped an HA container: this member is fenced (no Raft quorum)", "container", name)
	return nil
}

// sweepCustomReplicas deletes the replicas of custom volumes this member
// holds that no HA container's record needs here any more (detached,
// deleted, HA turned off, replicas chosen elsewhere), when two sweeps in a
// row find one so: a new replica's record follows its stream.
func (n *Node) sweepCustomReplicas(ctx context.Context) {
	needed := map[string]bool{}
	for _, ct := range n.fsm.Containers() {
		if ct.GetNode() == n.cfg.Name || !slices.ContainsFunc(ct.GetReplicas(), func(r *shoalv1.Replica) bool { return r.GetMember() == n.cfg.Name }) {
			continue
		}
		for _, k := range cluster.VolumeDevices(cluster.ExpandedDevices(ct)) {
			needed[k] = true
		}
	}
	n.poolsMu.RLock()
	pools := maps.Clone(n.pools)
	n.poolsMu.RUnlock()
	n.replicaMu.Lock()
	defer n.replicaMu.Unlock()
	seen := n.unneededCustom
	n.unneededCustom = map[string]bool{}
	for pool, d := range pools {
		vols, err := d.ListVolumes(ctx, "replicas-custom/")
		if err != nil {
			continue
		}
		for _, v := range vols {
			key := cluster.VolumeKey(pool, strings.TrimPrefix(v, "replicas-custom/"))
			if needed[key] {
				continue
			}
			if !seen[key] {
				n.unneededCustom[key] = true
				continue
			}
			if err := d.DeleteVolume(ctx, v); err != nil && !errors.Is(err, storage.ErrNotFound) {
				n.log.Warn("delete a storage volume replica", "volume", key, "err", err)
				continue
			}
			n.log.Info("deleted a storage volume replica this member no longer needs", "volume", key)
		}
	}
}

// PoolsFree returns the free bytes of each storage pool on this host (the
// filesystem's space available to its root), for the gossip that tells
// owners where a replica fits. A pool that cannot be read is left out.
func (n *Node) PoolsFree() map[string]int64 {
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	out := make(map[string]int64, len(n.pools))
	for name, d := range n.pools {
		var st unix.Statfs_t
		if err := unix.Statfs(poolDir(d), &st); err != nil {
			continue
		}
		out[name] = int64(st.Bavail) * st.Bsize
	}
	return out
}
