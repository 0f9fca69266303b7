package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// The volume operations HA replication needs on this host (cluster/ha's
// Host): the owner's replication snapshots of a container's volume, and
// the replica volumes this member holds for containers others own.

// SnapshotVolume takes a read-only snapshot of a container's volume.
func (n *Node) SnapshotVolume(ctx context.Context, ct *shoalv1.Container, snap string) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
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
// pool.
func (n *Node) DeleteReplica(ctx context.Context, container string) error {
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
	n.bus.Lifecycle(n.cfg.Name, "container-promoted", ct.GetName())
	return true, nil
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
		for _, s := range snaps {
			if s != snap {
				if err := d.DeleteSnapshot(ctx, vol, s); err != nil {
					return true, fmt.Errorf("stale copy of %s: %w", name, err)
				}
			}
		}
		if err := d.RenameVolume(ctx, vol, rep); err != nil {
			return true, fmt.Errorf("keep the stale copy of %s as its replica: %w", name, err)
		}
		n.log.Warn("kept the stale copy of a container healed elsewhere as its replica; the owner's next round brings it up to date",
			"container", name, "owner", ct.GetNode(), "snapshot", snap)
		n.bus.Lifecycle(n.cfg.Name, "container-stale-kept", name)
	} else {
		n.log.Warn("dropping the stale copy of a container healed elsewhere: it lacks the snapshot its replica would be based on",
			"container", name, "owner", ct.GetNode(), "snapshot", snap, "err", err)
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
