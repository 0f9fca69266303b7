package node

import (
	"context"
	"errors"
	"fmt"
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
// holds one (healing gave it the container): a copy-on-write clone of the
// replica's newest snapshot, whose data is as of when the old owner took
// it. The replica volume itself goes (the owner holds none of its own).
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
	if err := d.CloneSnapshot(ctx, rep, snap, volumeName(ct.GetName())); err != nil {
		return false, fmt.Errorf("promote the replica of %s (snapshot %s): %w", ct.GetName(), snap, err)
	}
	if err := d.DeleteVolume(ctx, rep); err != nil {
		n.log.Warn("delete the promoted replica", "container", ct.GetName(), "err", err)
	}
	n.log.Info("promoted this member's replica to the container's volume", "container", ct.GetName(), "snapshot", snap)
	n.bus.Lifecycle(n.cfg.Name, "container-promoted", ct.GetName())
	return true, nil
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
