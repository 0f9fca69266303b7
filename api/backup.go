package api

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/backup"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Backups: the API checks the request, forwards it to the member that
// owns the container (export) or is to own it (import: the header's
// target), and streams; node does the host work (node/backup.go) and
// node/backup the format.

// ExportContainer streams a backup tarball of a container: a BackupInfo
// first, then data.
func (s *Server) ExportContainer(req *shoalv1.ExportContainerRequest, stream shoalv1.ContainerService_ExportContainerServer) error {
	switch req.GetCompression() {
	case "", backup.Gzip, backup.None:
	default:
		return invalid("compression", fmt.Sprintf("%q: gzip or none", req.GetCompression()))
	}
	ct, err := s.container(req.GetName())
	if err != nil {
		return err
	}
	if owner := s.ownerOf(stream.Context(), ct.GetName()); owner != "" {
		rs, err := s.remoteStream(stream.Context(), owner, "/shoal.v1.ContainerService/ExportContainer", true, false)
		if err != nil {
			return err
		}
		none := func() (*shoalv1.ExportContainerRequest, error) { return nil, io.EOF }
		return proxyStream(stream.Context(), stream.Send, none, rs, req, true,
			func() *shoalv1.ExportContainerResponse { return &shoalv1.ExportContainerResponse{} })
	}
	if ct.GetNode() != s.node.Name() {
		return precondition(fmt.Sprintf("container %s is on %s, which this member cannot reach", ct.GetName(), ct.GetNode()))
	}
	bw := bufio.NewWriterSize(streamWriter(func(b []byte) error {
		return stream.Send(&shoalv1.ExportContainerResponse{Msg: &shoalv1.ExportContainerResponse_Data{Data: b}})
	}), chunkSize)
	opts := node.BackupOptions{InstanceOnly: req.GetInstanceOnly(), Optimized: req.GetOptimizedStorage(), Compression: req.GetCompression()}
	err = s.node.ExportBackup(stream.Context(), ct, opts, bw, func(ix *backup.Index, size int64) error {
		return stream.Send(&shoalv1.ExportContainerResponse{Msg: &shoalv1.ExportContainerResponse_Info{Info: backupInfo(ix, size, cmp.Or(req.GetCompression(), backup.Gzip))}})
	})
	if err == nil {
		err = bw.Flush()
	}
	return toStatus(err)
}

func backupInfo(ix *backup.Index, size int64, compression string) *shoalv1.BackupInfo {
	return &shoalv1.BackupInfo{Name: ix.Name, Pool: ix.Pool, Backend: ix.Backend, Optimized: ix.Optimized,
		Snapshots: ix.Snapshots, Size: size, Compression: compression}
}

// ImportContainer recreates a container, stopped, from a backup tarball:
// a header, then data.
func (s *Server) ImportContainer(stream shoalv1.ContainerService_ImportContainerServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be a header")
	}
	if h.GetName() != "" {
		if err := s.nameFree(ctx, h.GetName()); err != nil {
			return err
		}
	}
	if t := h.GetTarget(); t != "" {
		if _, err := s.fsm.Node(t); err != nil {
			return toStatus(fmt.Errorf("target: member %q: %w", t, err))
		}
	}
	if h.GetPool() != "" {
		if _, err := s.fsm.Pool(h.GetPool()); err != nil {
			return toStatus(fmt.Errorf("pool: %w", err))
		}
	}
	id, _ := ctx.Value(identityKey{}).(identity)
	if owner := s.targetOwner(ctx, h.GetTarget()); owner != "" {
		if id.grant != nil {
			// The record is in the data, which only the target reads,
			// and the target sees this member as the caller.
			return status.Errorf(codes.PermissionDenied, "%s may import only on the member it calls (target %s)", id, owner)
		}
		rs, err := s.remoteStream(ctx, owner, "/shoal.v1.ContainerService/ImportContainer", false, true)
		if err != nil {
			return err
		}
		return proxyStream(ctx, stream.SendAndClose, stream.Recv, rs, first, true,
			func() *shoalv1.ImportContainerResponse { return &shoalv1.ImportContainerResponse{} })
	}
	pr := streamReader(func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	})
	var rec *shoalv1.Container
	var ix *backup.Index
	err = s.node.ImportBackup(ctx, pr, func(got *backup.Index) (node.ImportTarget, error) {
		ix = got
		var err error
		if rec, err = s.importRecord(ctx, h, got, id); err != nil {
			return node.ImportTarget{}, err
		}
		return node.ImportTarget{
			Name: rec.GetName(), Pool: rec.GetPool(),
			Privileged: config.Bool(rec.GetExpandedConfig(), "security.privileged"),
			Commit: func(ctx context.Context) error {
				return s.propose(ctx, &shoalv1.ContainerCreateCommand{Container: rec})
			},
		}, nil
	})
	pr.CloseWithError(err)
	if err != nil {
		return toStatus(err)
	}
	if err := s.node.Reconcile(ctx, rec.GetName()); err != nil {
		s.log.Warn("define an imported container", "container", rec.GetName(), "err", err)
	}
	ct, err := s.container(rec.GetName())
	if err != nil {
		return err
	}
	return stream.SendAndClose(&shoalv1.ImportContainerResponse{
		Container: s.info(ctx, ct, false),
		Backup:    backupInfo(ix, 0, ""),
	})
}

// nameFree checks a new container's name.
func (s *Server) nameFree(ctx context.Context, name string) error {
	if err := config.ValidateName("name", name); err != nil {
		return toStatus(err)
	}
	s.catchUp(ctx)
	if _, err := s.fsm.Container(name); err == nil {
		return alreadyExists(fmt.Sprintf("name: container %q already exists", name))
	}
	return nil
}

// importRecord makes the new container's record from a backup's: its
// config (volatile keys dropped), profiles, devices and snapshot records;
// new hardware addresses, allocated addresses given back (static ones
// kept), stopped, on this member, in the header's pool, else the
// backup's if this cluster has it, else the default.
func (s *Server) importRecord(ctx context.Context, h *shoalv1.ImportContainerHeader, ix *backup.Index, id identity) (*shoalv1.Container, error) {
	old, err := ix.Container()
	if err != nil {
		return nil, toStatus(err)
	}
	name := cmp.Or(h.GetName(), ix.Name)
	if err := s.nameFree(ctx, name); err != nil {
		return nil, err
	}
	pool := h.GetPool()
	if pool == "" {
		if _, err := s.fsm.Pool(ix.Pool); err == nil {
			pool = ix.Pool
		} else {
			pool = s.defaultPool()
		}
	}
	p, err := s.fsm.Pool(pool)
	if err != nil {
		return nil, toStatus(fmt.Errorf("pool: %w", err))
	}
	if ix.Optimized && p.GetDriver() != ix.Backend {
		return nil, precondition(fmt.Sprintf("pool: the backup holds optimized %s streams; pool %s uses the %s driver (import into a %s pool, or export without --optimized-storage)",
			ix.Backend, pool, p.GetDriver(), ix.Backend))
	}
	cfg := maps.Clone(old.GetConfig())
	if cfg == nil {
		cfg = map[string]string{}
	}
	maps.DeleteFunc(cfg, func(k, _ string) bool { return strings.HasPrefix(k, "volatile.") })
	if err := config.Validate(cfg); err != nil {
		return nil, about("backup config", err)
	}
	if err := validateDevices(old.GetDevices()); err != nil {
		return nil, err
	}
	expCfg, expDevs, err := s.fsm.Expand(old.GetProfiles(), cfg, old.GetDevices())
	if err != nil {
		return nil, about("backup profiles", err)
	}
	if err := checkExpanded(expCfg, expDevs); err != nil {
		return nil, err
	}
	if err := s.checkHA(expCfg, expDevs, pool); err != nil {
		return nil, err
	}
	if at, err := s.volumeMember(expDevs); err != nil {
		return nil, err
	} else if at != "" && at != s.node.Name() {
		return nil, precondition(fmt.Sprintf("target: the storage volumes the container attaches are on %s; import it there (--target %s)", at, at))
	}
	if g := id.grant; g != nil {
		if !granted(g, name) {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not touch container %q (granted: %s)", id, name, grantString(g))
		}
		if len(old.GetDevices()) > 0 {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not import a container with devices (they reach the host's files and devices)", id)
		}
		for _, k := range restrictedPrivileges {
			if config.Bool(expCfg, k) {
				return nil, status.Errorf(codes.PermissionDenied, "%s may not import a container with %s", id, k)
			}
		}
	}
	ct := &shoalv1.Container{
		Name: name, ImageFingerprint: old.GetImageFingerprint(), ImageSource: old.GetImageSource(),
		Config: cfg, Node: s.node.Name(), DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED,
		CreatedAtUnixNano: now(), Pool: pool, Hwaddr: network.RandomMAC(),
		Profiles: old.GetProfiles(), Devices: old.GetDevices(),
		ExpandedConfig: expCfg, ExpandedDevices: expDevs,
	}
	for _, sn := range old.GetSnapshots() {
		for _, want := range ix.Snapshots {
			if sn.GetName() == want {
				// The process state of a stateful snapshot stays on the
				// host that took it.
				ct.Snapshots = append(ct.Snapshots, &shoalv1.Snapshot{Name: sn.GetName(), CreatedAtUnixNano: sn.GetCreatedAtUnixNano(), Config: sn.GetConfig()})
			}
		}
	}
	for i, n := range old.GetNics() {
		nic := &shoalv1.NIC{Name: n.GetName(), Network: n.GetNetwork(), Hwaddr: network.RandomMAC(), Ifname: n.GetIfname(),
			Mtu: n.GetMtu(), Nictype: n.GetNictype(), Parent: n.GetParent()}
		if n.GetIpv4Static() {
			nic.Ipv4, nic.Ipv4Static = n.GetIpv4(), true
		}
		if i == 0 {
			nic.Hwaddr = ct.GetHwaddr()
		}
		ct.Nics = append(ct.Nics, nic)
	}
	if len(ct.Nics) == 0 {
		ct.Nics = []*shoalv1.NIC{{Name: "eth0", Network: s.node.DefaultNetwork(), Hwaddr: ct.GetHwaddr()}}
	}
	return ct, nil
}
