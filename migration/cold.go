package migration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Result is what a finished transfer reports (the operation's metadata).
type Result map[string]string

// coldMove is the state of one cold move on its source: stop (cleanly),
// send the volume and its snapshots, commit the new owner in one Raft
// entry, have the target start it if it ran, and drop the source's copy.
// Any failure before the commit gives the container back to the source
// (restarted if it ran); the target deletes what arrived.
type coldMove struct {
	*machine
	ct         *shoalv1.Container
	target     string
	p          Progress
	wasRunning bool
	desired    shoalv1.DesiredState
	d          storage.Driver
	vol        string
	snaps      []string
	sent       int64
	// vols are the custom volumes it attaches: they travel with it.
	vols []carriedVolume
}

// Move moves a container this member owns to target, cold: it is stopped
// for the transfer (and started there if it ran).
func (e *Source) Move(ctx context.Context, ct *shoalv1.Container, target string, p Progress) (Result, error) {
	m := e.coldMove(ct, target, orNop(p))
	start := time.Now()
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	e.events.Lifecycle(e.host.Name(), "container-moved", ct.GetName())
	return Result{"node": target, "bytes": strconv.FormatInt(m.sent, 10), "took": time.Since(start).String()}, nil
}

func (e *engine) coldMove(ct *shoalv1.Container, target string, p Progress) *coldMove {
	m := &coldMove{machine: newMachine(e, KindColdMove), ct: ct, target: target, p: p,
		wasRunning: ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED}
	m.desired = shoalv1.DesiredState_DESIRED_STATE_STOPPED
	if m.wasRunning {
		m.desired = shoalv1.DesiredState_DESIRED_STATE_RUNNING
	}
	m.steps = []step{
		{phase: PhasePrepare, do: m.prepare},
		{phase: PhaseSendVolume, do: m.sendVolume},
		{phase: PhaseCommit, failpoint: "cold-move-before-commit", do: m.commit, commits: true},
		{phase: PhaseCleanup, failpoint: "cold-move-before-drop", do: m.dropSource},
		{phase: PhaseStart, do: m.start},
	}
	return m
}

// stays is how a failure after the stop reads.
func (m *coldMove) stays(cause error) error {
	return fmt.Errorf("move %s to %s failed; it stays on %s: %w", m.ct.GetName(), m.target, m.ct.GetNode(), cause)
}

func (m *coldMove) prepare(ctx context.Context) error {
	name := m.ct.GetName()
	if m.wasRunning {
		// The container stops held, its record still desired running: a
		// failure, or this daemon's death, before the commit gives it back
		// to the source's reconciler, which starts it again.
		m.p.Phase("stopping")
		var once sync.Once
		hold := m.e.host.HoldForMove(name)
		release := func() { once.Do(hold) }
		m.always(release)
		m.onFail(func() {
			release()
			bg, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = m.e.host.Reconcile(bg, name)
		})
		if err := m.e.host.StopHeld(ctx, name); err != nil {
			return m.stays(err)
		}
	}
	d, err := m.e.host.Pool(m.ct.GetPool())
	if err != nil {
		return m.stays(err)
	}
	m.d, m.vol = d, m.e.host.VolumeName(name)
	snap := transferSnapshot("move")
	if err := m.takeSnapshot(ctx, d, m.vol, snap); err != nil {
		return m.stays(err)
	}
	m.snaps = append(carried(ctx, d, m.vol, m.ct), snap)
	for _, key := range attached(m.ct) {
		cv, err := m.prepareCustom(ctx, key, snap, false)
		if err != nil {
			return m.stays(err)
		}
		m.vols = append(m.vols, cv)
	}
	return nil
}

func (m *coldMove) sendVolume(ctx context.Context) error {
	header := &shoalv1.VolumeHeader{Version: Version, Container: m.ct.GetName(), Pool: m.ct.GetPool(), Snapshots: m.snaps, DropLast: true}
	sent, _, err := m.e.sendVolume(ctx, m.d, m.vol, header, m.target, m.p)
	if err != nil {
		return m.stays(err)
	}
	m.sent = sent
	for _, cv := range m.vols {
		n, err := m.sendCustom(ctx, cv, cv.name, m.target, false, m.p)
		m.sent += n
		if err != nil {
			return m.stays(err)
		}
	}
	return nil
}

// volumeKeys are the custom volumes the move carries (POOL/NAME).
func volumeKeys(vols []carriedVolume) []string {
	out := make([]string, len(vols))
	for i, v := range vols {
		out[i] = v.key()
	}
	return out
}

// commit is the one entry that moves it.
func (m *coldMove) commit(ctx context.Context) error {
	cmd := &shoalv1.ContainerMoveCommand{Name: m.ct.GetName(), Node: m.target, From: m.ct.GetNode(), DesiredState: m.desired, Volumes: volumeKeys(m.vols)}
	if err := m.e.cl.Propose(ctx, cmd); err != nil {
		return m.stays(err)
	}
	return nil
}

// dropSource drops the source's copy: the target has its own.
func (m *coldMove) dropSource(ctx context.Context) error {
	m.p.Phase("starting on " + m.target)
	if err := m.e.host.DropLocal(ctx, m.ct.GetName()); err != nil {
		m.e.log.Warn("drop the source copy after a move", "container", m.ct.GetName(), "err", err)
	}
	for _, cv := range m.vols {
		if err := m.e.host.DropCustomVolume(ctx, cv.pool, cv.name); err != nil {
			m.e.log.Warn("drop the source copy of a volume after a move", "volume", cv.key(), "err", err)
		}
	}
	return nil
}

// start waits for the target to run the container, or hold it stopped.
func (m *coldMove) start(ctx context.Context) error {
	return WaitState(ctx, m.e.cl, m.ct.GetName(), m.desired, m.p)
}
