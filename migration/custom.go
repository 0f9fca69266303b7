package migration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Custom storage volumes travel in the same volume streams as containers'
// volumes, with VolumeHeader.custom_volume naming them: alone (a volume
// copied or moved to another member), or with the container that attaches
// them (a cold move carries each of its volumes, and commits the container
// and the volumes to the target in one entry).

// carriedVolume is one custom volume a transfer sends.
type carriedVolume struct {
	pool, name string
	d          storage.Driver
	vol        string
	snaps      []string
}

func (v carriedVolume) key() string { return cluster.VolumeKey(v.pool, v.name) }

// attached lists the custom volumes a container attaches (POOL/NAME).
func attached(ct *shoalv1.Container) []string {
	return cluster.VolumeDevices(cluster.ExpandedDevices(ct))
}

// prepareCustom snapshots one custom volume for a transfer (snap; the
// snapshot goes in the cleanups) and lists what the stream carries: its
// recorded snapshots unless volumeOnly, then the transfer's.
func (m *machine) prepareCustom(ctx context.Context, key, snap string, volumeOnly bool) (carriedVolume, error) {
	pool, name, _ := strings.Cut(key, "/")
	rec, err := m.e.cl.Volume(pool, name)
	if err != nil {
		return carriedVolume{}, err
	}
	d, err := m.e.host.Pool(pool)
	if err != nil {
		return carriedVolume{}, err
	}
	cv := carriedVolume{pool: pool, name: name, d: d, vol: m.e.host.CustomVolumeName(name)}
	if err := m.takeSnapshot(ctx, d, cv.vol, snap); err != nil {
		return carriedVolume{}, fmt.Errorf("storage volume %s: %w", key, err)
	}
	if !volumeOnly {
		have, _ := d.ListSnapshots(ctx, cv.vol)
		for _, sn := range rec.GetSnapshots() {
			if slices.Contains(have, sn.GetName()) {
				cv.snaps = append(cv.snaps, sn.GetName())
			}
		}
	}
	cv.snaps = append(cv.snaps, snap)
	return cv, nil
}

// sendCustom streams a custom volume to target, under the name as (the
// copy's name, or its own); the receiver drops the last snapshot (the
// transfer's).
func (m *machine) sendCustom(ctx context.Context, cv carriedVolume, as, target string, asCopy bool, p Progress) (int64, error) {
	return m.sendCustomWith(ctx, cv, &shoalv1.VolumeHeader{Version: Version, Pool: cv.pool, CustomVolume: as, Snapshots: cv.snaps, DropLast: true, Copy: asCopy}, target, p)
}

func (m *machine) sendCustomWith(ctx context.Context, cv carriedVolume, header *shoalv1.VolumeHeader, target string, p Progress) (int64, error) {
	sent, _, err := m.e.sendVolume(ctx, cv.d, cv.vol, header, target, p)
	if err != nil {
		return sent, fmt.Errorf("storage volume %s: %w", cv.key(), err)
	}
	return sent, nil
}

// VolumeCopySpec is a custom volume copied to another member.
type VolumeCopySpec struct {
	// Source is the volume's record (on this member).
	Source *shoalv1.StorageVolume
	// Name is the copy's name, Target the member it goes to.
	Name, Target string
	// VolumeOnly leaves the snapshots behind.
	VolumeOnly  bool
	Description string
}

// volumeTransfer is one custom volume copied or moved alone.
type volumeTransfer struct {
	*machine
	cv   carriedVolume
	sent int64
}

// CopyVolume copies a custom volume this member holds to another member
// (kind volume-copy): the volume and (unless VolumeOnly) its snapshots are
// streamed, then the copy is recorded on the target. A failure before the
// record leaves only what the target's receiver deletes.
func (e *Source) CopyVolume(ctx context.Context, spec VolumeCopySpec, p Progress) (Result, error) {
	m := e.volumeCopyRun(spec, orNop(p))
	start := time.Now()
	if err := m.run(ctx); err != nil {
		return nil, fmt.Errorf("copy storage volume %s to %s as %s: %w", cluster.VolumeKey(spec.Source.GetPool(), spec.Source.GetName()), spec.Target, spec.Name, err)
	}
	return Result{"node": spec.Target, "bytes": strconv.FormatInt(m.sent, 10), "took": time.Since(start).String()}, nil
}

func (e *engine) volumeCopyRun(spec VolumeCopySpec, p Progress) *volumeTransfer {
	src := spec.Source
	m := &volumeTransfer{machine: newMachine(e, KindVolumeCopy)}
	m.steps = []step{
		{phase: PhasePrepare, do: func(ctx context.Context) (err error) {
			if src.GetNode() != e.host.Name() {
				return mark(ErrConflict, "storage volume %s is on %s, not on this member", cluster.VolumeKey(src.GetPool(), src.GetName()), src.GetNode())
			}
			m.cv, err = m.prepareCustom(ctx, cluster.VolumeKey(src.GetPool(), src.GetName()), transferSnapshot("copy"), spec.VolumeOnly)
			return err
		}},
		{phase: PhaseSendVolume, do: func(ctx context.Context) (err error) {
			m.sent, err = m.sendCustom(ctx, m.cv, spec.Name, spec.Target, true, p)
			return err
		}},
		{phase: PhaseCommit, commits: true, do: func(ctx context.Context) error {
			rec := &shoalv1.StorageVolume{Pool: src.GetPool(), Name: spec.Name, Node: spec.Target,
				Description: spec.Description, Config: src.GetConfig(), CreatedAtUnixNano: time.Now().UnixNano()}
			if !spec.VolumeOnly {
				rec.Snapshots = src.GetSnapshots()
			}
			return e.cl.Propose(ctx, &shoalv1.VolumeCreateCommand{Volume: rec})
		}},
	}
	return m
}

// MoveVolume moves a custom volume no container uses from this member to
// target (kind volume-move): streamed, committed to the target in one
// entry, then dropped here.
func (e *Source) MoveVolume(ctx context.Context, v *shoalv1.StorageVolume, target string, p Progress) (Result, error) {
	m := e.volumeMoveRun(v, target, orNop(p))
	start := time.Now()
	if err := m.run(ctx); err != nil {
		return nil, fmt.Errorf("move storage volume %s to %s; it stays on %s: %w", cluster.VolumeKey(v.GetPool(), v.GetName()), target, e.host.Name(), err)
	}
	return Result{"node": target, "bytes": strconv.FormatInt(m.sent, 10), "took": time.Since(start).String()}, nil
}

func (e *engine) volumeMoveRun(v *shoalv1.StorageVolume, target string, p Progress) *volumeTransfer {
	key := cluster.VolumeKey(v.GetPool(), v.GetName())
	m := &volumeTransfer{machine: newMachine(e, KindVolumeMove)}
	m.steps = []step{
		{phase: PhasePrepare, do: func(ctx context.Context) (err error) {
			if v.GetNode() != e.host.Name() {
				return mark(ErrConflict, "storage volume %s is on %s, not on this member", key, v.GetNode())
			}
			if len(v.GetUsedBy()) > 0 {
				return mark(ErrConflict, "storage volume %s is used by %s: move the container (it carries the volume) or detach it", key, strings.Join(v.GetUsedBy(), ", "))
			}
			m.cv, err = m.prepareCustom(ctx, key, transferSnapshot("move"), false)
			return err
		}},
		{phase: PhaseSendVolume, do: func(ctx context.Context) (err error) {
			m.sent, err = m.sendCustom(ctx, m.cv, v.GetName(), target, false, p)
			return err
		}},
		{phase: PhaseCommit, commits: true, do: func(ctx context.Context) error {
			return e.cl.Propose(ctx, &shoalv1.VolumeMoveCommand{Pool: v.GetPool(), Name: v.GetName(), Node: target, From: e.host.Name()})
		}},
		{phase: PhaseCleanup, do: func(ctx context.Context) error {
			if err := e.host.DropCustomVolume(ctx, v.GetPool(), v.GetName()); err != nil {
				e.log.Warn("drop the source copy after a volume move", "volume", key, "err", err)
			}
			return nil
		}},
	}
	return m
}

// receiveCustom checks a custom volume stream's header and makes room
// for it: a copy's name must be free, a moving volume must be placed
// elsewhere; a leftover of an earlier, failed transfer goes.
func (e *Target) receiveCustom(ctx context.Context, h *shoalv1.VolumeHeader) (storage.Driver, string, error) {
	pool, name := h.GetPool(), h.GetCustomVolume()
	key := cluster.VolumeKey(pool, name)
	if err := config.ValidateName("volume", name); err != nil {
		return nil, "", err
	}
	rec, err := e.cl.Volume(pool, name)
	if err != nil && e.cl.Sync(ctx) == nil {
		rec, err = e.cl.Volume(pool, name)
	}
	switch {
	case h.GetBase() != "" && (err != nil || rec.GetNode() == e.host.Name()):
		return nil, "", mark(ErrConflict, "storage volume %s: an increment needs it moving here from another member", key)
	case h.GetBase() != "":
		// A live move's final increment, on what its first stream brought.
		d, err := e.host.Pool(pool)
		if err != nil {
			return nil, "", err
		}
		return d, e.host.CustomVolumeName(name), nil
	case h.GetCopy() && err == nil:
		return nil, "", mark(ErrExists, "storage volume %s already exists", key)
	case !h.GetCopy() && err != nil:
		return nil, "", err
	case !h.GetCopy() && rec.GetNode() == e.host.Name():
		return nil, "", mark(ErrConflict, "storage volume %s is already on this member", key)
	}
	if err := e.host.DropCustomVolume(ctx, pool, name); err != nil {
		return nil, "", err
	}
	d, err := e.host.Pool(pool)
	if err != nil {
		return nil, "", err
	}
	return d, e.host.CustomVolumeName(name), nil
}
