package migration

import (
	"context"

	"github.com/shoal-dev/shoal/internal/revert"
)

// Phase names a step of a transfer's state machine.
type Phase string

// The phases transfers are made of, in the order they can run.
const (
	// PhasePrepare checks the move can run and takes the transfer
	// snapshot the volume streams from.
	PhasePrepare Phase = "prepare"
	// PhaseSendVolume streams the volume (and its snapshots) to the
	// target, or copies it on this host.
	PhaseSendVolume Phase = "send-volume"
	// PhaseFreeze freezes the container (a live move's downtime starts).
	PhaseFreeze Phase = "freeze"
	// PhaseDump checkpoints the frozen container with CRIU.
	PhaseDump Phase = "dump"
	// PhaseSendState streams what changed during the freeze: the volume
	// increment and the checkpoint.
	PhaseSendState Phase = "send-state"
	// PhaseRestore waits for the target to restore the container, frozen.
	PhaseRestore Phase = "restore"
	// PhaseCommit writes the one Raft entry that makes the transfer happen
	// (the new owner, the new container, the new snapshots). A failure
	// after it undoes nothing: the cluster has moved on.
	PhaseCommit Phase = "commit"
	// PhaseThaw has the target run the container (a live move's downtime
	// ends).
	PhaseThaw Phase = "thaw"
	// PhaseStart waits for the target to run (or hold, stopped) what a
	// cold transfer committed.
	PhaseStart Phase = "start"
	// PhaseCleanup drops the source's copy and what the transfer made.
	PhaseCleanup Phase = "cleanup"
)

// Kind names a transfer.
type Kind string

// The kinds of transfer.
const (
	KindColdMove Kind = "cold-move"
	KindLiveMove Kind = "live-move"
	// KindCopyLocal copies a container within this member's pool.
	KindCopyLocal Kind = "copy-local"
	// KindCopy copies a container to another member.
	KindCopy Kind = "copy"
	// KindRefresh brings a copy on another member up to date,
	// incrementally on the newest snapshot both hold: the shape continuous
	// replication reuses.
	KindRefresh Kind = "refresh"
	// KindVolumeCopy copies a custom storage volume to another member.
	KindVolumeCopy Kind = "volume-copy"
	// KindVolumeMove moves a custom storage volume no container uses to
	// another member.
	KindVolumeMove Kind = "volume-move"
)

// Plans are the phases of each kind, in order (docs/ARCHITECTURE.md has
// what is true on each side at each, and what a failure there undoes).
var Plans = map[Kind][]Phase{
	KindColdMove:   {PhasePrepare, PhaseSendVolume, PhaseCommit, PhaseCleanup, PhaseStart},
	KindLiveMove:   {PhasePrepare, PhaseSendVolume, PhaseFreeze, PhaseDump, PhaseSendState, PhaseRestore, PhaseCommit, PhaseThaw, PhaseCleanup},
	KindCopyLocal:  {PhasePrepare, PhaseSendVolume, PhaseCommit, PhaseStart},
	KindCopy:       {PhasePrepare, PhaseSendVolume, PhaseCommit, PhaseStart},
	KindRefresh:    {PhasePrepare, PhaseSendVolume, PhaseCommit},
	KindVolumeCopy: {PhasePrepare, PhaseSendVolume, PhaseCommit},
	KindVolumeMove: {PhasePrepare, PhaseSendVolume, PhaseCommit, PhaseCleanup},
}

// step is one phase of a transfer: its failpoint, hit on entering it, and
// what it does. A step pushes the undo of what it did onto the machine's
// reverter (run, newest first, if a later step fails before the commit)
// and what must go whatever happens onto its cleanups.
type step struct {
	phase     Phase
	failpoint string
	// while is how an error at the failpoint reads ("checkpointing");
	// empty leaves it as is.
	while string
	do    func(ctx context.Context) error
	// commits marks the point of no return: once it succeeds, no undo
	// runs.
	commits bool
}

// machine runs one transfer's steps in order.
type machine struct {
	e     *engine
	kind  Kind
	steps []step
	// undo holds the undo steps of what was done; cleanups run at the end
	// either way, newest first, after any undo.
	undo     *revert.Reverter
	cleanups []func()
	// current is the phase running (or that failed).
	current Phase
	// wrap turns a failpoint error, with its step's while, into the error
	// the transfer returns.
	wrap func(while string, err error) error
}

func newMachine(e *engine, kind Kind) *machine {
	return &machine{e: e, kind: kind, undo: revert.New()}
}

// onFail pushes an undo step.
func (m *machine) onFail(f func()) { m.undo.Add(f) }

// always pushes a cleanup.
func (m *machine) always(f func()) { m.cleanups = append(m.cleanups, f) }

// run runs the steps; on a failure before the commit it undoes what was
// done. Cleanups run in both cases.
func (m *machine) run(ctx context.Context) error {
	defer func() {
		for i := len(m.cleanups) - 1; i >= 0; i-- {
			m.cleanups[i]()
		}
	}()
	defer m.undo.Fail()
	for _, s := range m.steps {
		m.current = s.phase
		m.e.log.Debug("transfer phase", "kind", m.kind, "phase", s.phase)
		if m.e.phase != nil {
			m.e.phase(m.kind, s.phase)
		}
		if s.failpoint != "" {
			if err := m.e.hit(s.failpoint); err != nil {
				if s.while != "" && m.wrap != nil {
					err = m.wrap(s.while, err)
				}
				return err
			}
		}
		if err := s.do(ctx); err != nil {
			return err
		}
		if s.commits {
			m.undo.Success()
		}
	}
	m.undo.Success()
	return nil
}

// phases lists the steps' phases.
func (m *machine) phases() []Phase {
	out := make([]Phase, len(m.steps))
	for i, s := range m.steps {
		out[i] = s.phase
	}
	return out
}
