package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// ReplicaVolume names the volume holding a replica of a container on a
// member that does not own it.
func ReplicaVolume(container string) string { return "replicas/" + container }

// CustomReplicaVolume names the volume holding a replica of a custom
// storage volume (one an HA container attaches) on a member that does not
// hold the volume.
func CustomReplicaVolume(name string) string { return "replicas-custom/" + name }

// Replicate sends snapshot snap of ct's volume to member as its replica,
// incrementally on base when base is set (the member holds it from the
// last replication) and in full otherwise; the member then keeps snap
// alone. When the increment fails (the member lost base), the full
// snapshot is sent instead. The custom volumes ct attaches go first, each
// the same way (the replication round snapshotted them as snap too), so a
// replica recorded after Replicate returns has all of them. It returns the
// stream bytes sent.
func (e *Source) Replicate(ctx context.Context, ct *shoalv1.Container, member, base, snap string) (int64, error) {
	var total int64
	for _, key := range attached(ct) {
		pool, name, _ := strings.Cut(key, "/")
		n, err := e.replicateVolume(ctx, pool, e.host.CustomVolumeName(name), member, base, snap,
			&shoalv1.VolumeHeader{Version: Version, Container: ct.GetName(), Pool: pool, CustomVolume: name, Replica: true})
		total += n
		if err != nil {
			return total, fmt.Errorf("replicate %s (storage volume %s) to %s: %w", ct.GetName(), key, member, err)
		}
	}
	n, err := e.replicateVolume(ctx, ct.GetPool(), e.host.VolumeName(ct.GetName()), member, base, snap,
		&shoalv1.VolumeHeader{Version: Version, Container: ct.GetName(), Pool: ct.GetPool(), Replica: true})
	total += n
	if err != nil {
		return total, fmt.Errorf("replicate %s to %s: %w", ct.GetName(), member, err)
	}
	return total, nil
}

// replicateVolume sends one volume's replication snapshot, on base, or in
// full when there is no base or the increment fails.
func (e *Source) replicateVolume(ctx context.Context, pool, vol, member, base, snap string, h *shoalv1.VolumeHeader) (int64, error) {
	d, err := e.host.Pool(pool)
	if err != nil {
		return 0, err
	}
	if !d.Info().OptimizedSend {
		return 0, mark(ErrUnsupported, "container %q: pool %s (%s) cannot send increments: HA needs a btrfs pool", h.GetContainer(), pool, d.Info().Name)
	}
	send := func(base string) (int64, error) {
		h := proto.Clone(h).(*shoalv1.VolumeHeader)
		h.Snapshots, h.Base = []string{snap}, base
		if base != "" {
			h.Drop = []string{base}
		}
		n, _, err := e.sendVolume(ctx, d, vol, h, member, orNop(nil))
		return n, err
	}
	n, err := send(base)
	if err != nil && base != "" && !unanswered(ctx, err) {
		// Most often the member lost its base (ErrBaseMissing on its side),
		// or a volume attached since has none: a full copy starts the
		// chain again. A member that did not answer (still starting after
		// a return, or gone) gets no full copy: the next round tries the
		// increment again.
		e.log.Info("incremental replication failed: sending in full", "container", h.GetContainer(), "volume", vol, "member", member, "base", base, "err", err)
		n, err = send("")
	}
	return n, err
}

// unanswered reports whether err says the member was not reached or the
// round ran out of time, rather than that it refused the stream.
func unanswered(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
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
	if cv := h.GetCustomVolume(); cv != "" {
		vol = CustomReplicaVolume(cv)
	}
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
			// A replica needs only its base: others (rounds a dead owner
			// took that never became a base) go.
			for _, s := range snaps {
				if s != h.GetBase() {
					if err := d.DeleteSnapshot(ctx, vol, s); err != nil && !errors.Is(err, storage.ErrNotFound) {
						return nil, "", err
					}
				}
			}
			return d, vol, nil
		}
		// The base may be in this member's stale copy of a container
		// healed elsewhere, not yet made a replica (the owner's first
		// round can come before this member's resync).
		if try == 0 && h.GetCustomVolume() == "" {
			if err := e.host.KeepAsReplica(ctx, name); err != nil {
				return nil, "", err
			}
		}
	}
	return nil, "", mark(ErrBaseMissing, "container %q: this member holds no replica snapshot %s", name, h.GetBase())
}
