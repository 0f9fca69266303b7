package cluster

import (
	"errors"
	"maps"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// The FSM keeps the scheduler's view of its state (state.sched) current as
// it applies commands, so that neither a create's placement on the
// proposer nor its re-check in Apply rebuilds it from every container:
// creates, deletes and changes of a container's member or config update it
// in O(1); what changes the nodes or many containers at once (a node's
// labels or capacity, a profile, a rename, a restore) drops it, and the
// next reader rebuilds it once. It is only changed under the FSM's write
// lock; readers use it under the read lock and never change it.

// schedLocked returns the scheduler's view, rebuilding it if it was
// dropped. The caller holds the FSM's write lock (Apply does).
func (s *state) schedLocked() (*scheduler.Snapshot, error) {
	if s.sched != nil {
		return s.sched, nil
	}
	snap, err := s.snapshotLocked()
	if err != nil {
		return nil, err
	}
	s.sched = snap
	return snap, nil
}

// dropSched forgets the view: the next reader rebuilds it.
func (s *state) dropSched() { s.sched = nil }

// schedEntry is what the view records for ct, and whether it records it
// at all (snapshotLocked's rules: its member has a record and its config
// parses).
func (s *state) schedEntry(ct *shoalv1.Container) (scheduler.Container, bool) {
	if _, ok := s.nodes[ct.GetNode()]; !ok {
		return scheduler.Container{}, false
	}
	req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
	if err != nil {
		return scheduler.Container{}, false
	}
	return scheduler.Container{Name: ct.GetName(), Node: ct.GetNode(), CPUMillis: req.CPUMillis, MemoryBytes: req.MemoryBytes, Group: req.Group}, true
}

// schedAdd records ct in the view (a new container, or one that changed
// after schedRemove). Anything unexpected drops the view instead of
// leaving it wrong.
func (s *state) schedAdd(ct *shoalv1.Container) {
	if s.sched == nil {
		return
	}
	e, ok := s.schedEntry(ct)
	if !ok {
		return
	}
	if err := s.sched.Add(e); err != nil {
		s.dropSched()
	}
}

// schedAddEntry records an entry computed already (a create's re-check).
func (s *state) schedAddEntry(e scheduler.Container) {
	if s.sched == nil {
		return
	}
	if err := s.sched.Add(e); err != nil {
		s.dropSched()
	}
}

// schedRemove takes a container out of the view.
func (s *state) schedRemove(name string) {
	if s.sched == nil {
		return
	}
	if err := s.sched.Remove(name); err != nil && !errors.Is(err, scheduler.ErrUnknownContainer) {
		s.dropSched()
	}
}

// schedReplace records ct again after its member or config changed.
func (s *state) schedReplace(ct *shoalv1.Container) {
	s.schedRemove(ct.GetName())
	s.schedAdd(ct)
}

// schedNode updates the view for a node record replacing old (nil: a new
// node): a change of status alone is applied in place, anything else
// drops the view.
func (s *state) schedNode(old, n *shoalv1.Node) {
	if s.sched == nil {
		return
	}
	if old == nil || !sameButStatus(old, n) {
		s.dropSched()
		return
	}
	if old.GetStatus() == n.GetStatus() {
		return
	}
	if err := s.sched.SetStatus(n.GetName(), n.GetStatus()); err != nil {
		s.dropSched()
	}
}

// sameButStatus reports whether two node records differ at most in their
// status as far as the scheduler sees them.
func sameButStatus(a, b *shoalv1.Node) bool {
	return a.GetName() == b.GetName() && a.GetCpuMillis() == b.GetCpuMillis() && a.GetMemoryBytes() == b.GetMemoryBytes() &&
		maps.Equal(a.GetLabels(), b.GetLabels()) && maps.Equal(a.GetUnenforceableKeys(), b.GetUnenforceableKeys())
}

// track keeps the view current after m applied without error.
func (s *state) track(m proto.Message) {
	if s.sched == nil {
		return
	}
	switch c := m.(type) {
	// A create records itself (applyCommand: schedAddEntry, with the
	// reservation its re-check computed).
	case *shoalv1.ContainerDeleteCommand:
		s.schedRemove(c.GetName())
	case *shoalv1.ContainerUpdateCommand:
		s.retrack(c.GetName())
	case *shoalv1.ContainerMoveCommand:
		s.retrack(c.GetName())
	case *shoalv1.ContainerHealCommand:
		s.retrack(c.GetName())
	case *shoalv1.ContainerReplaceCommand:
		s.retrack(c.GetName())
	case *shoalv1.ContainerRenameCommand:
		s.schedRemove(c.GetName())
		s.retrack(c.GetNewName())
	case *shoalv1.ProfileCreateCommand, *shoalv1.ProfileUpdateCommand, *shoalv1.ProfileRenameCommand, *shoalv1.ProfileDeleteCommand,
		*shoalv1.NodeRemoveCommand:
		s.dropSched()
	}
}

// retrack records the named container again, if it still exists.
func (s *state) retrack(name string) {
	if ct, ok := s.containers[name]; ok {
		s.schedReplace(ct)
	} else {
		s.schedRemove(name)
	}
}
