package cluster

import (
	"errors"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Two read-modify-writes computed on one revision: the second is refused,
// so it is read again instead of writing back the first one's old value.
func TestContainerUpdateCompareAndSet(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Config: map[string]string{"user.a": "0", "user.b": "0"}}})
	ct, _ := f.Container("c1")
	rev := ct.GetRevision()
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", IfRevision: &rev, Config: map[string]string{"user.a": "1", "user.b": "0"}})
	err := apply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", IfRevision: &rev, Config: map[string]string{"user.a": "0", "user.b": "2"}})
	if !errors.Is(err, ErrStale) {
		t.Fatalf("update computed on revision %d after another landed: %v, want ErrStale", rev, err)
	}
	got, _ := f.Container("c1")
	if got.GetConfig()["user.a"] != "1" || got.GetConfig()["user.b"] != "0" || got.GetRevision() != rev+1 {
		t.Fatalf("after a refused stale update: config %v revision %d", got.GetConfig(), got.GetRevision())
	}
	next := got.GetRevision()
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", IfRevision: &next, Config: map[string]string{"user.a": "1", "user.b": "2"}})
	got, _ = f.Container("c1")
	if got.GetConfig()["user.a"] != "1" || got.GetConfig()["user.b"] != "2" {
		t.Fatalf("retried update: %v", got.GetConfig())
	}
}

// Key deltas change only the keys they name, whatever else changed since.
func TestContainerUpdateKeyDeltas(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Config: map[string]string{"user.a": "0", "user.gone": "x"}}})
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetConfig: map[string]string{"user.b": "1"}, UnsetConfig: []string{"user.gone"}})
	got, _ := f.Container("c1")
	if len(got.GetConfig()) != 2 || got.GetConfig()["user.a"] != "0" || got.GetConfig()["user.b"] != "1" {
		t.Fatalf("config after set user.b, unset user.gone: %v", got.GetConfig())
	}
	if got.GetExpandedConfig()["user.b"] != "1" {
		t.Fatalf("expanded config not updated: %v", got.GetExpandedConfig())
	}
}
