package migration

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/dir"
)

// customVolume makes custom volume name on n1 with a file and a snapshot
// s1, recorded in the fake cluster.
func (r *rig) customVolume(name, body string) {
	r.t.Helper()
	ctx := context.Background()
	vol := r.n1.CustomVolumeName(name)
	if err := r.n1.pool.CreateVolume(ctx, vol); err != nil {
		r.t.Fatal(err)
	}
	if err := r.n1.pool.CreateSnapshot(ctx, vol, "s1"); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.n1.pool.Path(vol), "data"), []byte(body), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := r.cl.Propose(ctx, &shoalv1.VolumeCreateCommand{Volume: &shoalv1.StorageVolume{
		Pool: "default", Name: name, Node: "n1", Snapshots: []*shoalv1.Snapshot{{Name: "s1"}}}}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) customData(h *fakeHost, name string) string {
	b, _ := os.ReadFile(filepath.Join(h.pool.(*dir.Driver).Path(h.CustomVolumeName(name)), "data"))
	return string(b)
}

func (r *rig) hasCustom(h *fakeHost, name string) bool {
	ok, _ := h.pool.VolumeExists(context.Background(), h.CustomVolumeName(name))
	return ok
}

// attach gives container c a disk device on custom volume name.
func (r *rig) attach(ct, name string) {
	r.cl.mu.Lock()
	r.cl.containers[ct].Devices = map[string]*shoalv1.Device{
		"data": {Type: "disk", Config: map[string]string{"pool": "default", "source": name, "path": "/data"}}}
	r.cl.mu.Unlock()
}

func TestColdMoveCarriesVolumes(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "hello")
	r.attach("c", "v1")
	if _, err := r.e1.Move(context.Background(), r.record("c"), "n2", nil); err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
	v, _ := r.cl.Volume("default", "v1")
	if v.GetNode() != "n2" || r.customData(r.n2, "v1") != "hello" || r.hasCustom(r.n1, "v1") {
		t.Errorf("volume on %s, target reads %q, source still has it: %v", v.GetNode(), r.customData(r.n2, "v1"), r.hasCustom(r.n1, "v1"))
	}
	// The user's snapshot came along; the transfer's did not stay.
	snaps, _ := r.n2.pool.ListSnapshots(context.Background(), r.n2.CustomVolumeName("v1"))
	if !reflect.DeepEqual(snaps, []string{"s1"}) {
		t.Errorf("target snapshots %v, want [s1]", snaps)
	}
	src, _ := r.n1.pool.ListSnapshots(context.Background(), r.n1.CustomVolumeName("v1"))
	if len(src) != 0 {
		t.Errorf("source snapshots left %v", src)
	}
}

func TestColdMoveWithVolumeFails(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "hello")
	r.attach("c", "v1")
	// The container's own volume arrives, the custom volume's stream fails.
	r.n2.pool = &failReceive{Driver: r.n2.pool, vol: r.n2.CustomVolumeName("v1")}
	_, err := r.e1.Move(context.Background(), r.record("c"), "n2", nil)
	if err == nil || !strings.Contains(err.Error(), "it stays on n1") || !strings.Contains(err.Error(), "default/v1") {
		t.Fatalf("error %v", err)
	}
	r.targetSweeps("c")
	r.exactlyOnce("c", "n1", "running")
	v, _ := r.cl.Volume("default", "v1")
	if v.GetNode() != "n1" || r.customData(r.n1, "v1") != "hello" {
		t.Errorf("volume on %s reading %q, want n1 and hello", v.GetNode(), r.customData(r.n1, "v1"))
	}
}

func TestVolumeCopyAndMove(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "hello")
	src, _ := r.cl.Volume("default", "v1")
	if _, err := r.e1.CopyVolume(context.Background(), VolumeCopySpec{Source: src, Name: "v2", Target: "n2"}, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.phases, Plans[KindVolumeCopy]) {
		t.Errorf("phases %v, want %v", r.phases, Plans[KindVolumeCopy])
	}
	v2, err := r.cl.Volume("default", "v2")
	if err != nil || v2.GetNode() != "n2" || r.customData(r.n2, "v2") != "hello" || len(v2.GetSnapshots()) != 1 {
		t.Fatalf("copy %v (%v), reads %q", v2, err, r.customData(r.n2, "v2"))
	}
	// A copy onto a taken name is refused by the receiver.
	if _, err := r.e1.CopyVolume(context.Background(), VolumeCopySpec{Source: src, Name: "v2", Target: "n2"}, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("copy onto a taken name: %v", err)
	}
	if r.customData(r.n2, "v2") != "hello" {
		t.Errorf("the refused copy damaged the existing volume")
	}
	r.phases = nil
	if _, err := r.e1.MoveVolume(context.Background(), src, "n2", nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.phases, Plans[KindVolumeMove]) {
		t.Errorf("phases %v, want %v", r.phases, Plans[KindVolumeMove])
	}
	v1, _ := r.cl.Volume("default", "v1")
	if v1.GetNode() != "n2" || r.customData(r.n2, "v1") != "hello" || r.hasCustom(r.n1, "v1") {
		t.Errorf("moved volume on %s reads %q; left on n1: %v", v1.GetNode(), r.customData(r.n2, "v1"), r.hasCustom(r.n1, "v1"))
	}
}

func TestVolumeMoveRefusesUsed(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "hello")
	v, _ := r.cl.Volume("default", "v1")
	used := proto.Clone(v).(*shoalv1.StorageVolume)
	used.UsedBy = []string{"c"}
	_, err := r.e1.MoveVolume(context.Background(), used, "n2", nil)
	if err == nil || !strings.Contains(err.Error(), "used by c") {
		t.Fatalf("error %v", err)
	}
	if !r.hasCustom(r.n1, "v1") || r.hasCustom(r.n2, "v1") {
		t.Errorf("a refused move changed where the volume is")
	}
}

// failReceive is a pool whose Receive into one volume fails.
type failReceive struct {
	storage.Driver
	vol string
}

func (f *failReceive) Receive(ctx context.Context, vol, snap string, r io.Reader) error {
	if vol == f.vol {
		return errInjected
	}
	return f.Driver.Receive(ctx, vol, snap, r)
}

func TestLiveMoveCarriesVolumes(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "before")
	r.attach("c", "v1")
	// Written while the volume streams, before the freeze: only the
	// increment sent frozen carries it.
	r.onPhase = func(p Phase) {
		if p == PhaseFreeze {
			_ = os.WriteFile(filepath.Join(r.n1.pool.Path(r.n1.CustomVolumeName("v1")), "data"), []byte("late"), 0o644)
		}
	}
	if _, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil); err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
	v, _ := r.cl.Volume("default", "v1")
	if v.GetNode() != "n2" || r.customData(r.n2, "v1") != "late" || r.hasCustom(r.n1, "v1") {
		t.Errorf("volume on %s, target reads %q, source still has it: %v", v.GetNode(), r.customData(r.n2, "v1"), r.hasCustom(r.n1, "v1"))
	}
	snaps, _ := r.n2.pool.ListSnapshots(context.Background(), r.n2.CustomVolumeName("v1"))
	if !reflect.DeepEqual(snaps, []string{"s1"}) {
		t.Errorf("target snapshots %v, want [s1] (the move's dropped)", snaps)
	}
}

func TestLiveMoveWithVolumeFails(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "hello")
	r.attach("c", "v1")
	r.points["live-move-before-commit"] = errInjected
	_, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil)
	if err == nil || !strings.Contains(err.Error(), "keeps running on n1") {
		t.Fatalf("error %v", err)
	}
	r.exactlyOnce("c", "n1", "running")
	v, _ := r.cl.Volume("default", "v1")
	if v.GetNode() != "n1" || r.customData(r.n1, "v1") != "hello" {
		t.Errorf("volume on %s reading %q, want n1 and hello", v.GetNode(), r.customData(r.n1, "v1"))
	}
	if snaps, _ := r.n1.pool.ListSnapshots(context.Background(), r.n1.CustomVolumeName("v1")); !reflect.DeepEqual(snaps, []string{"s1"}) {
		t.Errorf("source snapshots %v, want [s1] (the move's removed)", snaps)
	}
}

// Replication sends the custom volumes a container attaches, as replicas
// of the volumes, before its own volume; the next round is incremental.
func TestReplicateCarriesVolumes(t *testing.T) {
	r := newRig(t)
	r.customVolume("v1", "one")
	r.attach("c", "v1")
	// dir sends whole volumes; here it passes for one that sends increments.
	r.n1.pool = claimsIncrements{r.n1.pool}
	ctx := context.Background()
	snapAll := func(snap string) {
		for _, vol := range []string{r.n1.VolumeName("c"), r.n1.CustomVolumeName("v1")} {
			if err := r.n1.pool.CreateSnapshot(ctx, vol, snap); err != nil {
				t.Fatal(err)
			}
		}
	}
	replica := filepath.Join(r.n2.pool.(*dir.Driver).Path(CustomReplicaVolume("v1")), "data")
	snapAll("ha-1")
	if _, err := r.e1.Replicate(ctx, r.record("c"), "n2", "", "ha-1"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(replica); string(b) != "one" {
		t.Fatalf("the volume's replica reads %q", b)
	}
	if ok, _ := r.n2.pool.VolumeExists(ctx, ReplicaVolume("c")); !ok {
		t.Fatalf("no replica of the container's own volume")
	}
	os.WriteFile(filepath.Join(r.n1.pool.Path(r.n1.CustomVolumeName("v1")), "data"), []byte("two"), 0o644)
	snapAll("ha-2")
	if _, err := r.e1.Replicate(ctx, r.record("c"), "n2", "ha-1", "ha-2"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(replica); string(b) != "two" {
		t.Fatalf("after the second round the volume's replica reads %q", b)
	}
	if snaps, _ := r.n2.pool.ListSnapshots(ctx, CustomReplicaVolume("v1")); !reflect.DeepEqual(snaps, []string{"ha-2"}) {
		t.Fatalf("replica snapshots %v, want [ha-2]", snaps)
	}
}

// claimsIncrements is a pool that says it sends increments (dir sends the
// whole volume each time, which a receiver applies all the same).
type claimsIncrements struct{ storage.Driver }

func (c claimsIncrements) Info() storage.Info {
	i := c.Driver.Info()
	i.OptimizedSend = true
	return i
}
