package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Restore is the target's side of a live move's downtime (see LiveMove):
// it receives the volume's increment and the checkpoint, restores the
// container frozen, answers RESTORED, and runs it once the cluster makes
// this member its owner. Anything short of that removes what arrived.
func (e *Target) Restore(stream RestoreServer) error {
	h, err := firstHeader[*shoalv1.RestoreContainerRequest](stream.Recv)
	if err != nil {
		return err
	}
	if h.GetVersion() != Version {
		return mark(ErrUnsupported, "restore stream version %d: this member speaks %d", h.GetVersion(), Version)
	}
	name := h.GetContainer().GetName()
	// Work on, and clean up, even when the stream breaks.
	ctx := context.WithoutCancel(stream.Context())
	rec, err := e.record(ctx, name)
	if err != nil {
		return err
	}
	if rec.GetNode() == e.host.Name() {
		return mark(ErrConflict, "container %q is already owned by this node", name)
	}
	abort := func(cause error) error {
		if err := e.host.AbortIncoming(ctx, name); err != nil {
			e.log.Warn("remove an aborted incoming move", "container", name, "err", err)
		}
		return cause
	}
	if h.GetVolume() == nil {
		return abort(mark(ErrAborted, "live move of %q aborted by %s", name, rec.GetNode()))
	}
	_ = e.hit("restore-receive")
	d, err := e.host.Pool(h.GetVolume().GetPool())
	if err != nil {
		return abort(err)
	}
	vr, err := NewReceiver(d, e.host.VolumeName(name), h.GetVolume())
	if err != nil {
		return abort(mark(ErrUnsupported, "%s", err.Error()))
	}
	dir, err := e.host.NewCheckpointDir(name)
	if err != nil {
		return abort(err)
	}
	keepDir := false
	defer func() {
		if !keepDir {
			os.RemoveAll(dir)
		}
	}()
	cr, err := NewCheckpointReceiver(dir)
	if err != nil {
		return abort(err)
	}
	for !cr.Complete() {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			err = mark(ErrAborted, "the sender ended the stream before the checkpoint was complete")
		}
		if err == nil {
			switch {
			case m.GetVolume() != nil:
				err = vr.Apply(ctx, m.GetVolume())
			case m.GetCheckpoint() != nil:
				err = cr.Apply(m.GetCheckpoint())
			default:
				err = mark(ErrInvalid, "msg: volume or checkpoint parts expected before the commit")
			}
		}
		if err != nil {
			vr.Abort()
			cr.Abort()
			return abort(err)
		}
	}
	n, err := vr.Finish(ctx)
	if err != nil {
		return abort(mark(ErrCorrupt, "%s", err.Error()))
	}
	t0 := time.Now()
	var lazy LazyPages
	if ps := h.GetPageServer(); ps != "" {
		host, port, err := splitHostPort(ps)
		if err == nil {
			lazy, err = e.host.StartLazyPages(ctx, dir, host, port, h.GetPageServerKeys())
		}
		if err != nil {
			return abort(mark(ErrUnsupported, "post-copy: %v", err))
		}
		abortNoLazy := abort
		abort = func(cause error) error {
			lazy.Abort()
			return abortNoLazy(cause)
		}
	}
	// The restore is bounded, and stops at once when the sender goes away
	// (a post-copy restore would otherwise wait on a page server it can
	// no longer reach).
	rctx, cancelRestore := context.WithTimeout(ctx, restoreTimeout)
	stopWatch := context.AfterFunc(stream.Context(), func() {
		if lazy != nil {
			lazy.Abort()
		}
		cancelRestore()
	})
	if lazy != nil {
		// A lazy-pages daemon that fails (the page server unreachable or
		// refusing it) leaves the restore waiting for pages: end it.
		go func() {
			select {
			case <-lazy.Done():
				if lazy.Err() != nil {
					e.log.Warn("post-copy: the lazy-pages daemon failed during the restore", "container", name, "err", lazy.Err())
					cancelRestore()
				}
			case <-rctx.Done():
			}
		}()
	}
	err = e.host.RestoreIncoming(rctx, rec, dir, lazy != nil)
	stopWatch()
	cancelRestore()
	if err != nil && lazy != nil {
		select {
		case <-lazy.Done():
			if lazy.Err() != nil {
				err = fmt.Errorf("post-copy: %w (restore: %v)", lazy.Err(), err)
			}
		default:
		}
	}
	if err != nil {
		if b, rerr := os.ReadFile(filepath.Join(dir, "restore.log")); rerr == nil {
			kept := dir + ".restore.log"
			if os.WriteFile(kept, b, 0o600) == nil {
				e.log.Warn("live move: restore failed; CRIU's log kept", "container", name, "log", kept)
			}
		}
		return abort(err)
	}
	took := time.Since(t0)
	if err := stream.Send(&shoalv1.RestoreContainerResponse{Phase: shoalv1.RestorePhase_RESTORE_PHASE_RESTORED,
		Bytes: n + cr.Bytes(), RestoreMs: took.Milliseconds()}); err != nil {
		e.log.Warn("live move: the sender went away after the restore", "container", name, "err", err)
	}
	m, err := stream.Recv()
	wait := commitWait
	if err == nil && m.GetCommit() {
		wait = proposeTimeout // committed: it only has to reach this member
	} else if errors.Is(err, io.EOF) || err == nil {
		return abort(mark(ErrAborted, "live move of %q not committed by %s", name, rec.GetNode()))
	}
	// Committed, or the stream broke mid-commit: run it once the cluster
	// says this member owns it; otherwise drop it.
	if err := e.host.CommitIncoming(ctx, name, wait); err != nil {
		return abort(err)
	}
	e.log.Info("live move restored here", "container", name, "restore", took, "post_copy", lazy != nil)
	if lazy != nil {
		keepDir = true
		go e.watchPostCopy(name, dir, lazy)
	}
	return stream.Send(&shoalv1.RestoreContainerResponse{Phase: shoalv1.RestorePhase_RESTORE_PHASE_RUNNING})
}

// watchPostCopy waits for a post-copy restore's pages. If the source went
// away before every page arrived, the memory state is gone: the container
// is booted fresh from its volume here, once, and the event says why.
func (e *engine) watchPostCopy(name, dir string, lazy LazyPages) {
	defer os.RemoveAll(dir)
	<-lazy.Done()
	if lazy.Err() == nil {
		e.log.Info("post-copy complete: every memory page arrived", "container", name)
		return
	}
	e.log.Error("post-copy failed: the source stopped serving memory pages; booting the container fresh from its volume",
		"container", name, "err", lazy.Err())
	e.events.Lifecycle(e.host.Name(), "container-memory-lost", name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.host.RebootFresh(ctx, name); err != nil {
		e.log.Error("boot after a failed post-copy", "container", name, "err", err)
	}
}

// splitHostPort parses host:port with a numeric port.
func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return host, port, nil
}

// Receive is the target's side of a cold move, a copy or a refresh: it
// receives the volume into its pool, or deletes what arrived when the
// stream fails.
func (e *Target) Receive(stream VolumeServer) error {
	h, err := firstHeader[*shoalv1.ReceiveVolumeRequest](stream.Recv)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	name := h.GetContainer()
	var d storage.Driver
	vol := e.host.VolumeName(name)
	switch {
	case h.GetReplica():
		if d, vol, err = e.receiveReplica(ctx, h); err != nil {
			return err
		}
	case h.GetCustomVolume() != "":
		if d, vol, err = e.receiveCustom(ctx, h); err != nil {
			return err
		}
	case h.GetResume():
		// A refresh of this node's own, stopped copy: keep its volume.
		ct, err := e.record(ctx, name)
		if err != nil {
			return err
		}
		if ct.GetNode() != e.host.Name() || ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			return mark(ErrConflict, "container %q: a refresh needs it stopped on this node", name)
		}
	case h.GetCopy():
		// A new container: no record yet; leftovers of a failed copy go.
		if err := config.ValidateName("container", name); err != nil {
			return err
		}
		if _, err := e.cl.Container(name); err == nil {
			return mark(ErrExists, "container %q already exists", name)
		}
		if err := e.host.RemoveStale(ctx, name); err != nil {
			return err
		}
	default:
		ct, err := e.record(ctx, name)
		if err != nil {
			return err
		}
		if ct.GetNode() == e.host.Name() {
			return mark(ErrConflict, "container %q is already owned by this node", name)
		}
		// A copy left by an earlier, failed transfer goes first.
		if err := e.host.DropLocal(ctx, name); err != nil {
			return err
		}
	}
	if d == nil {
		if d, err = e.host.Pool(h.GetPool()); err != nil {
			return err
		}
	}
	r, err := NewReceiver(d, vol, h)
	if err != nil {
		return mark(ErrUnsupported, "%s", err.Error())
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = r.Apply(ctx, m.GetPart())
		}
		if err != nil {
			r.Abort()
			return err
		}
	}
	n, err := r.Finish(ctx)
	if err != nil {
		r.Abort()
		return mark(ErrCorrupt, "%s", err.Error())
	}
	resp := &shoalv1.ReceiveVolumeResponse{Bytes: n}
	if !h.GetCopy() && !h.GetReplica() && h.GetCustomVolume() == "" {
		if ct, err := e.cl.Container(name); err == nil {
			resp.PostCopy = e.host.CanPostCopy(ct)
		}
	}
	return stream.SendAndClose(resp)
}

// firstHeader reads a stream's first message, which must be its header.
func firstHeader[M interface{ GetHeader() H }, H comparable](recv func() (M, error)) (H, error) {
	var none H
	m, err := recv()
	if err != nil {
		return none, err
	}
	h := m.GetHeader()
	if h == none {
		return none, mark(ErrInvalid, "header: the first message must be a header")
	}
	return h, nil
}
