package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/failpoint"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// A live move (stop-and-copy with CRIU; this kernel has no memory dirty
// tracking, so no pre-copy):
//
//  1. while the container runs, a read-only snapshot of its volume (and
//     its user snapshots) streams to the target;
//  2. freeze; CRIU dumps the frozen container, which stays frozen here;
//  3. one RestoreContainer stream carries the volume's increment since the
//     snapshot of step 1 and the CRIU images; the target restores the
//     container frozen and answers RESTORED;
//  4. one Raft entry makes the target the owner; the target thaws its copy
//     (the end of the downtime) and the source drops its own.
//
// Until step 4 commits, any failure removes the target's copy and thaws
// the source: the container runs in exactly one place throughout.

// commitWait bounds how long a target holding a restored, frozen copy
// waits for a commit after its stream broke (the source may have died
// mid-commit). The source's own commit attempt is bounded by a shorter
// proposeTimeout, so a commit can never land after the target gave up.
const (
	commitWait     = 30 * time.Second
	proposeTimeout = 10 * time.Second
	// restoreTimeout bounds a target's CRIU restore.
	restoreTimeout = 2 * time.Minute
)

// Live-move modes (migration.mode).
const (
	modePostCopy    = "postcopy"
	modeStopAndCopy = "stop-and-copy"
	modePreCopy     = "precopy"
	modeAuto        = "auto"

	// postCopyTimeout bounds how long the source serves pages after the
	// commit (the target pulls them in the background at link speed).
	postCopyTimeout = 10 * time.Minute
	pageSize        = 4096

	// postCopyFrom is the memory use above which auto prefers post-copy:
	// lazy pages cost about 0.2 s of fixed downtime here (the page server
	// and the lazy-pages daemon), which copying this much memory during
	// the freeze would cost too (bench/live.sh).
	postCopyFrom = 64 << 20
)

// liveMode picks how to move memory: migration.mode, else post-copy where
// both hosts can, else stop-and-copy. Pre-copy needs memory dirty
// tracking, which these kernels lack: asked for, it is refused with the
// reason; migration.incremental.memory falls back with a note.
func (s *Server) liveMode(ctx context.Context, ct *shoalv1.Container, targetPostCopy bool) (mode, note string, err error) {
	cfg := ct.GetConfig()
	want := cfg["migration.mode"]
	if want == "" {
		want = modeAuto
	}
	canPost := targetPostCopy && s.node.CanPostCopy(ct)
	switch want {
	case modeStopAndCopy:
		return modeStopAndCopy, "", nil
	case modePostCopy:
		if !canPost {
			return "", "", precondition(fmt.Sprintf("migration.mode=postcopy: %s and its target cannot both restore with lazy pages (userfaultfd; for unprivileged containers vm.unprivileged_userfaultfd=1): use auto or stop-and-copy", ct.GetName()))
		}
		return modePostCopy, "", nil
	case modePreCopy:
		if !s.node.CanPreCopy() {
			return "", "", precondition("migration.mode=precopy: this host has no memory dirty tracking (CONFIG_MEM_SOFT_DIRTY), so CRIU cannot pre-dump: use auto, postcopy or stop-and-copy")
		}
		// Pre-dump rounds are not implemented; no host here can run them.
		return "", "", precondition("migration.mode=precopy is not implemented yet: use auto, postcopy or stop-and-copy")
	}
	if config.Bool(cfg, "migration.incremental.memory") && !s.node.CanPreCopy() {
		note = "pre-copy unavailable (no memory dirty tracking); "
	}
	if !canPost {
		return modeStopAndCopy, note + "post-copy unavailable; stop-and-copy", nil
	}
	if mem := s.node.State(ctx, ct, false).GetMemoryBytes(); mem < postCopyFrom {
		return modeStopAndCopy, fmt.Sprintf("%sstop-and-copy: %d MiB of memory moves faster in the freeze than post-copy's setup", note, mem>>20), nil
	}
	return modePostCopy, strings.TrimSuffix(note, "; "), nil
}

// pageServerAddr picks where CRIU's page server listens for the target:
// this member's cluster address and a free port.
func (s *Server) pageServerAddr() (string, int, error) {
	host, _, err := net.SplitHostPort(s.node.Address())
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("post-copy needs this member's cluster address: %v", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", 0, fmt.Errorf("page server port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return host, port, nil
}

// liveMoveTo runs a live move on the owner.
func (s *Server) liveMoveTo(ctx context.Context, ct *shoalv1.Container, target string, p *operations.Progress) (map[string]string, error) {
	name, source := ct.GetName(), ct.GetNode()
	start := time.Now()
	if err := s.node.CanCheckpoint(ctx); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	d, err := s.node.Pool(ct.GetPool())
	if err != nil {
		return nil, err
	}
	release := s.node.HoldForMove(name)
	defer release()
	vol := node.VolumeName(name)
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	snapA, snapB := "move-"+id+"-a", "move-"+id+"-b"

	// 1. The volume, while the container runs.
	if err := d.CreateSnapshot(ctx, vol, snapA); err != nil {
		return nil, err
	}
	defer d.DeleteSnapshot(context.WithoutCancel(ctx), vol, snapA)
	var snaps []string
	for _, sn := range ct.GetSnapshots() {
		snaps = append(snaps, sn.GetName())
	}
	header := &shoalv1.VolumeHeader{Version: migration.Version, Container: name, Pool: ct.GetPool(), Snapshots: append(snaps, snapA)}
	sentVol, vresp, err := s.sendVolumeResp(ctx, d, vol, header, target, p)
	if err != nil {
		s.abortTarget(name, target)
		return nil, fmt.Errorf("live move of %s to %s failed while sending the volume; it keeps running on %s: %w", name, target, source, err)
	}
	mode, note, err := s.liveMode(ctx, ct, vresp.GetPostCopy())
	if err != nil {
		s.abortTarget(name, target)
		return nil, err
	}

	if err := failpoint.Hit("live-move-before-freeze"); err != nil {
		s.abortTarget(name, target)
		return nil, err
	}

	// From the freeze on, a failure thaws the source.
	giveUp := func(stage string, cause error) error {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := s.node.Thaw(bg, name); err != nil {
			s.log.Error("thaw after a failed live move", "container", name, "err", err)
		}
		return fmt.Errorf("live move of %s to %s failed while %s; it keeps running on %s: %w", name, target, stage, source, cause)
	}

	// 2. Freeze and dump.
	p.Phase("checkpointing")
	frozenAt := time.Now()
	if err := s.node.Freeze(ctx, name); err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("freezing", err)
	}
	dir, err := s.node.NewCheckpointDir(name)
	if err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("checkpointing", err)
	}
	defer os.RemoveAll(dir)
	var lazy *runtime.LazyDump
	pageServer := ""
	var pageKeys *shoalv1.PageServerKeys
	if mode == modePostCopy {
		host, port, err := s.pageServerAddr()
		if err == nil {
			lazy, pageKeys, err = s.node.StartLazyCheckpoint(ctx, name, dir, host, port)
		}
		if err != nil {
			s.abortTarget(name, target)
			return nil, giveUp("checkpointing", err)
		}
		pageServer = net.JoinHostPort(host, strconv.Itoa(port))
		// Every way out before the commit stops serving pages first.
		defer func() {
			if lazy != nil {
				lazy.Abort()
			}
		}()
	} else if err := s.node.Checkpoint(ctx, name, dir); err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("checkpointing", err)
	}
	dumped := time.Since(frozenAt)
	if err := failpoint.Hit("live-move-after-dump"); err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("checkpointing", err)
	}
	if err := d.CreateSnapshot(ctx, vol, snapB); err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("snapshotting", err)
	}
	defer d.DeleteSnapshot(context.WithoutCancel(ctx), vol, snapB)

	// 3. The increment and the checkpoint; the target restores.
	conn, err := s.peers.conn(target)
	if err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("connecting", err)
	}
	sctx, cancel := context.WithCancel(s.outgoing(ctx))
	defer cancel()
	stream, err := shoalv1.NewMigrationServiceClient(conn).RestoreContainer(sctx)
	if err != nil {
		s.abortTarget(name, target)
		return nil, giveUp("connecting", err)
	}
	final := &shoalv1.VolumeHeader{Version: migration.Version, Container: name, Pool: ct.GetPool(),
		Snapshots: []string{snapB}, Base: snapA, Drop: []string{snapA, snapB}, Resume: true}
	if err := stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{
		Header: &shoalv1.RestoreHeader{Version: migration.Version, Container: ct, Volume: final,
			PageServer: pageServer, PageServerKeys: pageKeys}}}); err != nil {
		return nil, giveUp("sending the checkpoint", streamErr(stream, err))
	}
	phase := "sending the final state to " + target
	var progress int64
	incr, err := migration.SendVolumeFrom(ctx, d, vol, snapA, []string{snapB}, func(part *shoalv1.VolumePart) error {
		progress += int64(len(part.GetData()))
		p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Volume{Volume: part}})
	})
	if err != nil {
		return nil, giveUp("sending the volume increment", streamErr(stream, err))
	}
	corrupted := false
	ckpt, err := migration.SendCheckpoint(ctx, dir, func(part *shoalv1.CheckpointPart) error {
		progress += int64(len(part.GetData()))
		if !corrupted && len(part.GetData()) > 0 && failpoint.Hit("live-move-corrupt-checkpoint") != nil {
			corrupted = true
			part.Data[len(part.Data)/2] ^= 0xff // a bit flipped on the wire
		}
		p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Checkpoint{Checkpoint: part}})
	})
	if err != nil {
		return nil, giveUp("sending the checkpoint", streamErr(stream, err))
	}
	p.Phase("restoring on " + target)
	resp, err := stream.Recv()
	if err != nil {
		return nil, giveUp("restoring on "+target, err)
	}
	if resp.GetPhase() != shoalv1.RestorePhase_RESTORE_PHASE_RESTORED {
		_ = stream.CloseSend()
		return nil, giveUp("restoring on "+target, fmt.Errorf("target answered %s", resp.GetPhase()))
	}
	restoreMs := resp.GetRestoreMs()
	if err := failpoint.Hit("live-move-before-commit"); err != nil {
		_ = stream.CloseSend()
		return nil, giveUp("committing", err)
	}

	// 4. Commit: the one entry that moves it.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), proposeTimeout)
	err = s.cl.Propose(pctx, &shoalv1.ContainerMoveCommand{Name: name, Node: target, From: source,
		DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
	pcancel()
	if err != nil && !s.ownedBy(ctx, name, target) {
		_ = stream.CloseSend() // no commit: the target removes its copy
		return nil, giveUp("committing", err)
	}
	if err := stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Commit{Commit: true}}); err == nil {
		_ = stream.CloseSend()
		if resp, err := stream.Recv(); err != nil || resp.GetPhase() != shoalv1.RestorePhase_RESTORE_PHASE_RUNNING {
			s.log.Warn("the target did not confirm it runs the moved container; its reconciler will", "container", name, "target", target, "err", err)
		}
	}
	downtime := time.Since(frozenAt)
	if lazy != nil && failpoint.Armed("live-move-source-lost") {
		lazy.Abort() // the page server dies with its host
		_ = failpoint.Hit("live-move-source-lost")
	}
	if lazy != nil {
		// The container runs on the target; its memory still streams from
		// here. The frozen copy stays until the last page has gone.
		p.Phase("post-copy: memory pages streaming to " + target)
		if err := lazy.Wait(postCopyTimeout); err != nil {
			s.log.Warn("post-copy page server", "container", name, "err", err)
			lazy.Abort()
		}
		lazy = nil
	}
	stats, serr := migration.ReadDumpStats(dir, mode == modePostCopy)
	if serr != nil {
		s.log.Debug("no CRIU dump statistics", "container", name, "err", serr)
	}
	release()
	pagesDone := time.Now()
	if err := s.node.DropLocal(context.WithoutCancel(ctx), name); err != nil {
		s.log.Warn("drop the source copy after a live move", "container", name, "err", err)
	}
	s.log.Info("live move done", "container", name, "target", target, "mode", mode,
		"volume_phase", frozenAt.Sub(start), "downtime", downtime, "dump", dumped, "restore_ms", restoreMs,
		"pages_after_commit", pagesDone.Sub(frozenAt.Add(downtime)), "drop_source", time.Since(pagesDone), "total", time.Since(start))
	s.bus.Lifecycle(s.node.Name(), "container-moved", name)
	bytes := sentVol + incr + ckpt + stats.PagesLazy*pageSize
	return map[string]string{
		"node":                target,
		"live":                "true",
		"mode":                mode,
		"note":                note,
		"pages_before_freeze": "0",
		"pages_during_freeze": strconv.FormatInt(stats.PagesWritten, 10),
		"pages_after_freeze":  strconv.FormatInt(stats.PagesLazy, 10),
		"bytes":               strconv.FormatInt(bytes, 10),
		"checkpoint":          strconv.FormatInt(ckpt, 10),
		"took":                time.Since(start).Round(time.Millisecond).String(),
		"downtime":            downtime.Round(time.Millisecond).String(),
		"downtime_ms":         strconv.FormatInt(downtime.Milliseconds(), 10),
		"dump_ms":             strconv.FormatInt(dumped.Milliseconds(), 10),
		"restore_ms":          strconv.FormatInt(restoreMs, 10),
	}, nil
}

// watchPostCopy waits for a post-copy restore's pages. If the source went
// away before every page arrived, the memory state is gone: the container
// is booted fresh from its volume here, once, and the event says why.
func (s *Server) watchPostCopy(name, dir string, lazy *runtime.LazyPages) {
	defer os.RemoveAll(dir)
	<-lazy.Done()
	if lazy.Err() == nil {
		s.log.Info("post-copy complete: every memory page arrived", "container", name)
		return
	}
	s.log.Error("post-copy failed: the source stopped serving memory pages; booting the container fresh from its volume",
		"container", name, "err", lazy.Err())
	s.bus.Lifecycle(s.node.Name(), "container-memory-lost", name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.node.RebootFresh(ctx, name); err != nil {
		s.log.Error("boot after a failed post-copy", "container", name, "err", err)
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

// streamErr prefers the server's verdict over a local send error (a send
// fails with io.EOF when the server already returned).
func streamErr(stream shoalv1.MigrationService_RestoreContainerClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// ownedBy reports whether the cluster, read through the leader, shows node
// as the container's owner (an ambiguous commit may still have landed).
func (s *Server) ownedBy(ctx context.Context, name, node string) bool {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.cl.Sync(sctx); err != nil {
		s.log.Warn("sync after a failed commit", "err", err)
	}
	ct, err := s.fsm.Container(name)
	return err == nil && ct.GetNode() == node
}

// abortTarget tells the target to drop what a failed live move sent it: a
// RestoreContainer stream that ends right after its header.
func (s *Server) abortTarget(name, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := s.peers.conn(target)
	if err != nil {
		return
	}
	stream, err := shoalv1.NewMigrationServiceClient(conn).RestoreContainer(s.outgoing(ctx))
	if err != nil {
		return
	}
	ct := &shoalv1.Container{Name: name}
	if err := stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{
		Header: &shoalv1.RestoreHeader{Version: migration.Version, Container: ct}}}); err != nil {
		return
	}
	_ = stream.CloseSend()
	_, _ = stream.Recv()
}

// RestoreContainer is the target's side of a live move's downtime (see
// liveMoveTo).
func (s *Server) RestoreContainer(stream shoalv1.MigrationService_RestoreContainerServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be a header")
	}
	if h.GetVersion() != migration.Version {
		return status.Errorf(codes.FailedPrecondition, "restore stream version %d: this member speaks %d", h.GetVersion(), migration.Version)
	}
	name := h.GetContainer().GetName()
	rec, err := s.container(name)
	if err != nil {
		return err
	}
	if rec.GetNode() == s.node.Name() {
		return status.Errorf(codes.FailedPrecondition, "container %q is already owned by this node", name)
	}
	// Work on, and clean up, even when the stream breaks.
	ctx := context.WithoutCancel(stream.Context())
	abort := func(cause error) error {
		if err := s.node.AbortIncoming(ctx, name); err != nil {
			s.log.Warn("remove an aborted incoming move", "container", name, "err", err)
		}
		return cause
	}
	if h.GetVolume() == nil {
		return abort(status.Errorf(codes.Aborted, "live move of %q aborted by %s", name, rec.GetNode()))
	}
	_ = failpoint.Hit("restore-receive")
	d, err := s.node.Pool(h.GetVolume().GetPool())
	if err != nil {
		return abort(toStatus(err))
	}
	vr, err := migration.NewReceiver(d, node.VolumeName(name), h.GetVolume())
	if err != nil {
		return abort(status.Error(codes.FailedPrecondition, err.Error()))
	}
	dir, err := s.node.NewCheckpointDir(name)
	if err != nil {
		return abort(toStatus(err))
	}
	keepDir := false
	defer func() {
		if !keepDir {
			os.RemoveAll(dir)
		}
	}()
	cr, err := migration.NewCheckpointReceiver(dir)
	if err != nil {
		return abort(toStatus(err))
	}
	for !cr.Complete() {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Aborted, "the sender ended the stream before the checkpoint was complete")
		}
		if err == nil {
			switch {
			case m.GetVolume() != nil:
				err = vr.Apply(ctx, m.GetVolume())
			case m.GetCheckpoint() != nil:
				err = cr.Apply(m.GetCheckpoint())
			default:
				err = invalid("msg", "volume or checkpoint parts expected before the commit")
			}
		}
		if err != nil {
			vr.Abort()
			cr.Abort()
			if errors.Is(err, migration.ErrCorrupt) {
				err = status.Error(codes.DataLoss, err.Error())
			}
			return abort(toStatus(err))
		}
	}
	n, err := vr.Finish(ctx)
	if err != nil {
		return abort(status.Error(codes.DataLoss, err.Error()))
	}
	t0 := time.Now()
	var lazy *runtime.LazyPages
	if ps := h.GetPageServer(); ps != "" {
		host, port, err := splitHostPort(ps)
		if err == nil {
			lazy, err = s.node.StartLazyPages(ctx, dir, host, port, h.GetPageServerKeys())
		}
		if err != nil {
			return abort(status.Errorf(codes.FailedPrecondition, "post-copy: %v", err))
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
					s.log.Warn("post-copy: the lazy-pages daemon failed during the restore", "container", name, "err", lazy.Err())
					cancelRestore()
				}
			case <-rctx.Done():
			}
		}()
	}
	err = s.node.RestoreIncoming(rctx, rec, dir, lazy != nil)
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
				s.log.Warn("live move: restore failed; CRIU's log kept", "container", name, "log", kept)
			}
		}
		return abort(toStatus(err))
	}
	took := time.Since(t0)
	if err := stream.Send(&shoalv1.RestoreContainerResponse{Phase: shoalv1.RestorePhase_RESTORE_PHASE_RESTORED,
		Bytes: n + cr.Bytes(), RestoreMs: took.Milliseconds()}); err != nil {
		s.log.Warn("live move: the sender went away after the restore", "container", name, "err", err)
	}
	m, err := stream.Recv()
	wait := commitWait
	if err == nil && m.GetCommit() {
		wait = proposeTimeout // committed: it only has to reach this member
	} else if errors.Is(err, io.EOF) || err == nil {
		return abort(status.Errorf(codes.Aborted, "live move of %q not committed by %s", name, rec.GetNode()))
	}
	// Committed, or the stream broke mid-commit: run it once the cluster
	// says this member owns it; otherwise drop it.
	if err := s.node.CommitIncoming(ctx, name, wait); err != nil {
		return abort(toStatus(err))
	}
	s.log.Info("live move restored here", "container", name, "restore", took, "post_copy", lazy != nil)
	if lazy != nil {
		keepDir = true
		go s.watchPostCopy(name, dir, lazy)
	}
	return stream.Send(&shoalv1.RestoreContainerResponse{Phase: shoalv1.RestorePhase_RESTORE_PHASE_RUNNING})
}
