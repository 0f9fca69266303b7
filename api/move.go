package api

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Moves run in the engine (migration.Source.Move and LiveMove); the API
// checks the request, picks the target and starts the operation.

// MoveContainer moves a container to another member as an operation.
func (s *Server) MoveContainer(ctx context.Context, req *shoalv1.MoveContainerRequest) (*shoalv1.MoveContainerResponse, error) {
	ct, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	if s.peers == nil {
		return nil, precondition("this node is not in a cluster")
	}
	target, err := s.moveTarget(ct, req.GetTarget())
	if err != nil {
		return nil, err
	}
	// As in LXD, migration.stateful=true makes a running container's moves
	// live by default.
	live := (req.GetLive() || config.Bool(cluster.ExpandedConfig(ct), "migration.stateful")) &&
		ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED
	if live {
		if ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_FROZEN {
			return nil, precondition(fmt.Sprintf("container %q is paused: resume it, or move it without --live", ct.GetName()))
		}
		if err := migration.CheckLive(ct); err != nil {
			return nil, precondition(err.Error())
		}
		if err := s.node.CanCheckpoint(ctx); err != nil {
			return nil, precondition(err.Error() + " (move it without --live)")
		}
	}
	return &shoalv1.MoveContainerResponse{Operation: s.startMove(ct, target, live)}, nil
}

// startMove starts the operation that moves a container this member owns.
func (s *Server) startMove(ct *shoalv1.Container, target string, live bool) *shoalv1.Operation {
	return s.ops.Start("container-move", "containers/"+ct.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		if live {
			return s.source.LiveMove(ctx, ct, target, p)
		}
		return s.source.Move(ctx, ct, target, p)
	})
}

// moveTarget checks a requested target, or asks the scheduler for one
// other than the current owner.
func (s *Server) moveTarget(ct *shoalv1.Container, target string) (string, error) {
	if target == ct.GetNode() {
		return "", invalid("target", fmt.Sprintf("container %q already runs on %s", ct.GetName(), target))
	}
	snap, err := s.fsm.SchedulerSnapshot()
	if err != nil {
		return "", toStatus(err)
	}
	_ = snap.SetStatus(ct.GetNode(), scheduler.StatusEvacuated) // never back onto the owner
	req, err := cluster.PlacementRequest(ct.GetName(), cluster.ExpandedConfig(ct), target)
	if err != nil {
		return "", toStatus(err)
	}
	node, _, err := scheduler.Place(snap, req, s.currentStrategy())
	if err != nil {
		return "", toStatus(err)
	}
	return node, nil
}

// moveAndWait moves a container to target through its owner and waits for
// the move to end.
func (s *Server) moveAndWait(ctx context.Context, ct *shoalv1.Container, target string, live bool) error {
	if ct.GetNode() == s.node.Name() {
		done, err := s.ops.Wait(ctx, s.startMove(ct, target, live).GetId())
		if err != nil {
			return err
		}
		return opErr(done)
	}
	c, err := s.memberConn(ct.GetNode())
	if err != nil {
		return err
	}
	octx := s.outgoing(ctx)
	resp, err := shoalv1.NewContainerServiceClient(c).MoveContainer(octx, &shoalv1.MoveContainerRequest{Name: ct.GetName(), Target: target, Live: live})
	if err != nil {
		return err
	}
	w, err := shoalv1.NewOperationServiceClient(c).WaitOperation(octx, &shoalv1.WaitOperationRequest{Id: resp.GetOperation().GetId()})
	if err != nil {
		return err
	}
	return opErr(w.GetOperation())
}

// opErr turns a finished operation into its error.
func opErr(op *shoalv1.Operation) error {
	if op.GetStatus() == shoalv1.OperationStatus_OPERATION_STATUS_SUCCESS {
		return nil
	}
	return status.Error(codes.Code(op.GetErrorCode()), op.GetError())
}
