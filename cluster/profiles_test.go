package cluster

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func disk(src, path string) *shoalv1.Device {
	return &shoalv1.Device{Type: "disk", Config: map[string]string{"source": src, "path": path}}
}

func TestProfiles(t *testing.T) {
	f := NewFSM()
	if _, err := f.Profile(DefaultProfile); err != nil {
		t.Fatalf("no default profile in a new FSM: %v", err)
	}
	mustApply(t, f, &shoalv1.ProfileUpdateCommand{Profile: &shoalv1.Profile{Name: "default", Config: map[string]string{"limits.cpu": "1", "user.a": "default"}}})
	mustApply(t, f, &shoalv1.ProfileCreateCommand{Profile: &shoalv1.Profile{Name: "big",
		Config:  map[string]string{"limits.memory": "1GiB", "user.a": "big"},
		Devices: map[string]*shoalv1.Device{"data": disk("/srv", "/data")}}})
	if err := apply(t, f, &shoalv1.ProfileCreateCommand{Profile: &shoalv1.Profile{Name: "big"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate profile: %v", err)
	}
	ct := &shoalv1.Container{Name: "c1", Profiles: []string{"default", "big"},
		Config:  map[string]string{"limits.memory": "256MiB"},
		Devices: map[string]*shoalv1.Device{"logs": disk("/var/log", "/logs")}}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: ct})
	got, _ := f.Container("c1")
	// Profiles in order, then the container's own keys.
	want := map[string]string{"limits.cpu": "1", "limits.memory": "256MiB", "user.a": "big"}
	if !sameMap(got.GetExpandedConfig(), want) {
		t.Fatalf("expanded config = %v, want %v", got.GetExpandedConfig(), want)
	}
	if len(got.GetExpandedDevices()) != 2 || len(got.GetDevices()) != 1 {
		t.Fatalf("devices: own %v, expanded %v", got.GetDevices(), got.GetExpandedDevices())
	}
	// A profile change reaches its users in the same entry.
	mustApply(t, f, &shoalv1.ProfileUpdateCommand{Profile: &shoalv1.Profile{Name: "big", Config: map[string]string{"limits.cpu": "2"}}})
	got, _ = f.Container("c1")
	if got.GetExpandedConfig()["limits.cpu"] != "2" || got.GetExpandedConfig()["user.a"] != "default" || got.GetExpandedDevices()["data"] != nil {
		t.Fatalf("after the profile change: %v %v", got.GetExpandedConfig(), got.GetExpandedDevices())
	}
	// Used profiles are not deleted; the default never is.
	if err := apply(t, f, &shoalv1.ProfileDeleteCommand{Name: "big"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete of a used profile: %v", err)
	}
	if err := apply(t, f, &shoalv1.ProfileDeleteCommand{Name: "default"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("delete of default: %v", err)
	}
	// A rename follows into the containers.
	mustApply(t, f, &shoalv1.ProfileRenameCommand{Name: "big", NewName: "large"})
	got, _ = f.Container("c1")
	if !slices.Equal(got.GetProfiles(), []string{"default", "large"}) {
		t.Fatalf("profiles after rename = %v", got.GetProfiles())
	}
	p, _ := f.Profile("large")
	if !slices.Equal(p.GetUsedBy(), []string{"c1"}) {
		t.Fatalf("used_by = %v", p.GetUsedBy())
	}
	// A container naming a missing profile, or one twice, is refused and
	// changes nothing.
	if err := apply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetProfiles: true, Profiles: []string{"nope"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing profile: %v", err)
	}
	if err := apply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetProfiles: true, Profiles: []string{"large", "large"}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("profile twice: %v", err)
	}
	if err := apply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c2", Profiles: []string{"nope"}}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("create with a missing profile: %v", err)
	}
	if _, err := f.Container("c2"); err == nil {
		t.Fatal("c2 recorded")
	}
	after, _ := f.Container("c1")
	if !proto.Equal(after, got) {
		t.Fatalf("refused updates changed c1:\n%v\n%v", got, after)
	}
	// Dropping the profiles leaves the container's own.
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetProfiles: true})
	mustApply(t, f, &shoalv1.ProfileDeleteCommand{Name: "large"})
	got, _ = f.Container("c1")
	if !sameMap(got.GetExpandedConfig(), map[string]string{"limits.memory": "256MiB"}) || len(got.GetExpandedDevices()) != 1 {
		t.Fatalf("without profiles: %v %v", got.GetExpandedConfig(), got.GetExpandedDevices())
	}
}

func TestProfilesSnapshot(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ProfileCreateCommand{Profile: &shoalv1.Profile{Name: "p", Config: map[string]string{"user.x": "1"}}})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Profiles: []string{"p"}}})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(f.s.export(), g.s.export()) {
		t.Fatalf("restored state differs")
	}
	// A snapshot from before profiles: containers expand to their own
	// config and the default profile exists.
	old := &shoalv1.FSMSnapshot{Version: snapshotVersion, Containers: []*shoalv1.Container{{Name: "c1", Config: map[string]string{"user.y": "2"}}}}
	b, _ := proto.Marshal(old)
	h := NewFSM()
	if err := h.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	ct, _ := h.Container("c1")
	if ct.GetExpandedConfig()["user.y"] != "2" {
		t.Fatalf("old container expanded = %v", ct.GetExpandedConfig())
	}
	if _, err := h.Profile(DefaultProfile); err != nil {
		t.Fatal(err)
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
