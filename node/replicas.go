package node

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/shoal-dev/shoal/migration"
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

// ReplicaPath is the host path of this member's replica of a container as
// of its newest snapshot ("" when it holds none).
func (n *Node) ReplicaPath(ctx context.Context, ct *shoalv1.Container) string {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return ""
	}
	return d.Path(migration.ReplicaVolume(ct.GetName()))
}
