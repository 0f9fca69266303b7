package migration

import (
	"context"
	"strconv"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// CopySpec is a copy to make: of Source, as the new record Copy (its Node
// says where; its Snapshots are the records of the snapshots brought
// along, which Snapshots names).
type CopySpec struct {
	Source *shoalv1.Container
	Copy   *shoalv1.Container
}

// copyRun is the state of one copy or refresh on the source's member.
type copyRun struct {
	*machine
	src, dst *shoalv1.Container
	p        Progress
	d        storage.Driver
	vol, tmp string
	sent     int64
	// base and missing: a refresh's newest shared snapshot and the
	// snapshots after it.
	base    string
	missing []*shoalv1.Snapshot
}

// Copy copies a container into a new one, on this member (a clone in its
// pool) or on another (a transfer snapshot streamed there under the new
// name). The copy is recorded stopped.
func (e *Source) Copy(ctx context.Context, spec CopySpec, p Progress) (Result, error) {
	m := e.copyRun(spec, orNop(p))
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	if m.kind == KindCopyLocal {
		return Result{"name": m.dst.GetName()}, nil
	}
	return Result{"name": m.dst.GetName(), "node": m.dst.GetNode(), "bytes": strconv.FormatInt(m.sent, 10)}, nil
}

func (e *engine) copyRun(spec CopySpec, p Progress) *copyRun {
	m := &copyRun{src: spec.Source, dst: spec.Copy, p: p}
	if spec.Copy.GetNode() == e.host.Name() {
		m.machine = newMachine(e, KindCopyLocal)
		m.steps = []step{
			{phase: PhasePrepare, do: m.removeStale},
			{phase: PhaseSendVolume, do: m.cloneVolume},
			{phase: PhaseCommit, do: m.commitCopy, commits: true},
			{phase: PhaseStart, do: m.reconcile},
		}
		return m
	}
	m.machine = newMachine(e, KindCopy)
	m.steps = []step{
		{phase: PhasePrepare, do: m.snapshotSource},
		{phase: PhaseSendVolume, do: m.sendCopy},
		{phase: PhaseCommit, do: m.commitCopy, commits: true},
		{phase: PhaseStart, do: m.waitStopped},
	}
	return m
}

// snapNames names the snapshots a copy brings along.
func (m *copyRun) snapNames() []string { return snapshotNames(m.dst) }

func (m *copyRun) removeStale(ctx context.Context) error {
	return m.e.host.RemoveStale(ctx, m.dst.GetName())
}

func (m *copyRun) cloneVolume(ctx context.Context) error {
	m.p.Phase("copying volume")
	if err := m.e.host.CopyVolume(ctx, m.src, m.dst.GetName(), m.snapNames()); err != nil {
		return err
	}
	// Not in the cluster's records: a reconcile removes the copied volume.
	m.onFail(func() { _ = m.e.host.Reconcile(context.Background(), m.dst.GetName()) })
	return nil
}

func (m *copyRun) commitCopy(ctx context.Context) error {
	return m.e.cl.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: m.dst})
}

func (m *copyRun) reconcile(ctx context.Context) error {
	return m.e.host.Reconcile(ctx, m.dst.GetName())
}

// snapshotSource takes the transfer snapshot of the source's volume.
func (m *copyRun) snapshotSource(ctx context.Context) error {
	d, err := m.e.host.Pool(m.src.GetPool())
	if err != nil {
		return err
	}
	m.d, m.vol, m.tmp = d, m.e.host.VolumeName(m.src.GetName()), transferSnapshot("copy")
	return m.takeSnapshot(ctx, d, m.vol, m.tmp)
}

func (m *copyRun) sendCopy(ctx context.Context) error {
	header := &shoalv1.VolumeHeader{Version: Version, Container: m.dst.GetName(), Pool: m.src.GetPool(),
		Snapshots: append(m.snapNames(), m.tmp), DropLast: true, Copy: true}
	sent, _, err := m.e.sendVolume(ctx, m.d, m.vol, header, m.dst.GetNode(), m.p)
	m.sent = sent
	return err
}

func (m *copyRun) waitStopped(ctx context.Context) error {
	return WaitState(ctx, m.e.cl, m.dst.GetName(), shoalv1.DesiredState_DESIRED_STATE_STOPPED, nil)
}

// PlanRefresh checks that dst, a copy of src on another member, can be
// refreshed, and returns the newest snapshot both hold (the stream's base)
// and the source's snapshots after it, which the refresh brings.
func PlanRefresh(src, dst *shoalv1.Container) (base string, missing []*shoalv1.Snapshot, err error) {
	if dst.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
		return "", nil, mark(ErrConflict, "stop %q before refreshing it", dst.GetName())
	}
	if dst.GetPool() != src.GetPool() {
		return "", nil, mark(ErrConflict, "%q is in pool %s, its source in %s", dst.GetName(), dst.GetPool(), src.GetPool())
	}
	if dst.GetNode() == src.GetNode() {
		return "", nil, mark(ErrConflict, "refresh copies across members only (a copy on the same member is a cheap clone: delete and copy again)")
	}
	have := map[string]bool{}
	for _, sn := range dst.GetSnapshots() {
		have[sn.GetName()] = true
	}
	for _, sn := range src.GetSnapshots() {
		if have[sn.GetName()] {
			base = sn.GetName()
			missing = nil // only those after the newest shared one
			continue
		}
		missing = append(missing, proto.Clone(sn).(*shoalv1.Snapshot))
	}
	if base == "" {
		return "", nil, mark(ErrConflict, "%q shares no snapshot with %q: delete it and copy again", dst.GetName(), src.GetName())
	}
	return base, missing, nil
}

// Refresh brings dst, a stopped copy of src on another member, up to date:
// the snapshots it lacks and the current content go incrementally on the
// newest snapshot both hold, and the new snapshots are recorded. It is the
// shape continuous replication reuses: a chain of snapshots sent on a
// base the receiver keeps.
func (e *Source) Refresh(ctx context.Context, src, dst *shoalv1.Container, p Progress) (Result, error) {
	base, missing, err := PlanRefresh(src, dst)
	if err != nil {
		return nil, err
	}
	m := &copyRun{machine: newMachine(e.engine, KindRefresh), src: src, dst: dst, p: orNop(p), base: base, missing: missing}
	m.steps = []step{
		{phase: PhasePrepare, do: m.snapshotSource},
		{phase: PhaseSendVolume, do: m.sendRefresh},
		{phase: PhaseCommit, do: m.recordSnapshots, commits: true},
	}
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	return Result{"name": dst.GetName(), "node": dst.GetNode(), "bytes": strconv.FormatInt(m.sent, 10), "base": base}, nil
}

func (m *copyRun) sendRefresh(ctx context.Context) error {
	var snaps []string
	for _, sn := range m.missing {
		snaps = append(snaps, sn.GetName())
	}
	header := &shoalv1.VolumeHeader{Version: Version, Container: m.dst.GetName(), Pool: m.src.GetPool(),
		Snapshots: append(snaps, m.tmp), DropLast: true, Base: m.base, Resume: true}
	sent, _, err := m.e.sendVolume(ctx, m.d, m.vol, header, m.dst.GetNode(), m.p)
	m.sent = sent
	return err
}

// recordSnapshots records the snapshots the refresh brought.
func (m *copyRun) recordSnapshots(ctx context.Context) error {
	for _, sn := range m.missing {
		if err := m.e.cl.Propose(ctx, &shoalv1.SnapshotCreateCommand{Container: m.dst.GetName(), Snapshot: sn}); err != nil {
			return err
		}
	}
	return nil
}
