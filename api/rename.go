package api

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// RenameContainer renames a stopped container (LXD's rename and two-name
// move). It runs on the owner (containerField): the node renames the host
// objects right after the cluster's one entry (node/rename.go).
func (s *Server) RenameContainer(ctx context.Context, req *shoalv1.RenameContainerRequest) (*shoalv1.RenameContainerResponse, error) {
	ct, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	if err := config.ValidateName("new_name", req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetNewName() == ct.GetName() {
		return nil, invalid("new_name", fmt.Sprintf("%q is the container's name already", req.GetNewName()))
	}
	if _, err := s.fsm.Container(req.GetNewName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "new_name: container %q already exists", req.GetNewName())
	}
	if st := s.node.State(ctx, ct, false); ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED || st.GetStatus() != "Stopped" {
		return nil, precondition(fmt.Sprintf("Renaming of running instance not allowed: %q is %s; stop it first", ct.GetName(), st.GetStatus()))
	}
	commit := func(ctx context.Context) error {
		return s.propose(ctx, &shoalv1.ContainerRenameCommand{Name: ct.GetName(), NewName: req.GetNewName()})
	}
	if err := s.node.RenameContainer(ctx, ct, req.GetNewName(), commit); err != nil {
		return nil, toStatus(err)
	}
	if err := s.node.Reconcile(ctx, req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	s.bus.Lifecycle(s.node.Name(), "container-renamed", req.GetNewName())
	renamed, err := s.container(req.GetNewName())
	if err != nil {
		return nil, err
	}
	return &shoalv1.RenameContainerResponse{Container: s.info(ctx, renamed, false)}, nil
}

// RenameSnapshot renames a container's snapshot on the host, then in the
// cluster (put back if the cluster refuses).
func (s *Server) RenameSnapshot(ctx context.Context, req *shoalv1.RenameSnapshotRequest) (*shoalv1.RenameSnapshotResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	sn, err := snapshotOf(ct, req.GetName())
	if err != nil {
		return nil, err
	}
	if err := config.ValidateSnapshotName("new_name", req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := snapshotOf(ct, req.GetNewName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "new_name: snapshot %q of %q already exists", req.GetNewName(), ct.GetName())
	}
	if err := s.node.RenameSnapshot(ctx, ct, req.GetName(), req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.propose(ctx, &shoalv1.SnapshotRenameCommand{Container: ct.GetName(), Name: req.GetName(), NewName: req.GetNewName()}); err != nil {
		if uerr := s.node.RenameSnapshot(context.WithoutCancel(ctx), ct, req.GetNewName(), req.GetName()); uerr != nil {
			s.log.Error("put a snapshot's name back", "container", ct.GetName(), "snapshot", req.GetNewName(), "err", uerr)
		}
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "container-snapshot-renamed", ct.GetName()+"/"+req.GetNewName())
	sn.Name = req.GetNewName()
	return &shoalv1.RenameSnapshotResponse{Snapshot: sn}, nil
}
