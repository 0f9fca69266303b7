package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// A live move (stop-and-copy, or post-copy with CRIU's lazy pages):
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
	ModePostCopy    = "postcopy"
	ModeStopAndCopy = "stop-and-copy"
	ModePreCopy     = "precopy"
	ModeAuto        = "auto"

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

// liveMove is the state of one live move on its source.
type liveMove struct {
	*machine
	ct            *shoalv1.Container
	name, source  string
	target        string
	p             Progress
	d             storage.Driver
	vol           string
	snapA, snapB  string
	mode, note    string
	start         time.Time
	frozenAt      time.Time
	dumped        time.Duration
	dir           string
	lazy          PageServer
	pageServer    string
	pageKeys      *shoalv1.PageServerKeys
	stream        RestoreClient
	release       func()
	sentVol, incr int64
	ckpt          int64
	restoreMs     int64
	downtime      time.Duration
	res           Result
	// vols are the custom volumes it attaches: sent while it runs (to
	// snapA), their increments in the freeze (to snapB, beside the dump:
	// volIncr), committed with it.
	vols         []carriedVolume
	volIncr      chan error
	volIncrBytes atomic.Int64
}

// CheckLive refuses a live move of a container with a device that cannot
// go with its processes: a host path (disk) or a host device node would
// vanish under them; the error names the device. Cold moves take them
// (the target must have the source too).
func CheckLive(ct *shoalv1.Container) error {
	devs := cluster.ExpandedDevices(ct)
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		d := devs[name]
		if d.GetType() == config.DeviceProxy {
			continue // the target listens once it runs the container
		}
		if d.GetType() == config.DeviceDisk && d.GetConfig()["pool"] != "" {
			continue // a custom volume: it moves with the container
		}
		return fmt.Errorf("container %s: device %s (%s, source %s) is on this host and cannot move live with the container: remove it, or move the container cold: %w",
			ct.GetName(), name, d.GetType(), d.GetConfig()["source"], ErrUnsupported)
	}
	return nil
}

// LiveMove moves a running container this member owns to target with its
// processes' state (CRIU), as migration.mode asks.
func (e *Source) LiveMove(ctx context.Context, ct *shoalv1.Container, target string, p Progress) (Result, error) {
	if err := CheckLive(ct); err != nil {
		return nil, err
	}
	m := e.liveMove(ct, target, orNop(p))
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	return m.res, nil
}

func (e *engine) liveMove(ct *shoalv1.Container, target string, p Progress) *liveMove {
	m := &liveMove{machine: newMachine(e, KindLiveMove), ct: ct, name: ct.GetName(), source: ct.GetNode(), target: target, p: p}
	m.wrap = m.failed
	m.steps = []step{
		{phase: PhasePrepare, do: m.prepare},
		{phase: PhaseSendVolume, do: m.sendVolume},
		{phase: PhaseFreeze, failpoint: "live-move-before-freeze", do: m.freeze},
		{phase: PhaseDump, do: m.dump},
		{phase: PhaseSendState, failpoint: "live-move-after-dump", while: "checkpointing", do: m.sendState},
		{phase: PhaseRestore, do: m.restore},
		{phase: PhaseCommit, failpoint: "live-move-before-commit", while: "committing", do: m.commit, commits: true},
		{phase: PhaseThaw, do: m.thaw},
		{phase: PhaseCleanup, do: m.cleanup},
	}
	return m
}

// failed is how a failure that leaves the container on the source reads.
func (m *liveMove) failed(while string, cause error) error {
	return fmt.Errorf("live move of %s to %s failed while %s; it keeps running on %s: %w", m.name, m.target, while, m.source, cause)
}

func (m *liveMove) prepare(ctx context.Context) error {
	m.start = time.Now()
	if err := m.e.host.CanCheckpoint(ctx); err != nil {
		return mark(ErrUnsupported, "%s", err.Error())
	}
	d, err := m.e.host.Pool(m.ct.GetPool())
	if err != nil {
		return err
	}
	m.release = m.e.host.HoldForMove(m.name)
	m.always(func() { m.release() })
	m.d, m.vol = d, m.e.host.VolumeName(m.name)
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	m.snapA, m.snapB = "move-"+id+"-a", "move-"+id+"-b"
	if err := m.takeSnapshot(ctx, d, m.vol, m.snapA); err != nil {
		return err
	}
	for _, key := range attached(m.ct) {
		cv, err := m.prepareCustom(ctx, key, m.snapA, false)
		if err != nil {
			return m.failed("snapshotting", err)
		}
		m.vols = append(m.vols, cv)
	}
	return nil
}

// sendVolume streams the volume while the container runs, then picks how
// memory moves from what the target can do.
func (m *liveMove) sendVolume(ctx context.Context) error {
	// Until the restore stream opens, a failure tells the target to drop
	// what it got; once it is open, ending it does.
	m.onFail(func() {
		if m.stream == nil {
			m.e.abortTarget(m.name, m.target)
		}
	})
	header := &shoalv1.VolumeHeader{Version: Version, Container: m.name, Pool: m.ct.GetPool(), Snapshots: append(carried(ctx, m.d, m.vol, m.ct), m.snapA)}
	sent, resp, err := m.e.sendVolume(ctx, m.d, m.vol, header, m.target, m.p)
	if err != nil {
		return m.failed("sending the volume", err)
	}
	m.sentVol = sent
	for _, cv := range m.vols {
		// The first stream keeps snapA on the target: the increment in the
		// freeze is sent on it.
		n, err := m.sendCustomWith(ctx, cv, &shoalv1.VolumeHeader{Version: Version, Pool: cv.pool, CustomVolume: cv.name, Snapshots: cv.snaps}, m.target, m.p)
		m.sentVol += n
		if err != nil {
			return m.failed("sending the volume", err)
		}
	}
	m.mode, m.note, err = m.e.liveMode(ctx, m.ct, resp.GetPostCopy())
	return err
}

// startVolumeIncrements sends, frozen, what changed on each custom volume
// since snapA (snapshot snapB, streamed on snapA), beside the dump: the
// volumes are still from the freeze on. sendState waits for it.
func (m *liveMove) startVolumeIncrements(ctx context.Context) {
	if len(m.vols) == 0 {
		return
	}
	for _, cv := range m.vols {
		m.always(func() { _ = cv.d.DeleteSnapshot(context.WithoutCancel(ctx), cv.vol, m.snapB) })
	}
	done := make(chan error, 1)
	m.volIncr = done
	go func() {
		var sent int64
		for _, cv := range m.vols {
			if err := cv.d.CreateSnapshot(ctx, cv.vol, m.snapB); err != nil {
				done <- m.failed("snapshotting", fmt.Errorf("storage volume %s: %w", cv.key(), err))
				return
			}
			n, err := m.sendCustomWith(ctx, cv, &shoalv1.VolumeHeader{Version: Version, Pool: cv.pool, CustomVolume: cv.name, Snapshots: []string{m.snapB},
				Base: m.snapA, Drop: []string{m.snapA, m.snapB}, Resume: true}, m.target, noProgress{})
			sent += n
			if err != nil {
				done <- m.failed("sending the volume increment", err)
				return
			}
		}
		m.volIncrBytes.Store(sent)
		done <- nil
	}()
}

// waitVolumeIncrements waits for startVolumeIncrements.
func (m *liveMove) waitVolumeIncrements() error {
	if m.volIncr == nil {
		return nil
	}
	err := <-m.volIncr
	m.volIncr = nil
	m.incr += m.volIncrBytes.Load()
	return err
}

// freeze starts the downtime; from here on a failure thaws the source.
func (m *liveMove) freeze(ctx context.Context) error {
	m.onFail(func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := m.e.host.Thaw(bg, m.name); err != nil {
			m.e.log.Error("thaw after a failed live move", "container", m.name, "err", err)
		}
	})
	m.p.Phase("checkpointing")
	m.frozenAt = time.Now()
	if err := m.e.host.Freeze(ctx, m.name); err != nil {
		return m.failed("freezing", err)
	}
	m.startVolumeIncrements(ctx)
	// Whatever fails next, the increments end before the undo runs.
	m.onFail(func() { _ = m.waitVolumeIncrements() })
	return nil
}

// dump checkpoints the frozen container: whole, or for post-copy without
// its memory, which a page server then serves.
func (m *liveMove) dump(ctx context.Context) error {
	dir, err := m.e.host.NewCheckpointDir(m.name)
	if err != nil {
		return m.failed("checkpointing", err)
	}
	m.dir = dir
	m.always(func() { os.RemoveAll(dir) })
	if m.mode == ModePostCopy {
		host, port, err := m.e.pageServerAddr()
		if err == nil {
			m.lazy, m.pageKeys, err = m.e.host.StartLazyCheckpoint(ctx, m.name, dir, host, port)
		}
		if err != nil {
			return m.failed("checkpointing", err)
		}
		m.pageServer = net.JoinHostPort(host, strconv.Itoa(port))
		// Every way out before the commit stops serving pages.
		m.always(func() {
			if m.lazy != nil {
				m.lazy.Abort()
			}
		})
	} else if err := m.e.host.Checkpoint(ctx, m.name, dir); err != nil {
		return m.failed("checkpointing", err)
	}
	m.dumped = time.Since(m.frozenAt)
	return nil
}

// sendState sends what changed in the freeze: the volume's increment on
// the first snapshot, and the checkpoint.
func (m *liveMove) sendState(ctx context.Context) error {
	if err := m.takeSnapshot(ctx, m.d, m.vol, m.snapB); err != nil {
		return m.failed("snapshotting", err)
	}
	if err := m.waitVolumeIncrements(); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	m.always(cancel)
	stream, err := m.e.peers.RestoreContainer(sctx, m.target)
	if err != nil {
		return m.failed("connecting", err)
	}
	m.stream = stream
	// No commit: ending the stream has the target remove its copy. The
	// move returns once the target has (its end of the stream closes after
	// the cleanup), so a failed move leaves nothing behind it; the wait
	// comes after the undo steps, so the source thaws first.
	aborted := false
	m.onFail(func() {
		_ = stream.CloseSend()
		aborted = true
	})
	m.always(func() {
		if aborted {
			m.awaitTargetAbort(stream)
		}
	})
	final := &shoalv1.VolumeHeader{Version: Version, Container: m.name, Pool: m.ct.GetPool(),
		Snapshots: []string{m.snapB}, Base: m.snapA, Drop: []string{m.snapA, m.snapB}, Resume: true}
	if err := stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{
		Header: &shoalv1.RestoreHeader{Version: Version, Container: m.ct, Volume: final,
			PageServer: m.pageServer, PageServerKeys: m.pageKeys}}}); err != nil {
		return m.failed("sending the checkpoint", streamErr(stream, err))
	}
	phase := "sending the final state to " + m.target
	var progress int64
	incr, err := SendVolumeFrom(ctx, m.d, m.vol, m.snapA, []string{m.snapB}, func(part *shoalv1.VolumePart) error {
		progress += int64(len(part.GetData()))
		m.p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Volume{Volume: part}})
	})
	if err != nil {
		return m.failed("sending the volume increment", streamErr(stream, err))
	}
	m.incr = incr
	corrupted := false
	ckpt, err := SendCheckpoint(ctx, m.dir, func(part *shoalv1.CheckpointPart) error {
		progress += int64(len(part.GetData()))
		if !corrupted && len(part.GetData()) > 0 && m.e.hit("live-move-corrupt-checkpoint") != nil {
			corrupted = true
			part.Data[len(part.Data)/2] ^= 0xff // a bit flipped on the wire
		}
		m.p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Checkpoint{Checkpoint: part}})
	})
	if err != nil {
		return m.failed("sending the checkpoint", streamErr(stream, err))
	}
	m.ckpt = ckpt
	return nil
}

// restore waits for the target's RESTORED: its copy exists, frozen.
func (m *liveMove) restore(context.Context) error {
	m.p.Phase("restoring on " + m.target)
	resp, err := m.stream.Recv()
	if err != nil {
		return m.failed("restoring on "+m.target, err)
	}
	if resp.GetPhase() != shoalv1.RestorePhase_RESTORE_PHASE_RESTORED {
		return m.failed("restoring on "+m.target, fmt.Errorf("target answered %s", resp.GetPhase()))
	}
	m.restoreMs = resp.GetRestoreMs()
	return nil
}

// targetAbortWait bounds how long a failed move waits for the target to
// drop its copy before it returns anyway.
const targetAbortWait = 10 * time.Second

// awaitTargetAbort waits until the target ends the restore stream, which
// it does once it has removed what it received.
func (m *liveMove) awaitTargetAbort(stream RestoreClient) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(targetAbortWait):
		m.e.log.Warn("the target has not dropped its copy of a failed move yet; it will when its stream ends",
			"container", m.name, "target", m.target)
	}
}

// commit writes the one entry that moves it. A proposal that failed may
// still have landed: the leader's view decides.
func (m *liveMove) commit(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), proposeTimeout)
	err := m.e.cl.Propose(pctx, &shoalv1.ContainerMoveCommand{Name: m.name, Node: m.target, From: m.source,
		DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING, Volumes: volumeKeys(m.vols)})
	cancel()
	if err != nil && !m.e.ownedBy(ctx, m.name, m.target) {
		return m.failed("committing", err)
	}
	return nil
}

// thaw tells the target it committed; it thaws its copy (the downtime
// ends) and confirms.
func (m *liveMove) thaw(context.Context) error {
	if err := m.stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Commit{Commit: true}}); err == nil {
		_ = m.stream.CloseSend()
		if resp, err := m.stream.Recv(); err != nil || resp.GetPhase() != shoalv1.RestorePhase_RESTORE_PHASE_RUNNING {
			m.e.log.Warn("the target did not confirm it runs the moved container; its reconciler will", "container", m.name, "target", m.target, "err", err)
		}
	}
	m.downtime = time.Since(m.frozenAt)
	return nil
}

// cleanup serves the memory pages a post-copy target still pulls, then
// drops the source's copy.
func (m *liveMove) cleanup(ctx context.Context) error {
	if m.lazy != nil && m.e.armed("live-move-source-lost") {
		m.lazy.Abort() // the page server dies with its host
		_ = m.e.hit("live-move-source-lost")
	}
	if m.lazy != nil {
		// The container runs on the target; its memory still streams from
		// here. The frozen copy stays until the last page has gone.
		m.p.Phase("post-copy: memory pages streaming to " + m.target)
		if err := m.lazy.Wait(postCopyTimeout); err != nil {
			m.e.log.Warn("post-copy page server", "container", m.name, "err", err)
			m.lazy.Abort()
		}
		m.lazy = nil
	}
	stats, err := ReadDumpStats(m.dir, m.mode == ModePostCopy)
	if err != nil {
		m.e.log.Debug("no CRIU dump statistics", "container", m.name, "err", err)
	}
	m.release()
	pagesDone := time.Now()
	if err := m.e.host.DropLocal(context.WithoutCancel(ctx), m.name); err != nil {
		m.e.log.Warn("drop the source copy after a live move", "container", m.name, "err", err)
	}
	for _, cv := range m.vols {
		if err := m.e.host.DropCustomVolume(context.WithoutCancel(ctx), cv.pool, cv.name); err != nil {
			m.e.log.Warn("drop the source copy of a volume after a live move", "volume", cv.key(), "err", err)
		}
	}
	m.e.log.Info("live move done", "container", m.name, "target", m.target, "mode", m.mode,
		"volume_phase", m.frozenAt.Sub(m.start), "downtime", m.downtime, "dump", m.dumped, "restore_ms", m.restoreMs,
		"pages_after_commit", pagesDone.Sub(m.frozenAt.Add(m.downtime)), "drop_source", time.Since(pagesDone), "total", time.Since(m.start))
	m.e.events.Lifecycle(m.e.host.Name(), "container-moved", m.name)
	m.res = m.result(stats)
	return nil
}

// result is the move's figures, as the operation reports them.
func (m *liveMove) result(stats DumpStats) Result {
	bytes := m.sentVol + m.incr + m.ckpt + stats.PagesLazy*pageSize
	return Result{
		"node":                m.target,
		"live":                "true",
		"mode":                m.mode,
		"note":                m.note,
		"pages_before_freeze": "0",
		"pages_during_freeze": strconv.FormatInt(stats.PagesWritten, 10),
		"pages_after_freeze":  strconv.FormatInt(stats.PagesLazy, 10),
		"bytes":               strconv.FormatInt(bytes, 10),
		"checkpoint":          strconv.FormatInt(m.ckpt, 10),
		"took":                time.Since(m.start).Round(time.Millisecond).String(),
		"downtime":            m.downtime.Round(time.Millisecond).String(),
		"downtime_ms":         strconv.FormatInt(m.downtime.Milliseconds(), 10),
		"dump_ms":             strconv.FormatInt(m.dumped.Milliseconds(), 10),
		"restore_ms":          strconv.FormatInt(m.restoreMs, 10),
	}
}

// liveMode picks how to move memory: migration.mode, else post-copy where
// both hosts can, else stop-and-copy. Pre-copy needs memory dirty
// tracking, which these kernels lack: asked for, it is refused with the
// reason; migration.incremental.memory falls back with a note.
func (e *engine) liveMode(ctx context.Context, ct *shoalv1.Container, targetPostCopy bool) (mode, note string, err error) {
	cfg := cluster.ExpandedConfig(ct)
	want := cfg["migration.mode"]
	if want == "" {
		want = ModeAuto
	}
	canPost := targetPostCopy && e.host.CanPostCopy(ct)
	switch want {
	case ModeStopAndCopy:
		return ModeStopAndCopy, "", nil
	case ModePostCopy:
		if !canPost {
			return "", "", mark(ErrUnsupported, "migration.mode=postcopy: %s and its target cannot both restore with lazy pages (userfaultfd; for unprivileged containers vm.unprivileged_userfaultfd=1): use auto or stop-and-copy", ct.GetName())
		}
		return ModePostCopy, "", nil
	case ModePreCopy:
		if !e.host.CanPreCopy() {
			return "", "", mark(ErrUnsupported, "migration.mode=precopy: this host has no memory dirty tracking (CONFIG_MEM_SOFT_DIRTY), so CRIU cannot pre-dump: use auto, postcopy or stop-and-copy")
		}
		// Pre-dump rounds are not implemented; no host here can run them.
		return "", "", mark(ErrUnsupported, "migration.mode=precopy is not implemented yet: use auto, postcopy or stop-and-copy")
	}
	if config.Bool(cfg, "migration.incremental.memory") && !e.host.CanPreCopy() {
		note = "pre-copy unavailable (no memory dirty tracking); "
	}
	if !canPost {
		return ModeStopAndCopy, note + "post-copy unavailable; stop-and-copy", nil
	}
	if mem := e.host.MemoryBytes(ctx, ct); mem < postCopyFrom {
		return ModeStopAndCopy, fmt.Sprintf("%sstop-and-copy: %d MiB of memory moves faster in the freeze than post-copy's setup", note, mem>>20), nil
	}
	return ModePostCopy, strings.TrimSuffix(note, "; "), nil
}

// pageServerAddr picks where CRIU's page server listens for the target:
// this member's cluster address and a free port.
func (e *engine) pageServerAddr() (string, int, error) {
	host, _, err := net.SplitHostPort(e.host.Address())
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

// streamErr prefers the target's verdict over a local send error (a send
// fails with io.EOF when the target already returned).
func streamErr(stream RestoreClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// ownedBy reports whether the cluster, read through the leader, shows
// member as the container's owner (an ambiguous commit may have landed).
func (e *engine) ownedBy(ctx context.Context, name, member string) bool {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.cl.Sync(sctx); err != nil {
		e.log.Warn("sync after a failed commit", "err", err)
	}
	ct, err := e.cl.Container(name)
	return err == nil && ct.GetNode() == member
}

// abortTarget tells the target to drop what a failed live move sent it: a
// RestoreContainer stream that ends right after its header.
func (e *engine) abortTarget(name, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := e.peers.RestoreContainer(ctx, target)
	if err != nil {
		return
	}
	if err := stream.Send(&shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{
		Header: &shoalv1.RestoreHeader{Version: Version, Container: &shoalv1.Container{Name: name}}}}); err != nil {
		return
	}
	_ = stream.CloseSend()
	_, _ = stream.Recv()
}
