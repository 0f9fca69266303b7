package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/storage"
)

// A cold move: stop (cleanly), send the volume and its snapshots to the
// target, commit the new owner in one Raft entry, start there if it ran,
// and drop the source's copy. Any failure before the commit leaves the
// source the owner and restarts it there; the target deletes what arrived.

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
	live := (req.GetLive() || config.Bool(ct.GetConfig(), "migration.stateful")) &&
		ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED
	if live {
		if ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_FROZEN {
			return nil, precondition(fmt.Sprintf("container %q is paused: resume it, or move it without --live", ct.GetName()))
		}
		if err := s.node.CanCheckpoint(ctx); err != nil {
			return nil, precondition(err.Error() + " (move it without --live)")
		}
	}
	op := s.ops.Start("container-move", "containers/"+ct.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		if live {
			return s.liveMoveTo(ctx, ct, target, p)
		}
		return s.moveTo(ctx, ct, target, p)
	})
	return &shoalv1.MoveContainerResponse{Operation: op}, nil
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
	req, err := cluster.PlacementRequest(ct.GetName(), ct.GetConfig(), target)
	if err != nil {
		return "", toStatus(err)
	}
	node, _, err := scheduler.Place(snap, req, s.currentStrategy())
	if err != nil {
		return "", toStatus(err)
	}
	return node, nil
}

// moveTo runs a cold move on the owner.
func (s *Server) moveTo(ctx context.Context, ct *shoalv1.Container, target string, p *operations.Progress) (map[string]string, error) {
	name := ct.GetName()
	wasRunning := ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED
	start := time.Now()
	if wasRunning {
		p.Phase("stopping")
		if err := s.cl.Propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: name, DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED}); err != nil {
			return nil, err
		}
		if err := s.node.Reconcile(ctx, name); err != nil {
			return nil, err
		}
	}
	// From here on, a failure gives the container back to the source.
	resume := func(cause error) error {
		bg, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if wasRunning {
			_ = s.cl.Propose(bg, &shoalv1.ContainerDesiredStateCommand{Name: name, DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
			_ = s.node.Reconcile(bg, name)
		}
		return fmt.Errorf("move %s to %s failed; it stays on %s: %w", name, target, ct.GetNode(), cause)
	}
	d, err := s.node.Pool(ct.GetPool())
	if err != nil {
		return nil, resume(err)
	}
	vol := node.VolumeName(name)
	moveSnap := "move-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := d.CreateSnapshot(ctx, vol, moveSnap); err != nil {
		return nil, resume(err)
	}
	defer d.DeleteSnapshot(context.Background(), vol, moveSnap)
	var snaps []string
	for _, sn := range ct.GetSnapshots() {
		snaps = append(snaps, sn.GetName())
	}
	snaps = append(snaps, moveSnap)

	header := &shoalv1.VolumeHeader{Version: migration.Version, Container: name, Pool: ct.GetPool(), Snapshots: snaps, DropLast: true}
	sent, err := s.sendVolume(ctx, d, vol, header, target, p)
	if err != nil {
		return nil, resume(err)
	}

	// The one entry that moves it.
	desired := shoalv1.DesiredState_DESIRED_STATE_STOPPED
	if wasRunning {
		desired = shoalv1.DesiredState_DESIRED_STATE_RUNNING
	}
	if err := s.cl.Propose(ctx, &shoalv1.ContainerMoveCommand{Name: name, Node: target, From: ct.GetNode(), DesiredState: desired}); err != nil {
		return nil, resume(err)
	}
	p.Phase("starting on " + target)
	if err := s.node.DropLocal(ctx, name); err != nil {
		s.log.Warn("drop the source copy after a move", "container", name, "err", err)
	}
	if err := s.waitRemote(ctx, name, desired); err != nil {
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "container-moved", name)
	return map[string]string{"node": target, "bytes": strconv.FormatInt(sent, 10), "took": time.Since(start).String()}, nil
}

// sendVolume streams a volume's snapshots (as the header lists them) to a
// member and returns the stream bytes sent.
func (s *Server) sendVolume(ctx context.Context, d storage.Driver, vol string, header *shoalv1.VolumeHeader, target string, p *operations.Progress) (int64, error) {
	n, _, err := s.sendVolumeResp(ctx, d, vol, header, target, p)
	return n, err
}

// sendVolumeResp is sendVolume that also returns the receiver's answer.
func (s *Server) sendVolumeResp(ctx context.Context, d storage.Driver, vol string, header *shoalv1.VolumeHeader, target string, p *operations.Progress) (int64, *shoalv1.ReceiveVolumeResponse, error) {
	phase := "sending volume to " + target
	p.Phase(phase)
	conn, err := s.peers.conn(target)
	if err != nil {
		return 0, nil, err
	}
	stream, err := shoalv1.NewMigrationServiceClient(conn).ReceiveVolume(s.outgoing(ctx))
	if err != nil {
		return 0, nil, err
	}
	if err := stream.Send(&shoalv1.ReceiveVolumeRequest{Msg: &shoalv1.ReceiveVolumeRequest_Header{Header: header}}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return 0, nil, errors.Join(err, rerr)
	}
	var progress int64
	sent, err := migration.SendVolumeFrom(ctx, d, vol, header.GetBase(), header.GetSnapshots(), func(part *shoalv1.VolumePart) error {
		progress += int64(len(part.GetData()))
		p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.ReceiveVolumeRequest{Msg: &shoalv1.ReceiveVolumeRequest_Part{Part: part}})
	})
	if err != nil {
		_, rerr := stream.CloseAndRecv()
		return sent, nil, errors.Join(err, rerr)
	}
	resp, err := stream.CloseAndRecv()
	return sent, resp, err
}

// ReceiveVolume is the target's side of a move: it receives the volume
// into its pool, or deletes what arrived when the stream fails.
func (s *Server) ReceiveVolume(stream shoalv1.MigrationService_ReceiveVolumeServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be a header")
	}
	name := h.GetContainer()
	if h.GetResume() {
		// A refresh of this node's own, stopped copy: keep its volume.
		ct, err := s.container(name)
		if err != nil {
			return err
		}
		if ct.GetNode() != s.node.Name() || ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			return status.Errorf(codes.FailedPrecondition, "container %q: a refresh needs it stopped on this node", name)
		}
	} else if h.GetCopy() {
		// A new container: no record yet; leftovers of a failed copy go.
		if err := config.ValidateName("container", name); err != nil {
			return toStatus(err)
		}
		if _, err := s.fsm.Container(name); err == nil {
			return status.Errorf(codes.AlreadyExists, "container %q already exists", name)
		}
		if err := s.node.RemoveStale(stream.Context(), name); err != nil {
			return toStatus(err)
		}
	} else {
		ct, err := s.container(name)
		if err != nil {
			return err
		}
		if ct.GetNode() == s.node.Name() {
			return status.Errorf(codes.FailedPrecondition, "container %q is already owned by this node", name)
		}
		// A copy left by an earlier, failed transfer goes first.
		if err := s.node.DropLocal(stream.Context(), name); err != nil {
			return toStatus(err)
		}
	}
	d, err := s.node.Pool(h.GetPool())
	if err != nil {
		return toStatus(err)
	}
	r, err := migration.NewReceiver(d, node.VolumeName(name), h)
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = r.Apply(stream.Context(), m.GetPart())
		}
		if err != nil {
			r.Abort()
			if errors.Is(err, migration.ErrCorrupt) {
				return status.Error(codes.DataLoss, err.Error())
			}
			return toStatus(err)
		}
	}
	n, err := r.Finish(stream.Context())
	if err != nil {
		r.Abort()
		return status.Error(codes.DataLoss, err.Error())
	}
	resp := &shoalv1.ReceiveVolumeResponse{Bytes: n}
	if !h.GetCopy() {
		if ct, err := s.fsm.Container(name); err == nil {
			resp.PostCopy = s.node.CanPostCopy(ct)
		}
	}
	return stream.SendAndClose(resp)
}

// moveAndWait moves a container to target through its owner and waits for
// the move to end.
func (s *Server) moveAndWait(ctx context.Context, ct *shoalv1.Container, target string, live bool) error {
	if ct.GetNode() == s.node.Name() {
		op := s.ops.Start("container-move", "containers/"+ct.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
			if live {
				return s.liveMoveTo(ctx, ct, target, p)
			}
			return s.moveTo(ctx, ct, target, p)
		})
		done, err := s.ops.Wait(ctx, op.GetId())
		if err != nil {
			return err
		}
		return opErr(done)
	}
	c, err := s.peers.conn(ct.GetNode())
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
