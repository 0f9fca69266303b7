package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// ReplicaVolume names the volume holding a replica of a container on a
// member that does not own it.
func ReplicaVolume(container string) string { return "replicas/" + container }

// Replicate sends snapshot snap of ct's volume to member as its replica,
// incrementally on base when base is set (the member holds it from the
// last replication) and in full otherwise; the member then keeps snap
// alone. When the increment fails (the member lost base), the full
// snapshot is sent instead. It returns the stream bytes sent.
func (e *Source) Replicate(ctx context.Context, ct *shoalv1.Container, member, base, snap string) (int64, error) {
	d, err := e.host.Pool(ct.GetPool())
	if err != nil {
		return 0, err
	}
	if !d.Info().OptimizedSend {
		return 0, mark(ErrUnsupported, "container %q: pool %s (%s) cannot send increments: HA needs a btrfs pool", ct.GetName(), ct.GetPool(), d.Info().Name)
	}
	send := func(base string) (int64, error) {
		h := &shoalv1.VolumeHeader{Version: Version, Container: ct.GetName(), Pool: ct.GetPool(),
			Snapshots: []string{snap}, Base: base, Replica: true}
		if base != "" {
			h.Drop = []string{base}
		}
		n, _, err := e.sendVolume(ctx, d, e.host.VolumeName(ct.GetName()), h, member, orNop(nil))
		return n, err
	}
	n, err := send(base)
	if err != nil && base != "" {
		// Most often the member lost its base (ErrBaseMissing on its side):
		// a full copy starts the chain again.
		e.log.Info("incremental replication failed: sending in full", "container", ct.GetName(), "member", member, "base", base, "err", err)
		base = ""
		n, err = send(base)
	}
	if err != nil {
		return n, fmt.Errorf("replicate %s to %s: %w", ct.GetName(), member, err)
	}
	return n, nil
}

// ErrBaseMissing marks an incremental replica stream whose base the
// receiver does not hold.
var ErrBaseMissing = errors.New("replica base snapshot missing")

// receiveReplica prepares this member to take a replica stream: the
// container exists and another member owns it; a full stream replaces the
// replica volume, an incremental one needs its base here.
func (e *Target) receiveReplica(ctx context.Context, h *shoalv1.VolumeHeader) (storage.Driver, string, error) {
	name := h.GetContainer()
	ct, err := e.record(ctx, name)
	if err != nil {
		return nil, "", err
	}
	if ct.GetNode() == e.host.Name() {
		return nil, "", mark(ErrConflict, "container %q is owned by this member: its replicas go elsewhere", name)
	}
	d, err := e.host.Pool(h.GetPool())
	if err != nil {
		return nil, "", err
	}
	vol := ReplicaVolume(name)
	if h.GetBase() == "" {
		if err := d.DeleteVolume(ctx, vol); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, "", err
		}
		return d, vol, nil
	}
	for try := 0; try < 2; try++ {
		snaps, err := d.ListSnapshots(ctx, vol)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, "", err
		}
		if slices.Contains(snaps, h.GetBase()) {
			return d, vol, nil
		}
		// The base may be in this member's stale copy of a container
		// healed elsewhere, not yet made a replica (the owner's first
		// round can come before this member's resync).
		if try == 0 {
			if err := e.host.KeepAsReplica(ctx, name); err != nil {
				return nil, "", err
			}
		}
	}
	return nil, "", mark(ErrBaseMissing, "container %q: this member holds no replica snapshot %s", name, h.GetBase())
}
