package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Custom storage volumes: the cluster records each (pool, name, member);
// calls about one run on its member (forwardUnary, volumeFields), which
// does the host's part (node) and records the result.

// volume reads a custom volume's record, confirming a miss with the leader.
func (s *Server) volume(ctx context.Context, pool, name string) (*shoalv1.StorageVolume, error) {
	if pool == "" {
		return nil, invalid("pool", "a storage pool is required")
	}
	if name == "" {
		return nil, invalid("name", "a volume name is required")
	}
	v, err := s.fsm.Volume(pool, name)
	if errors.Is(err, cluster.ErrNotFound) && s.cl.Sync(ctx) == nil {
		v, err = s.fsm.Volume(pool, name)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return v, nil
}

// volumeSize is a volume config's size in bytes (0: none), refused on a
// pool of this member whose driver enforces no quotas.
func (s *Server) volumeSize(pool string, cfg map[string]string) (int64, error) {
	v, ok := cfg["size"]
	if !ok {
		return 0, nil
	}
	size, err := config.ParseSize(v)
	if err != nil {
		return 0, invalid("config.size", err.Error())
	}
	d, err := s.node.Pool(pool)
	if err != nil {
		return 0, toStatus(fmt.Errorf("pool: %w", err))
	}
	if !d.Info().Quotas {
		return 0, invalid("config.size", fmt.Sprintf("pool %s (%s) enforces no sizes: create a btrfs pool with btrfs.quotas=true for sized volumes", pool, d.Info().Name))
	}
	return size, nil
}

// ListStorageVolumes lists custom volumes.
func (s *Server) ListStorageVolumes(ctx context.Context, req *shoalv1.ListStorageVolumesRequest) (*shoalv1.ListStorageVolumesResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	if req.GetPool() != "" {
		if _, err := s.fsm.Pool(req.GetPool()); err != nil {
			return nil, toStatus(fmt.Errorf("pool: %w", err))
		}
	}
	return &shoalv1.ListStorageVolumesResponse{Volumes: s.fsm.Volumes(req.GetPool())}, nil
}

// GetStorageVolume returns a custom volume with its usage (on its member).
func (s *Server) GetStorageVolume(ctx context.Context, req *shoalv1.GetStorageVolumeRequest) (*shoalv1.GetStorageVolumeResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.GetStorageVolumeResponse{Volume: v}
	if v.GetNode() == s.node.Name() {
		if resp.UsedBytes, err = s.node.CustomVolumeUsage(ctx, v.GetPool(), v.GetName()); err != nil {
			return nil, toStatus(err)
		}
	}
	return resp, nil
}

// CreateStorageVolume creates a custom volume on this member (the
// forwarder sent a request with another target there).
func (s *Server) CreateStorageVolume(ctx context.Context, req *shoalv1.CreateStorageVolumeRequest) (*shoalv1.CreateStorageVolumeResponse, error) {
	if _, err := s.fsm.Pool(req.GetPool()); err != nil {
		return nil, toStatus(fmt.Errorf("pool: %w", err))
	}
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if t := req.GetTarget(); t != "" && t != s.node.Name() {
		if _, err := s.fsm.Node(t); err != nil {
			return nil, toStatus(fmt.Errorf("target: %w", err))
		}
		return nil, precondition(fmt.Sprintf("target: member %s is not reachable from here", t))
	}
	if err := config.ValidateVolumeConfig(req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	size, err := s.volumeSize(req.GetPool(), req.GetConfig())
	if err != nil {
		return nil, err
	}
	if _, err := s.fsm.Volume(req.GetPool(), req.GetName()); err == nil {
		return nil, alreadyExists(fmt.Sprintf("name: storage volume %s already exists", cluster.VolumeKey(req.GetPool(), req.GetName())))
	}
	if err := s.node.CreateCustomVolume(ctx, req.GetPool(), req.GetName(), size); err != nil {
		return nil, toStatus(err)
	}
	v := &shoalv1.StorageVolume{Pool: req.GetPool(), Name: req.GetName(), Node: s.node.Name(),
		Description: req.GetDescription(), Config: req.GetConfig(), CreatedAtUnixNano: now()}
	if err := s.propose(ctx, &shoalv1.VolumeCreateCommand{Volume: v}); err != nil {
		_ = s.node.DeleteCustomVolume(context.WithoutCancel(ctx), v.GetPool(), v.GetName())
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "storage-volume-created", cluster.VolumeKey(v.GetPool(), v.GetName()))
	return &shoalv1.CreateStorageVolumeResponse{Volume: v}, nil
}

// UpdateStorageVolume sets and unsets a custom volume's keys; a new size
// applies at once.
func (s *Server) UpdateStorageVolume(ctx context.Context, req *shoalv1.UpdateStorageVolumeRequest) (*shoalv1.UpdateStorageVolumeResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	cfg := maps.Clone(v.GetConfig())
	if cfg == nil {
		cfg = map[string]string{}
	}
	maps.Copy(cfg, req.GetConfig())
	for _, k := range req.GetUnset() {
		if _, ok := cfg[k]; !ok {
			return nil, invalid("config."+k, "not set on storage volume "+cluster.VolumeKey(v.GetPool(), v.GetName()))
		}
		delete(cfg, k)
	}
	if err := config.ValidateVolumeConfig(cfg); err != nil {
		return nil, toStatus(err)
	}
	desc := v.GetDescription()
	if req.GetSetDescription() {
		desc = req.GetDescription()
	}
	if cfg["size"] != v.GetConfig()["size"] {
		size, err := s.volumeSize(v.GetPool(), cfg)
		if err != nil {
			return nil, err
		}
		if err := s.node.SetCustomVolumeSize(ctx, v.GetPool(), v.GetName(), size); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := s.propose(ctx, &shoalv1.VolumeUpdateCommand{Pool: v.GetPool(), Name: v.GetName(), Config: cfg, Description: desc}); err != nil {
		return nil, err
	}
	v, err = s.volume(ctx, v.GetPool(), v.GetName())
	if err != nil {
		return nil, err
	}
	return &shoalv1.UpdateStorageVolumeResponse{Volume: v}, nil
}

// DeleteStorageVolume deletes a custom volume no container uses.
func (s *Server) DeleteStorageVolume(ctx context.Context, req *shoalv1.DeleteStorageVolumeRequest) (*shoalv1.DeleteStorageVolumeResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	if err := s.propose(ctx, &shoalv1.VolumeDeleteCommand{Pool: v.GetPool(), Name: v.GetName()}); err != nil {
		return nil, err
	}
	if err := s.node.DeleteCustomVolume(ctx, v.GetPool(), v.GetName()); err != nil {
		s.log.Warn("delete a forgotten storage volume", "volume", cluster.VolumeKey(v.GetPool(), v.GetName()), "err", err)
	}
	s.bus.Lifecycle(s.node.Name(), "storage-volume-deleted", cluster.VolumeKey(v.GetPool(), v.GetName()))
	return &shoalv1.DeleteStorageVolumeResponse{}, nil
}

// CreateStorageVolumeSnapshot snapshots a custom volume.
func (s *Server) CreateStorageVolumeSnapshot(ctx context.Context, req *shoalv1.CreateStorageVolumeSnapshotRequest) (*shoalv1.CreateStorageVolumeSnapshotResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	name := req.GetSnapshot()
	if name == "" {
		name = nextSnapshotName(v.GetSnapshots())
	}
	if err := config.ValidateName("snapshot", name); err != nil {
		return nil, toStatus(err)
	}
	if slices.ContainsFunc(v.GetSnapshots(), func(sn *shoalv1.Snapshot) bool { return sn.GetName() == name }) {
		return nil, alreadyExists(fmt.Sprintf("snapshot: %q of storage volume %s already exists", name, cluster.VolumeKey(v.GetPool(), v.GetName())))
	}
	// A snapshot a failed call left behind, unrecorded, goes first.
	_ = s.node.DeleteCustomVolumeSnapshot(ctx, v.GetPool(), v.GetName(), name)
	if err := s.node.SnapshotCustomVolume(ctx, v.GetPool(), v.GetName(), name); err != nil {
		return nil, toStatus(err)
	}
	sn := &shoalv1.Snapshot{Name: name, CreatedAtUnixNano: now(), Config: v.GetConfig()}
	if err := s.propose(ctx, &shoalv1.VolumeSnapshotCreateCommand{Pool: v.GetPool(), Name: v.GetName(), Snapshot: sn}); err != nil {
		_ = s.node.DeleteCustomVolumeSnapshot(context.WithoutCancel(ctx), v.GetPool(), v.GetName(), name)
		return nil, err
	}
	return &shoalv1.CreateStorageVolumeSnapshotResponse{Snapshot: sn}, nil
}

// nextSnapshotName is snapN with N one more than the highest snapN taken.
func nextSnapshotName(snaps []*shoalv1.Snapshot) string {
	n := 0
	for _, sn := range snaps {
		if i, err := strconv.Atoi(strings.TrimPrefix(sn.GetName(), "snap")); err == nil && strings.HasPrefix(sn.GetName(), "snap") && i >= n {
			n = i + 1
		}
	}
	return "snap" + strconv.Itoa(n)
}

// volumeSnapshot finds a recorded snapshot of a custom volume.
func volumeSnapshot(v *shoalv1.StorageVolume, name string) error {
	if name == "" {
		return invalid("snapshot", "a snapshot name is required")
	}
	if !slices.ContainsFunc(v.GetSnapshots(), func(sn *shoalv1.Snapshot) bool { return sn.GetName() == name }) {
		return notFound(fmt.Sprintf("snapshot %q of storage volume %s not found", name, cluster.VolumeKey(v.GetPool(), v.GetName())))
	}
	return nil
}

// DeleteStorageVolumeSnapshot deletes a custom volume's snapshot.
func (s *Server) DeleteStorageVolumeSnapshot(ctx context.Context, req *shoalv1.DeleteStorageVolumeSnapshotRequest) (*shoalv1.DeleteStorageVolumeSnapshotResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	if err := volumeSnapshot(v, req.GetSnapshot()); err != nil {
		return nil, err
	}
	if err := s.propose(ctx, &shoalv1.VolumeSnapshotDeleteCommand{Pool: v.GetPool(), Name: v.GetName(), Snapshot: req.GetSnapshot()}); err != nil {
		return nil, err
	}
	if err := s.node.DeleteCustomVolumeSnapshot(ctx, v.GetPool(), v.GetName(), req.GetSnapshot()); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.DeleteStorageVolumeSnapshotResponse{}, nil
}

// RestoreStorageVolumeSnapshot gives a custom volume its snapshot's
// content; no running container may use it meanwhile.
func (s *Server) RestoreStorageVolumeSnapshot(ctx context.Context, req *shoalv1.RestoreStorageVolumeSnapshotRequest) (*shoalv1.RestoreStorageVolumeSnapshotResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	if err := volumeSnapshot(v, req.GetSnapshot()); err != nil {
		return nil, err
	}
	for _, name := range v.GetUsedBy() {
		ct, err := s.fsm.Container(name)
		if err == nil && ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			return nil, precondition(fmt.Sprintf("storage volume %s is used by %s, which runs: stop it first", cluster.VolumeKey(v.GetPool(), v.GetName()), name))
		}
	}
	if err := s.node.RestoreCustomVolumeSnapshot(ctx, v.GetPool(), v.GetName(), req.GetSnapshot()); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.RestoreStorageVolumeSnapshotResponse{}, nil
}

// CopyStorageVolume copies a custom volume, here or to another member, as
// an operation.
func (s *Server) CopyStorageVolume(ctx context.Context, req *shoalv1.CopyStorageVolumeRequest) (*shoalv1.CopyStorageVolumeResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	if err := config.ValidateName("new_name", req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.fsm.Volume(v.GetPool(), req.GetNewName()); err == nil {
		return nil, alreadyExists(fmt.Sprintf("new_name: storage volume %s already exists", cluster.VolumeKey(v.GetPool(), req.GetNewName())))
	}
	target := req.GetTarget()
	if target == "" {
		target = v.GetNode()
	}
	if _, err := s.fsm.Node(target); err != nil {
		return nil, toStatus(fmt.Errorf("target: %w", err))
	}
	if target != s.node.Name() && s.peers == nil {
		return nil, precondition("this node is not in a cluster")
	}
	res := "storage-volumes/" + cluster.VolumeKey(v.GetPool(), req.GetNewName())
	op := s.ops.Start("storage-volume-copy", res, func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		if target != s.node.Name() {
			return s.source.CopyVolume(ctx, migration.VolumeCopySpec{Source: v, Name: req.GetNewName(), Target: target,
				VolumeOnly: req.GetVolumeOnly(), Description: v.GetDescription()}, p)
		}
		return nil, s.copyVolumeHere(ctx, v, req.GetNewName(), req.GetVolumeOnly(), p)
	})
	return &shoalv1.CopyStorageVolumeResponse{Operation: op}, nil
}

// copyVolumeHere copies a custom volume within this member's pool.
func (s *Server) copyVolumeHere(ctx context.Context, v *shoalv1.StorageVolume, name string, volumeOnly bool, p *operations.Progress) error {
	p.Phase("copying")
	var snaps []string
	var records []*shoalv1.Snapshot
	if !volumeOnly {
		records = v.GetSnapshots()
		for _, sn := range records {
			snaps = append(snaps, sn.GetName())
		}
	}
	// A copy a failed call left behind, unrecorded, goes first.
	if err := s.node.DropCustomVolume(ctx, v.GetPool(), name); err != nil {
		return err
	}
	if err := s.node.CopyCustomVolume(ctx, v.GetPool(), v.GetName(), name, snaps); err != nil {
		return err
	}
	rec := &shoalv1.StorageVolume{Pool: v.GetPool(), Name: name, Node: s.node.Name(), Description: v.GetDescription(),
		Config: v.GetConfig(), CreatedAtUnixNano: now(), Snapshots: records}
	if err := s.cl.Propose(ctx, &shoalv1.VolumeCreateCommand{Volume: rec}); err != nil {
		_ = s.node.DeleteCustomVolume(context.WithoutCancel(ctx), v.GetPool(), name)
		return err
	}
	return nil
}

// MoveStorageVolume renames a custom volume, or moves it to another
// member, as an operation. Neither while a container uses it.
func (s *Server) MoveStorageVolume(ctx context.Context, req *shoalv1.MoveStorageVolumeRequest) (*shoalv1.MoveStorageVolumeResponse, error) {
	v, err := s.volume(ctx, req.GetPool(), req.GetName())
	if err != nil {
		return nil, err
	}
	key := cluster.VolumeKey(v.GetPool(), v.GetName())
	target := req.GetTarget()
	if target == v.GetNode() {
		target = ""
	}
	rename := req.GetNewName() != "" && req.GetNewName() != v.GetName()
	switch {
	case rename && target != "":
		return nil, invalid("target", "rename the volume and move it to another member in two steps")
	case !rename && target == "":
		return nil, invalid("new_name", "give a new name or a target member (storage volume "+key+" is on "+v.GetNode()+")")
	}
	if len(v.GetUsedBy()) > 0 {
		return nil, precondition(fmt.Sprintf("storage volume %s is used by %s: detach it first (moving a container carries its volumes)", key, strings.Join(v.GetUsedBy(), ", ")))
	}
	if rename {
		if err := config.ValidateName("new_name", req.GetNewName()); err != nil {
			return nil, toStatus(err)
		}
		if _, err := s.fsm.Volume(v.GetPool(), req.GetNewName()); err == nil {
			return nil, alreadyExists(fmt.Sprintf("new_name: storage volume %s already exists", cluster.VolumeKey(v.GetPool(), req.GetNewName())))
		}
	} else {
		if _, err := s.fsm.Node(target); err != nil {
			return nil, toStatus(fmt.Errorf("target: %w", err))
		}
		if s.peers == nil {
			return nil, precondition("this node is not in a cluster")
		}
	}
	op := s.ops.Start("storage-volume-move", "storage-volumes/"+key, func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		if target != "" {
			return s.source.MoveVolume(ctx, v, target, p)
		}
		p.Phase("renaming")
		if err := s.node.RenameCustomVolume(ctx, v.GetPool(), v.GetName(), req.GetNewName()); err != nil {
			return nil, err
		}
		if err := s.cl.Propose(ctx, &shoalv1.VolumeRenameCommand{Pool: v.GetPool(), Name: v.GetName(), NewName: req.GetNewName()}); err != nil {
			if rerr := s.node.RenameCustomVolume(context.WithoutCancel(ctx), v.GetPool(), req.GetNewName(), v.GetName()); rerr != nil {
				s.log.Error("rename a storage volume back after a failed rename", "volume", key, "err", rerr)
			}
			return nil, err
		}
		return map[string]string{"name": req.GetNewName()}, nil
	})
	return &shoalv1.MoveStorageVolumeResponse{Operation: op}, nil
}

// volumeMember is the member where the custom volumes a devices map
// attaches live ("" when it attaches none). They must all be on one
// member, and exist.
func (s *Server) volumeMember(devs map[string]*shoalv1.Device) (string, error) {
	member, first := "", ""
	for _, k := range cluster.VolumeDevices(devs) {
		pool, name, _ := strings.Cut(k, "/")
		v, err := s.fsm.Volume(pool, name)
		if err != nil {
			return "", toStatus(err)
		}
		if member != "" && v.GetNode() != member {
			return "", precondition(fmt.Sprintf("storage volumes %s (on %s) and %s (on %s) are on different members: a container can attach volumes of its own member only", first, member, k, v.GetNode()))
		}
		member, first = v.GetNode(), k
	}
	return member, nil
}

// checkVolumesOn refuses devices attaching custom volumes that are not on
// member (the container's).
func (s *Server) checkVolumesOn(container, member string, devs map[string]*shoalv1.Device) error {
	at, err := s.volumeMember(devs)
	if err != nil || at == "" || at == member {
		return err
	}
	return precondition(fmt.Sprintf("container %s is on %s but the storage volumes it would attach are on %s: move the container there first, or the volume here (shoal storage volume move)", container, member, at))
}
