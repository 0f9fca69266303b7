package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// DefaultProfile is the profile that always exists and that new containers
// apply unless told otherwise.
const DefaultProfile = "default"

// ExpandedConfig is the config a container runs with: the one the cluster
// expanded from its profiles, or, for a record built outside the FSM (a
// test's, a request's), its own. (An expansion holds every key of the
// container's own config, so an empty one means an empty config too: proto
// decodes empty maps as nil.)
func ExpandedConfig(ct *shoalv1.Container) map[string]string {
	if ct.GetExpandedConfig() != nil {
		return ct.GetExpandedConfig()
	}
	return ct.GetConfig()
}

// ExpandedDevices is the devices a container runs with (see ExpandedConfig).
func ExpandedDevices(ct *shoalv1.Container) map[string]*shoalv1.Device {
	if ct.GetExpandedDevices() != nil {
		return ct.GetExpandedDevices()
	}
	return ct.GetDevices()
}

// expand computes the effective config and devices of profiles in order,
// then the container's own. A profile that does not exist is an error.
func (s *state) expand(profiles []string, cfg map[string]string, devs map[string]*shoalv1.Device) (map[string]string, map[string]*shoalv1.Device, error) {
	outCfg := map[string]string{}
	outDevs := map[string]*shoalv1.Device{}
	for _, name := range profiles {
		p, ok := s.profiles[name]
		if !ok {
			return nil, nil, fmt.Errorf("profile %q: %w", name, ErrNotFound)
		}
		for k, v := range p.GetConfig() {
			outCfg[k] = v
		}
		for k, d := range p.GetDevices() {
			outDevs[k] = proto.Clone(d).(*shoalv1.Device)
		}
	}
	for k, v := range cfg {
		outCfg[k] = v
	}
	for k, d := range devs {
		outDevs[k] = proto.Clone(d).(*shoalv1.Device)
	}
	return outCfg, outDevs, nil
}

// expandContainer recomputes a recorded container's expanded fields.
func (s *state) expandContainer(ct *shoalv1.Container) error {
	cfg, devs, err := s.expand(ct.GetProfiles(), ct.GetConfig(), ct.GetDevices())
	if err != nil {
		return fmt.Errorf("container %q: %w", ct.GetName(), err)
	}
	ct.ExpandedConfig, ct.ExpandedDevices = cfg, devs
	return nil
}

// checkProfiles refuses a profile list naming one twice.
func checkProfiles(container string, profiles []string) error {
	for i, p := range profiles {
		if slices.Contains(profiles[:i], p) {
			return fmt.Errorf("container %q: profile %q is listed twice: %w", container, p, ErrInvalidCommand)
		}
	}
	return nil
}

// profileUsers are the containers applying a profile, sorted.
func (s *state) profileUsers(name string) []string {
	var out []string
	for _, k := range sortedKeys(s.containers) {
		if slices.Contains(s.containers[k].GetProfiles(), name) {
			out = append(out, k)
		}
	}
	return out
}

func (s *state) applyProfile(m proto.Message) (Change, error) {
	switch c := m.(type) {
	case *shoalv1.ProfileCreateCommand:
		p := c.GetProfile()
		if p.GetName() == "" {
			return Change{}, fmt.Errorf("a profile needs a name: %w", ErrInvalidCommand)
		}
		if _, ok := s.profiles[p.GetName()]; ok {
			return Change{}, fmt.Errorf("profile %q: %w", p.GetName(), ErrExists)
		}
		rec := proto.Clone(p).(*shoalv1.Profile)
		rec.UsedBy = nil
		s.profiles[p.GetName()] = rec
		return Change{"profile", p.GetName()}, nil
	case *shoalv1.ProfileUpdateCommand:
		p := c.GetProfile()
		if _, ok := s.profiles[p.GetName()]; !ok {
			return Change{}, fmt.Errorf("profile %q: %w", p.GetName(), ErrNotFound)
		}
		rec := proto.Clone(p).(*shoalv1.Profile)
		rec.UsedBy = nil
		s.profiles[p.GetName()] = rec
		for _, name := range s.profileUsers(p.GetName()) {
			// Cannot fail: every profile a container names exists.
			_ = s.expandContainer(s.containers[name])
		}
		return Change{"profile", p.GetName()}, nil
	case *shoalv1.ProfileRenameCommand:
		p, ok := s.profiles[c.GetName()]
		if !ok {
			return Change{}, fmt.Errorf("profile %q: %w", c.GetName(), ErrNotFound)
		}
		if c.GetName() == DefaultProfile {
			return Change{}, fmt.Errorf("profile %q cannot be renamed: %w", DefaultProfile, ErrInvalidCommand)
		}
		if c.GetNewName() == "" {
			return Change{}, fmt.Errorf("profile %q: a rename needs a new name: %w", c.GetName(), ErrInvalidCommand)
		}
		if _, ok := s.profiles[c.GetNewName()]; ok {
			return Change{}, fmt.Errorf("profile %q: %w", c.GetNewName(), ErrExists)
		}
		rec := proto.Clone(p).(*shoalv1.Profile)
		rec.Name = c.GetNewName()
		delete(s.profiles, c.GetName())
		s.profiles[rec.GetName()] = rec
		for _, name := range s.profileUsers(c.GetName()) {
			ct := s.containers[name]
			for i, x := range ct.Profiles {
				if x == c.GetName() {
					ct.Profiles[i] = c.GetNewName()
				}
			}
		}
		return Change{"profile", rec.GetName()}, nil
	case *shoalv1.ProfileDeleteCommand:
		if _, ok := s.profiles[c.GetName()]; !ok {
			return Change{}, fmt.Errorf("profile %q: %w", c.GetName(), ErrNotFound)
		}
		if c.GetName() == DefaultProfile {
			return Change{}, fmt.Errorf("profile %q cannot be deleted: %w", DefaultProfile, ErrInvalidCommand)
		}
		if users := s.profileUsers(c.GetName()); len(users) > 0 {
			return Change{}, fmt.Errorf("profile %q is used by %s: %w", c.GetName(), strings.Join(users, ", "), ErrInUse)
		}
		delete(s.profiles, c.GetName())
		return Change{"profile", c.GetName()}, nil
	}
	panic(fmt.Sprintf("fsm: no profile apply for %T", m))
}

// Profile returns a profile with the containers that use it.
func (f *FSM) Profile(name string) (*shoalv1.Profile, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.s.profiles[name]
	if !ok {
		return nil, fmt.Errorf("profile %q: %w", name, ErrNotFound)
	}
	out := proto.Clone(p).(*shoalv1.Profile)
	out.UsedBy = f.s.profileUsers(name)
	return out, nil
}

// Profiles returns every profile, sorted by name, with its users.
func (f *FSM) Profiles() []*shoalv1.Profile {
	f.mu.RLock()
	names := sortedKeys(f.s.profiles)
	f.mu.RUnlock()
	out := make([]*shoalv1.Profile, 0, len(names))
	for _, n := range names {
		if p, err := f.Profile(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Expand returns the effective config and devices a container with these
// profiles, config and devices would have now (what a create or an update
// is validated against before it is proposed).
func (f *FSM) Expand(profiles []string, cfg map[string]string, devs map[string]*shoalv1.Device) (map[string]string, map[string]*shoalv1.Device, error) {
	return f.ExpandWith(profiles, cfg, devs, nil)
}

// ExpandWith is Expand with one profile as it would be after an update
// (nil: none).
func (f *FSM) ExpandWith(profiles []string, cfg map[string]string, devs map[string]*shoalv1.Device, changed *shoalv1.Profile) (map[string]string, map[string]*shoalv1.Device, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.s
	if changed != nil {
		over := *s
		over.profiles = maps.Clone(s.profiles)
		over.profiles[changed.GetName()] = changed
		s = &over
	}
	return s.expand(profiles, cfg, devs)
}
