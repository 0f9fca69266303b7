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

func volumeDisk(pool, name string) *shoalv1.Device {
	return &shoalv1.Device{Type: "disk", Config: map[string]string{"pool": pool, "source": name, "path": "/data"}}
}

// volumeFSM has members n1 and n2, pool default, and volume default/v1 on n1.
func volumeFSM(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM()
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusOnline, CpuMillis: 2000, MemoryBytes: 1 << 30}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n2", Status: StatusOnline, CpuMillis: 2000, MemoryBytes: 1 << 30}})
	mustApply(t, f, &shoalv1.PoolCreateCommand{Pool: &shoalv1.StoragePool{Name: "default", Driver: "dir"}})
	mustApply(t, f, &shoalv1.VolumeCreateCommand{Volume: &shoalv1.StorageVolume{Pool: "default", Name: "v1", Node: "n1"}})
	return f
}

func TestVolumes(t *testing.T) {
	f := volumeFSM(t)
	for _, bad := range []*shoalv1.StorageVolume{
		{Pool: "default", Name: "v1", Node: "n1"},   // exists
		{Pool: "nope", Name: "v2", Node: "n1"},      // no pool
		{Pool: "default", Name: "v2", Node: "nope"}, // no member
		{Pool: "default", Name: "", Node: "n1"},     // no name
	} {
		if err := apply(t, f, &shoalv1.VolumeCreateCommand{Volume: bad}); err == nil {
			t.Errorf("create %v: accepted", bad)
		}
	}
	// Attaching: only on the volume's member, and only an existing one.
	if err := apply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "far", Node: "n2",
		Devices: map[string]*shoalv1.Device{"data": volumeDisk("default", "v1")}}}); !errors.Is(err, ErrInUse) {
		t.Fatalf("attach from another member: %v", err)
	}
	if err := apply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c0", Node: "n1",
		Devices: map[string]*shoalv1.Device{"data": volumeDisk("default", "nope")}}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attach a missing volume: %v", err)
	}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Node: "n1"}})
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetDevices: true,
		Devices: map[string]*shoalv1.Device{"data": volumeDisk("default", "v1")}})
	v, _ := f.Volume("default", "v1")
	if !slices.Equal(v.GetUsedBy(), []string{"c1"}) {
		t.Fatalf("used by %v", v.GetUsedBy())
	}
	// A used volume is not deleted, renamed or moved alone.
	for _, cmd := range []proto.Message{
		&shoalv1.VolumeDeleteCommand{Pool: "default", Name: "v1"},
		&shoalv1.VolumeRenameCommand{Pool: "default", Name: "v1", NewName: "v9"},
		&shoalv1.VolumeMoveCommand{Pool: "default", Name: "v1", Node: "n2", From: "n1"},
	} {
		if err := apply(t, f, cmd); !errors.Is(err, ErrInUse) {
			t.Errorf("%T of a used volume: %v", cmd, err)
		}
	}
	// A container move carries exactly the volumes it attaches.
	if err := apply(t, f, &shoalv1.ContainerMoveCommand{Name: "c1", Node: "n2", From: "n1"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("a move without its volume: %v", err)
	}
	if ct, _ := f.Container("c1"); ct.GetNode() != "n1" {
		t.Fatalf("a refused move moved it to %s", ct.GetNode())
	}
	mustApply(t, f, &shoalv1.ContainerMoveCommand{Name: "c1", Node: "n2", From: "n1", Volumes: []string{"default/v1"}})
	if v, _ := f.Volume("default", "v1"); v.GetNode() != "n2" {
		t.Fatalf("volume on %s after the move", v.GetNode())
	}
	// Detached, it can be renamed, snapshotted, moved and deleted.
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", KeepConfig: true, SetDevices: true})
	mustApply(t, f, &shoalv1.VolumeRenameCommand{Pool: "default", Name: "v1", NewName: "v2"})
	if _, err := f.Volume("default", "v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name after rename: %v", err)
	}
	mustApply(t, f, &shoalv1.VolumeSnapshotCreateCommand{Pool: "default", Name: "v2", Snapshot: &shoalv1.Snapshot{Name: "s1"}})
	if err := apply(t, f, &shoalv1.VolumeSnapshotCreateCommand{Pool: "default", Name: "v2", Snapshot: &shoalv1.Snapshot{Name: "s1"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate snapshot: %v", err)
	}
	if err := apply(t, f, &shoalv1.VolumeMoveCommand{Pool: "default", Name: "v2", Node: "n1", From: "n1"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("move from the wrong member: %v", err)
	}
	mustApply(t, f, &shoalv1.VolumeMoveCommand{Pool: "default", Name: "v2", Node: "n1", From: "n2"})
	mustApply(t, f, &shoalv1.VolumeUpdateCommand{Pool: "default", Name: "v2", Config: map[string]string{"size": "1GiB"}, Description: "d"})
	v, _ = f.Volume("default", "v2")
	if v.GetNode() != "n1" || v.GetConfig()["size"] != "1GiB" || v.GetDescription() != "d" || len(v.GetSnapshots()) != 1 {
		t.Fatalf("volume %v", v)
	}
	mustApply(t, f, &shoalv1.VolumeSnapshotDeleteCommand{Pool: "default", Name: "v2", Snapshot: "s1"})
	mustApply(t, f, &shoalv1.VolumeDeleteCommand{Pool: "default", Name: "v2"})
	if len(f.Volumes("")) != 0 {
		t.Fatalf("volumes left: %v", f.Volumes(""))
	}
}

func TestVolumesSnapshot(t *testing.T) {
	f := volumeFSM(t)
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Node: "n1",
		Devices: map[string]*shoalv1.Device{"data": volumeDisk("default", "v1")}}})
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
	if v, _ := g.Volume("default", "v1"); !slices.Equal(v.GetUsedBy(), []string{"c1"}) {
		t.Fatalf("restored volume used by %v", v.GetUsedBy())
	}
}

// Healing an HA container brings the custom volumes it attaches along in
// the same entry: their replicas on the new owner become the volumes.
func TestHealMovesVolumes(t *testing.T) {
	f := volumeFSM(t)
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "db", Node: "n1",
		Devices: map[string]*shoalv1.Device{"data": volumeDisk("default", "v1")}}})
	mustApply(t, f, &shoalv1.ContainerReplicaSetCommand{Container: "db", Replica: &shoalv1.Replica{Member: "n2", Snapshot: "ha-1", From: "n1"}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusOffline}})
	mustApply(t, f, &shoalv1.ContainerHealCommand{Name: "db", Node: "n2", From: "n1"})
	if v, _ := f.Volume("default", "v1"); v.GetNode() != "n2" {
		t.Fatalf("after the heal the volume is on %s, want n2 with its container", v.GetNode())
	}
}
