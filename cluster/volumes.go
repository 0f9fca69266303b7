package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// VolumeKey is how a custom volume is named across the cluster: POOL/NAME.
func VolumeKey(pool, name string) string { return pool + "/" + name }

// VolumeDevices are the custom volumes a devices map attaches (disk
// devices with a pool), as POOL/NAME, sorted and each once.
func VolumeDevices(devs map[string]*shoalv1.Device) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		d := devs[name]
		if d.GetType() != "disk" || d.GetConfig()["pool"] == "" {
			continue
		}
		k := VolumeKey(d.GetConfig()["pool"], d.GetConfig()["source"])
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// volumeUsers are the containers whose expanded devices attach a custom
// volume, sorted.
func (s *state) volumeUsers(key string) []string {
	var out []string
	for _, name := range sortedKeys(s.containers) {
		if slices.Contains(VolumeDevices(s.containers[name].GetExpandedDevices()), key) {
			out = append(out, name)
		}
	}
	return out
}

// checkVolumes refuses a container attaching a custom volume that does not
// exist or lives on another member than the container.
func (s *state) checkVolumes(ct *shoalv1.Container) error {
	for _, k := range VolumeDevices(ct.GetExpandedDevices()) {
		v, ok := s.volumes[k]
		if !ok {
			return fmt.Errorf("container %q: storage volume %s: %w", ct.GetName(), k, ErrNotFound)
		}
		if ct.GetNode() != "" && v.GetNode() != ct.GetNode() {
			return fmt.Errorf("container %q is on %s but storage volume %s is on %s: %w", ct.GetName(), ct.GetNode(), k, v.GetNode(), ErrInUse)
		}
	}
	return nil
}

func (s *state) volume(pool, name string) (*shoalv1.StorageVolume, error) {
	v, ok := s.volumes[VolumeKey(pool, name)]
	if !ok {
		return nil, fmt.Errorf("storage volume %s: %w", VolumeKey(pool, name), ErrNotFound)
	}
	return v, nil
}

// unused refuses a change to a volume some container attaches.
func (s *state) unused(v *shoalv1.StorageVolume, what string) error {
	k := VolumeKey(v.GetPool(), v.GetName())
	if users := s.volumeUsers(k); len(users) > 0 {
		return fmt.Errorf("storage volume %s is used by %s: detach it before %s: %w", k, strings.Join(users, ", "), what, ErrInUse)
	}
	return nil
}

func (s *state) applyVolume(m proto.Message) (Change, error) {
	switch c := m.(type) {
	case *shoalv1.VolumeCreateCommand:
		v := c.GetVolume()
		if v.GetPool() == "" || v.GetName() == "" || v.GetNode() == "" {
			return Change{}, fmt.Errorf("a storage volume needs a pool, a name and a member: %w", ErrInvalidCommand)
		}
		if _, ok := s.pools[v.GetPool()]; !ok {
			return Change{}, fmt.Errorf("storage pool %q: %w", v.GetPool(), ErrNotFound)
		}
		if _, ok := s.nodes[v.GetNode()]; !ok {
			return Change{}, fmt.Errorf("node %q: %w", v.GetNode(), ErrNotFound)
		}
		k := VolumeKey(v.GetPool(), v.GetName())
		if _, ok := s.volumes[k]; ok {
			return Change{}, fmt.Errorf("storage volume %s: %w", k, ErrExists)
		}
		rec := proto.Clone(v).(*shoalv1.StorageVolume)
		rec.UsedBy = nil
		s.volumes[k] = rec
		return Change{"volume", k}, nil
	case *shoalv1.VolumeUpdateCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		v.Config, v.Description = cloneMap(c.GetConfig()), c.GetDescription()
		return Change{"volume", VolumeKey(v.GetPool(), v.GetName())}, nil
	case *shoalv1.VolumeDeleteCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		if err := s.unused(v, "deleting it"); err != nil {
			return Change{}, err
		}
		k := VolumeKey(v.GetPool(), v.GetName())
		delete(s.volumes, k)
		return Change{"volume", k}, nil
	case *shoalv1.VolumeRenameCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		if c.GetNewName() == "" {
			return Change{}, fmt.Errorf("storage volume %s: a rename needs a new name: %w", VolumeKey(v.GetPool(), v.GetName()), ErrInvalidCommand)
		}
		if err := s.unused(v, "renaming it"); err != nil {
			return Change{}, err
		}
		nk := VolumeKey(v.GetPool(), c.GetNewName())
		if _, ok := s.volumes[nk]; ok {
			return Change{}, fmt.Errorf("storage volume %s: %w", nk, ErrExists)
		}
		delete(s.volumes, VolumeKey(v.GetPool(), v.GetName()))
		v.Name = c.GetNewName()
		s.volumes[nk] = v
		return Change{"volume", nk}, nil
	case *shoalv1.VolumeMoveCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		k := VolumeKey(v.GetPool(), v.GetName())
		if v.GetNode() != c.GetFrom() {
			return Change{}, fmt.Errorf("storage volume %s is on %q, not %q: %w", k, v.GetNode(), c.GetFrom(), ErrInUse)
		}
		if _, ok := s.nodes[c.GetNode()]; !ok {
			return Change{}, fmt.Errorf("node %q: %w", c.GetNode(), ErrNotFound)
		}
		if err := s.unused(v, "moving it alone (move the container)"); err != nil {
			return Change{}, err
		}
		v.Node = c.GetNode()
		return Change{"volume", k}, nil
	case *shoalv1.VolumeSnapshotCreateCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		sn := c.GetSnapshot()
		for _, have := range v.GetSnapshots() {
			if have.GetName() == sn.GetName() {
				return Change{}, fmt.Errorf("snapshot %q of storage volume %s: %w", sn.GetName(), VolumeKey(v.GetPool(), v.GetName()), ErrExists)
			}
		}
		v.Snapshots = append(v.Snapshots, proto.Clone(sn).(*shoalv1.Snapshot))
		return Change{"volume", VolumeKey(v.GetPool(), v.GetName())}, nil
	case *shoalv1.VolumeSnapshotDeleteCommand:
		v, err := s.volume(c.GetPool(), c.GetName())
		if err != nil {
			return Change{}, err
		}
		i := slices.IndexFunc(v.GetSnapshots(), func(sn *shoalv1.Snapshot) bool { return sn.GetName() == c.GetSnapshot() })
		if i < 0 {
			return Change{}, fmt.Errorf("snapshot %q of storage volume %s: %w", c.GetSnapshot(), VolumeKey(v.GetPool(), v.GetName()), ErrNotFound)
		}
		v.Snapshots = slices.Delete(v.Snapshots, i, i+1)
		return Change{"volume", VolumeKey(v.GetPool(), v.GetName())}, nil
	}
	panic(fmt.Sprintf("fsm: no volume apply for %T", m))
}

// moveVolumes checks that every custom volume a move carries is on from,
// and that the container attaches exactly those; then gives them to node.
// It changes nothing when it fails.
func (s *state) moveVolumes(ct *shoalv1.Container, keys []string, from, node string) error {
	want := VolumeDevices(ct.GetExpandedDevices())
	got := slices.Sorted(slices.Values(keys))
	if !slices.Equal(want, got) {
		return fmt.Errorf("container %q attaches storage volumes [%s] but the move carried [%s]: %w", ct.GetName(), strings.Join(want, " "), strings.Join(got, " "), ErrInvalidCommand)
	}
	for _, k := range keys {
		v, ok := s.volumes[k]
		if !ok {
			return fmt.Errorf("storage volume %s: %w", k, ErrNotFound)
		}
		if v.GetNode() != from {
			return fmt.Errorf("storage volume %s is on %q, not %q: %w", k, v.GetNode(), from, ErrInUse)
		}
		if users := s.volumeUsers(k); len(users) > 1 {
			return fmt.Errorf("storage volume %s is also used by %s: %w", k, strings.Join(slices.DeleteFunc(users, func(u string) bool { return u == ct.GetName() }), ", "), ErrInUse)
		}
	}
	for _, k := range keys {
		s.volumes[k].Node = node
	}
	return nil
}

// Volume returns a custom volume with the containers that attach it.
func (f *FSM) Volume(pool, name string) (*shoalv1.StorageVolume, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, err := f.s.volume(pool, name)
	if err != nil {
		return nil, err
	}
	out := proto.Clone(v).(*shoalv1.StorageVolume)
	out.UsedBy = f.s.volumeUsers(VolumeKey(pool, name))
	return out, nil
}

// Volumes lists the custom volumes of a pool ("" for every pool), sorted
// by pool and name, with their users.
func (f *FSM) Volumes(pool string) []*shoalv1.StorageVolume {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*shoalv1.StorageVolume
	for _, k := range sortedKeys(f.s.volumes) {
		v := f.s.volumes[k]
		if pool != "" && v.GetPool() != pool {
			continue
		}
		c := proto.Clone(v).(*shoalv1.StorageVolume)
		c.UsedBy = f.s.volumeUsers(k)
		out = append(out, c)
	}
	return out
}
