package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// validateDevices checks each device of a devices map a user gave.
func validateDevices(devs map[string]*shoalv1.Device) error {
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		d := devs[name]
		if err := config.ValidateDevice(name, d.GetType(), d.GetConfig()); err != nil {
			return toStatus(err)
		}
	}
	return nil
}

// checkExpanded validates what a container would run with: its expanded
// config as a whole, and no two devices at one path.
func checkExpanded(cfg map[string]string, devs map[string]*shoalv1.Device) error {
	if err := config.ValidateStored(cfg); err != nil {
		return toStatus(err)
	}
	paths := map[string]string{}
	for name, d := range devs {
		if d.GetType() == config.DeviceProxy {
			continue
		}
		p := d.GetConfig()["path"]
		if p == "" {
			p = d.GetConfig()["source"]
		}
		paths[name] = p
	}
	return toStatus(config.DevicePaths(paths))
}

// changedCreationOnly names a creation-only key whose effective value an
// update would change ("" if none).
func changedCreationOnly(before, after map[string]string) string {
	keys := map[string]string{}
	maps.Copy(keys, before)
	maps.Copy(keys, after)
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if config.CreationOnly(k) && before[k] != after[k] {
			return k
		}
	}
	return ""
}

// CreateProfile records a new profile.
func (s *Server) CreateProfile(ctx context.Context, req *shoalv1.CreateProfileRequest) (*shoalv1.CreateProfileResponse, error) {
	p := req.GetProfile()
	if err := config.ValidateName("name", p.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkProfile(p); err != nil {
		return nil, err
	}
	rec := &shoalv1.Profile{Name: p.GetName(), Description: p.GetDescription(), Config: p.GetConfig(), Devices: p.GetDevices()}
	if err := s.propose(ctx, &shoalv1.ProfileCreateCommand{Profile: rec}); err != nil {
		return nil, err
	}
	out, err := s.fsm.Profile(p.GetName())
	return &shoalv1.CreateProfileResponse{Profile: out}, toStatus(err)
}

// checkProfile validates a profile's own keys and devices.
func (s *Server) checkProfile(p *shoalv1.Profile) error {
	if err := config.Validate(p.GetConfig()); err != nil {
		return toStatus(err)
	}
	return validateDevices(p.GetDevices())
}

// ListProfiles lists every profile with its users.
func (s *Server) ListProfiles(ctx context.Context, req *shoalv1.ListProfilesRequest) (*shoalv1.ListProfilesResponse, error) {
	return &shoalv1.ListProfilesResponse{Profiles: s.fsm.Profiles()}, nil
}

// GetProfile returns one profile.
func (s *Server) GetProfile(ctx context.Context, req *shoalv1.GetProfileRequest) (*shoalv1.GetProfileResponse, error) {
	p, err := s.fsm.Profile(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.GetProfileResponse{Profile: p}, nil
}

// UpdateProfile changes a profile. Nothing changes unless every container
// using it would still have a valid config; the owners apply the change,
// live where the key allows (limits), at the next start otherwise.
func (s *Server) UpdateProfile(ctx context.Context, req *shoalv1.UpdateProfileRequest) (*shoalv1.UpdateProfileResponse, error) {
	cur, err := s.fsm.Profile(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	next := proto.Clone(cur).(*shoalv1.Profile)
	next.UsedBy = nil
	if req.GetReplace() {
		p := req.GetProfile()
		next.Description, next.Config, next.Devices = p.GetDescription(), p.GetConfig(), p.GetDevices()
	}
	if req.GetSetDescription() {
		next.Description = req.GetDescription()
	}
	if next.Config == nil {
		next.Config = map[string]string{}
	}
	for k, v := range req.GetSet() {
		next.Config[k] = v
	}
	for _, k := range req.GetUnset() {
		if _, ok := next.Config[k]; !ok {
			return nil, invalid(k, fmt.Sprintf("profile %q does not set it", cur.GetName()))
		}
		delete(next.Config, k)
	}
	if next.Devices == nil {
		next.Devices = map[string]*shoalv1.Device{}
	}
	for k, d := range req.GetSetDevices() {
		next.Devices[k] = d
	}
	for _, k := range req.GetRemoveDevices() {
		if _, ok := next.Devices[k]; !ok {
			return nil, notFound(fmt.Sprintf("device %q: profile %q has no such device (has: %s)", k, cur.GetName(), deviceNames(cur.GetDevices())))
		}
		delete(next.Devices, k)
	}
	if err := s.checkProfile(next); err != nil {
		return nil, err
	}
	for _, name := range cur.GetUsedBy() {
		ct, err := s.fsm.Container(name)
		if err != nil {
			continue
		}
		cfg, devs, err := s.fsm.ExpandWith(ct.GetProfiles(), ct.GetConfig(), ct.GetDevices(), next)
		if err != nil {
			return nil, toStatus(err)
		}
		if err := checkExpanded(cfg, devs); err != nil {
			return nil, about("container "+name, err)
		}
		if k := changedCreationOnly(cluster.ExpandedConfig(ct), cfg); k != "" {
			return nil, precondition(fmt.Sprintf("%s: can only be set when a container is created, and container %s uses profile %q", k, name, cur.GetName()))
		}
		if err := s.checkHA(cfg, devs, ct.GetPool()); err != nil {
			return nil, about("container "+name, err)
		}
		if err := s.checkVolumesOn(name, ct.GetNode(), devs); err != nil {
			return nil, err
		}
	}
	if err := s.propose(ctx, &shoalv1.ProfileUpdateCommand{Profile: next}); err != nil {
		return nil, err
	}
	// The owners act on the change (they reconcile the profile's users);
	// those here do so before answering, so a set is live when it returns.
	for _, name := range cur.GetUsedBy() {
		if ct, err := s.fsm.Container(name); err == nil && ct.GetNode() == s.node.Name() {
			if err := s.node.Reconcile(ctx, name); err != nil {
				return nil, about("container "+name, err)
			}
		}
	}
	out, err := s.fsm.Profile(req.GetName())
	return &shoalv1.UpdateProfileResponse{Profile: out}, toStatus(err)
}

// RenameProfile renames a profile; the containers using it follow.
func (s *Server) RenameProfile(ctx context.Context, req *shoalv1.RenameProfileRequest) (*shoalv1.RenameProfileResponse, error) {
	if err := config.ValidateName("new_name", req.GetNewName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetName() == cluster.DefaultProfile {
		return nil, invalid("name", "the default profile cannot be renamed")
	}
	if err := s.propose(ctx, &shoalv1.ProfileRenameCommand{Name: req.GetName(), NewName: req.GetNewName()}); err != nil {
		return nil, err
	}
	return &shoalv1.RenameProfileResponse{}, nil
}

// DeleteProfile deletes a profile no container uses.
func (s *Server) DeleteProfile(ctx context.Context, req *shoalv1.DeleteProfileRequest) (*shoalv1.DeleteProfileResponse, error) {
	if req.GetName() == cluster.DefaultProfile {
		return nil, invalid("name", "the default profile cannot be deleted")
	}
	if err := s.propose(ctx, &shoalv1.ProfileDeleteCommand{Name: req.GetName()}); err != nil {
		return nil, err
	}
	return &shoalv1.DeleteProfileResponse{}, nil
}

// deviceNames lists a devices map's names for a message.
func deviceNames(devs map[string]*shoalv1.Device) string {
	if len(devs) == 0 {
		return "none"
	}
	names := slices.Collect(maps.Keys(devs))
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// createProfiles is the profile list a create applies: the request's, or
// default when it names none and does not ask for none.
func createProfiles(req *shoalv1.CreateContainerRequest) ([]string, error) {
	if req.GetNoProfiles() {
		if len(req.GetProfiles()) > 0 {
			return nil, invalid("no_profiles", "no profiles asked for, and profiles named too")
		}
		return nil, nil
	}
	if len(req.GetProfiles()) == 0 {
		return []string{cluster.DefaultProfile}, nil
	}
	return req.GetProfiles(), nil
}

// updatedDevices is a container's own devices after an update's additions
// and removals; a device only a profile gives cannot be removed here.
func updatedDevices(ct *shoalv1.Container, set map[string]*shoalv1.Device, remove []string) (map[string]*shoalv1.Device, error) {
	out := map[string]*shoalv1.Device{}
	for k, d := range ct.GetDevices() {
		out[k] = d
	}
	for k, d := range set {
		out[k] = d
	}
	for _, k := range remove {
		if _, ok := out[k]; ok {
			delete(out, k)
			continue
		}
		if _, ok := cluster.ExpandedDevices(ct)[k]; ok {
			return nil, precondition(fmt.Sprintf("device %q of container %s comes from a profile (%s): change the profile, or override the device", k, ct.GetName(), strings.Join(ct.GetProfiles(), ", ")))
		}
		return nil, notFound(fmt.Sprintf("device %q: container %s has no such device (has: %s)", k, ct.GetName(), deviceNames(cluster.ExpandedDevices(ct))))
	}
	return out, nil
}
