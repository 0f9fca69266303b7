package cluster

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// applyRename applies ContainerRenameCommand and SnapshotRenameCommand.
//
// A container is renamed only while it is desired stopped (its host state
// is then a volume and a definition, which the owner renames before it
// proposes). The record keeps everything but its name: snapshots, NICs
// with their addresses (re-indexed under the new name), devices, config.
// Its HA replicas are dropped: the members hold them under the old name,
// their sweep deletes them, and the next round sends the volume in full
// under the new one.
func (s *state) applyRename(m proto.Message) (Change, error) {
	switch c := m.(type) {
	case *shoalv1.ContainerRenameCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if c.GetNewName() == "" || c.GetNewName() == c.GetName() {
			return Change{}, fmt.Errorf("rename container %q: new name %q: %w", c.GetName(), c.GetNewName(), ErrInvalidCommand)
		}
		if _, ok := s.containers[c.GetNewName()]; ok {
			return Change{}, fmt.Errorf("container %q: %w", c.GetNewName(), ErrExists)
		}
		if ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			return Change{}, fmt.Errorf("renaming of running instance not allowed: container %q is not stopped: %w", c.GetName(), ErrInUse)
		}
		s.release(ct)
		delete(s.containers, c.GetName())
		ct.Name = c.GetNewName()
		ct.Replicas = nil
		s.containers[ct.GetName()] = ct
		s.index(ct)
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.SnapshotRenameCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		if c.GetNewName() == "" {
			return Change{}, fmt.Errorf("rename snapshot %q of %q: no new name: %w", c.GetName(), ct.GetName(), ErrInvalidCommand)
		}
		var found *shoalv1.Snapshot
		for _, sn := range ct.GetSnapshots() {
			switch sn.GetName() {
			case c.GetNewName():
				return Change{}, fmt.Errorf("snapshot %q of %q: %w", c.GetNewName(), ct.GetName(), ErrExists)
			case c.GetName():
				found = sn
			}
		}
		if found == nil {
			return Change{}, fmt.Errorf("snapshot %q of %q: %w", c.GetName(), ct.GetName(), ErrNotFound)
		}
		found.Name = c.GetNewName()
		return Change{"container", ct.GetName()}, nil
	}
	panic(fmt.Sprintf("fsm: applyRename of %T", m))
}
