package migration

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

var errInjected = errors.New("injected")

func running() shoalv1.DesiredState { return shoalv1.DesiredState_DESIRED_STATE_RUNNING }

func (r *rig) record(name string) *shoalv1.Container {
	r.t.Helper()
	ct, err := r.cl.Container(name)
	if err != nil {
		r.t.Fatal(err)
	}
	return ct
}

func TestLiveMoveStopAndCopy(t *testing.T) {
	r := newRig(t)
	p := &progress{}
	res, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", p)
	if err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
	if got := r.read(r.n2, "c", "after"); got != "2" {
		t.Errorf("file written after the snapshot reads %q on the target, want 2", got)
	}
	if got := r.n2.snapshots("c"); !reflect.DeepEqual(got, []string{"s1"}) {
		t.Errorf("target's snapshots %v, want [s1]", got)
	}
	if res["mode"] != ModeStopAndCopy || res["node"] != "n2" || res["live"] != "true" {
		t.Errorf("result %v", res)
	}
	if !reflect.DeepEqual(r.phases, Plans[KindLiveMove]) {
		t.Errorf("phases %v, want %v", r.phases, Plans[KindLiveMove])
	}
	if !r.n1.called("freeze") || !r.n1.called("checkpoint") || r.n1.called("thaw") {
		t.Errorf("source calls %v", r.n1.calls)
	}
	want := []string{"checkpointing", "restoring on n2"}
	for _, w := range want {
		if !contains(p.phases, w) {
			t.Errorf("progress %v lacks %q", p.phases, w)
		}
	}
	if len(r.ev.got) != 1 || r.ev.got[0] != "n1 container-moved c" {
		t.Errorf("events %v", r.ev.got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLiveMovePostCopy(t *testing.T) {
	r := newRig(t)
	r.n1.postCopy, r.n2.postCopy, r.n1.memory = true, true, 256<<20
	res, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
	if res["mode"] != ModePostCopy {
		t.Errorf("mode %q, want postcopy", res["mode"])
	}
	if r.n1.pages.waits != 1 {
		t.Errorf("the source waited %d times for its pages to go, want 1", r.n1.pages.waits)
	}
	if !r.n2.called("lazy-pages") {
		t.Error("the target did not start the lazy-pages daemon")
	}
}

func TestLiveModeChoice(t *testing.T) {
	for _, tc := range []struct {
		name           string
		mode           string
		post, tgtPost  bool
		memory         int64
		want           string
		wantErr        error
		wantNoteSubstr string
	}{
		{"auto small", "", true, true, 8 << 20, ModeStopAndCopy, nil, "moves faster in the freeze"},
		{"auto big", "", true, true, 256 << 20, ModePostCopy, nil, ""},
		{"auto no uffd", "", false, true, 256 << 20, ModeStopAndCopy, nil, "post-copy unavailable"},
		{"postcopy refused", ModePostCopy, true, false, 0, "", ErrUnsupported, ""},
		{"precopy refused", ModePreCopy, true, true, 0, "", ErrUnsupported, ""},
		{"stop-and-copy", ModeStopAndCopy, true, true, 256 << 20, ModeStopAndCopy, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.n1.postCopy, r.n1.memory = tc.post, tc.memory
			ct := r.record("c")
			ct.Config = map[string]string{"migration.mode": tc.mode}
			mode, note, err := r.e1.liveMode(context.Background(), ct, tc.tgtPost)
			if !errors.Is(err, tc.wantErr) || mode != tc.want || !strings.Contains(note, tc.wantNoteSubstr) {
				t.Errorf("liveMode = %q, %q, %v; want %q, ~%q, %v", mode, note, err, tc.want, tc.wantNoteSubstr, tc.wantErr)
			}
		})
	}
}

// TestLiveMoveFaults is the live move's fault matrix: a failure at each
// phase leaves the container running on the source only, says where it
// failed, and leaves nothing on the target.
func TestLiveMoveFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		arm    func(r *rig)
		while  string // "" for an error returned as is
		errIs  error
		thawed bool
	}{
		{"volume refused", func(r *rig) { r.n2.fail["pool"] = errInjected }, "sending the volume", errInjected, false},
		{"before freeze", func(r *rig) { r.points["live-move-before-freeze"] = errInjected }, "", errInjected, false},
		{"freeze", func(r *rig) { r.n1.fail["freeze"] = errInjected }, "freezing", errInjected, true},
		{"checkpoint", func(r *rig) { r.n1.fail["checkpoint"] = errInjected }, "checkpointing", errInjected, true},
		{"after dump", func(r *rig) { r.points["live-move-after-dump"] = errInjected }, "checkpointing", errInjected, true},
		{"corrupt checkpoint", func(r *rig) { r.points["live-move-corrupt-checkpoint"] = errInjected }, "restoring on n2", ErrCorrupt, true},
		{"restore", func(r *rig) { r.n2.fail["restore"] = errInjected }, "restoring on n2", errInjected, true},
		{"before commit", func(r *rig) { r.points["live-move-before-commit"] = errInjected }, "committing", errInjected, true},
		{"commit lost", func(r *rig) {
			r.cl.failPropose = func(cmd proto.Message) (error, bool) {
				if _, ok := cmd.(*shoalv1.ContainerMoveCommand); ok {
					return errInjected, false
				}
				return nil, false
			}
		}, "committing", errInjected, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			tc.arm(r)
			start := time.Now()
			_, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil)
			if err == nil {
				t.Fatal("the move succeeded")
			}
			if tc.errIs != nil && !errors.Is(err, tc.errIs) {
				t.Errorf("error %v is not %v", err, tc.errIs)
			}
			if tc.while != "" && !strings.Contains(err.Error(), "failed while "+tc.while+"; it keeps running on n1") {
				t.Errorf("error %q does not say it failed while %s and keeps running on n1", err, tc.while)
			}
			if tc.while == "" && strings.Contains(err.Error(), "failed while") {
				t.Errorf("error %q: a failure before the freeze is returned as is", err)
			}
			if got := r.n1.called("thaw"); got != tc.thawed {
				t.Errorf("source thawed: %v, want %v", got, tc.thawed)
			}
			r.exactlyOnce("c", "n1", "running")
			if time.Since(start) > 5*time.Second {
				t.Errorf("the failed move took %v: the target waited for a commit that could not come", time.Since(start))
			}
		})
	}
}

// TestLiveMoveCommitAmbiguous: a commit whose proposal failed but landed
// is a move done: the target runs it, the source drops its copy.
func TestLiveMoveCommitAmbiguous(t *testing.T) {
	r := newRig(t)
	r.cl.failPropose = func(cmd proto.Message) (error, bool) {
		if _, ok := cmd.(*shoalv1.ContainerMoveCommand); ok {
			return errors.New("leadership lost"), true
		}
		return nil, false
	}
	if _, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil); err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
}

func TestLiveMoveNoCRIU(t *testing.T) {
	r := newRig(t)
	r.n1.fail["can-checkpoint"] = errors.New("criu check: missing")
	_, err := r.e1.LiveMove(context.Background(), r.record("c"), "n2", nil)
	if !errors.Is(err, ErrUnsupported) || err.Error() != "criu check: missing" {
		t.Fatalf("error %v, want the host's reason as ErrUnsupported", err)
	}
	r.exactlyOnce("c", "n1", "running")
}

func TestRestoreRefusesBadStreams(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		name string
		msg  *shoalv1.RestoreContainerRequest
		want error
	}{
		{"no header", &shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Commit{Commit: true}}, ErrInvalid},
		{"other version", &shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{Header: &shoalv1.RestoreHeader{Version: Version + 1}}}, ErrUnsupported},
		{"no name", &shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{Header: &shoalv1.RestoreHeader{Version: Version}}}, ErrInvalid},
		{"owned here", &shoalv1.RestoreContainerRequest{Msg: &shoalv1.RestoreContainerRequest_Header{Header: &shoalv1.RestoreHeader{Version: Version, Container: &shoalv1.Container{Name: "c"}}}}, ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, _ := r.e1.peers.RestoreContainer(context.Background(), "n1")
			_ = stream.Send(tc.msg)
			_, err := stream.Recv()
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestColdMove(t *testing.T) {
	r := newRig(t)
	p := &progress{}
	res, err := r.e1.Move(context.Background(), r.record("c"), "n2", p)
	if err != nil {
		t.Fatal(err)
	}
	r.exactlyOnce("c", "n2", "running")
	if r.read(r.n2, "c", "after") != "2" || res["node"] != "n2" || res["bytes"] == "0" {
		t.Errorf("target file %q, result %v", r.read(r.n2, "c", "after"), res)
	}
	if !reflect.DeepEqual(r.phases, Plans[KindColdMove]) {
		t.Errorf("phases %v, want %v", r.phases, Plans[KindColdMove])
	}
	if !contains(p.phases, "stopping") || !contains(p.phases, "starting on n2") {
		t.Errorf("progress %v", p.phases)
	}
}

func TestColdMoveFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		arm  func(r *rig)
	}{
		{"target unreachable", func(r *rig) { delete(r.e1.peers.(*pipePeers).targets, "n2") }},
		{"commit", func(r *rig) {
			r.cl.failPropose = func(cmd proto.Message) (error, bool) {
				if _, ok := cmd.(*shoalv1.ContainerMoveCommand); ok {
					return errInjected, false
				}
				return nil, false
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			tc.arm(r)
			_, err := r.e1.Move(context.Background(), r.record("c"), "n2", nil)
			if err == nil || !strings.Contains(err.Error(), "move c to n2 failed; it stays on n1") {
				t.Fatalf("error %v", err)
			}
			// Given back: running again on the source.
			r.targetSweeps("c")
			r.exactlyOnce("c", "n1", "running")
		})
	}
}

func TestCopy(t *testing.T) {
	for _, target := range []string{"n1", "n2"} {
		t.Run(target, func(t *testing.T) {
			r := newRig(t)
			src := r.record("c")
			spec := CopySpec{Source: src, Copy: &shoalv1.Container{Name: "d", Node: target, Pool: "default",
				DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED, Snapshots: src.GetSnapshots()}}
			if _, err := r.e1.Copy(context.Background(), spec, nil); err != nil {
				t.Fatal(err)
			}
			r.exactlyOnce("d", target, "stopped")
			if got := r.read(r.host(target), "d", "after"); got != "2" {
				t.Errorf("the copy's file reads %q", got)
			}
			r.exactlyOnce("c", "n1", "running")
			kind := KindCopy
			if target == "n1" {
				kind = KindCopyLocal
			}
			if !reflect.DeepEqual(r.phases, Plans[kind]) {
				t.Errorf("phases %v, want %v", r.phases, Plans[kind])
			}
		})
	}
}

func TestCopyFaults(t *testing.T) {
	r := newRig(t)
	src := r.record("c")
	// A name taken on the target: refused, the existing one untouched.
	spec := CopySpec{Source: src, Copy: &shoalv1.Container{Name: "c", Node: "n2", Pool: "default"}}
	if _, err := r.e1.Copy(context.Background(), spec, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("copy onto an existing name: %v, want ErrExists", err)
	}
	r.exactlyOnce("c", "n1", "running")
	// A local copy whose record cannot be written leaves no volume.
	r.cl.failPropose = func(cmd proto.Message) (error, bool) {
		if _, ok := cmd.(*shoalv1.ContainerCreateCommand); ok {
			return errInjected, false
		}
		return nil, false
	}
	spec = CopySpec{Source: src, Copy: &shoalv1.Container{Name: "d", Node: "n1", Pool: "default"}}
	if _, err := r.e1.Copy(context.Background(), spec, nil); !errors.Is(err, errInjected) {
		t.Fatalf("copy with a failing commit: %v", err)
	}
	if r.n1.hasVolume("d") {
		t.Error("a copy that was never recorded left its volume")
	}
}

func TestRefresh(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	src := r.record("c")
	spec := CopySpec{Source: src, Copy: &shoalv1.Container{Name: "d", Node: "n2", Pool: "default",
		DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED, Snapshots: src.GetSnapshots()}}
	if _, err := r.e1.Copy(ctx, spec, nil); err != nil {
		t.Fatal(err)
	}
	// The source moves on: a new snapshot and a new file.
	r.write(r.n1, "c", "later", "3")
	if err := r.n1.pool.CreateSnapshot(ctx, "containers/c", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := r.cl.Propose(ctx, &shoalv1.SnapshotCreateCommand{Container: "c", Snapshot: &shoalv1.Snapshot{Name: "s2"}}); err != nil {
		t.Fatal(err)
	}
	r.phases = nil
	res, err := r.e1.Refresh(ctx, r.record("c"), r.record("d"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res["base"] != "s1" || r.read(r.n2, "d", "later") != "3" {
		t.Errorf("result %v, file %q", res, r.read(r.n2, "d", "later"))
	}
	d := r.record("d")
	if got := snapshotNames(d); !reflect.DeepEqual(got, []string{"s1", "s2"}) {
		t.Errorf("the copy's recorded snapshots %v, want [s1 s2]", got)
	}
	if got := r.n2.snapshots("d"); !reflect.DeepEqual(got, []string{"s1", "s2"}) {
		t.Errorf("the copy's snapshots on n2 %v, want [s1 s2]", got)
	}
	if !reflect.DeepEqual(r.phases, Plans[KindRefresh]) {
		t.Errorf("phases %v, want %v", r.phases, Plans[KindRefresh])
	}
	// A refresh of a running copy, or one sharing nothing, is refused.
	d.DesiredState = running()
	if _, _, err := PlanRefresh(r.record("c"), d); !errors.Is(err, ErrConflict) {
		t.Errorf("refresh of a running copy: %v", err)
	}
	d.DesiredState, d.Snapshots = shoalv1.DesiredState_DESIRED_STATE_STOPPED, nil
	if _, _, err := PlanRefresh(r.record("c"), d); !errors.Is(err, ErrConflict) {
		t.Errorf("refresh sharing no snapshot: %v", err)
	}
}

// TestEvacuateAndRestore evacuates n1 (c moves live, e cannot be placed
// and is stopped in place) and restores it (c moves back, e starts).
func TestEvacuateAndRestore(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.container("e", running(), nil)
	sources := map[string]*Source{"n1": r.e1, "n2": r.e2}
	f := Fleet{
		Members: r.cl,
		Place: func(ct *shoalv1.Container) (string, error) {
			if ct.GetName() == "e" {
				return "", errors.New("no member fits e")
			}
			return "n2", nil
		},
		Move: func(ctx context.Context, ct *shoalv1.Container, target string, live bool) error {
			e := sources[ct.GetNode()]
			var err error
			if live {
				_, err = e.LiveMove(ctx, ct, target, nil)
			} else {
				_, err = e.Move(ctx, ct, target, nil)
			}
			return err
		},
	}
	resp, err := r.e1.Evacuate(ctx, f, "n1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(resp.GetMoved(), []string{"c:n2:live"}) || !reflect.DeepEqual(resp.GetStopped(), []string{"e"}) {
		t.Fatalf("evacuate: moved %v stopped %v", resp.GetMoved(), resp.GetStopped())
	}
	r.exactlyOnce("c", "n2", "running")
	r.exactlyOnce("e", "n1", "stopped")
	if n, _ := r.cl.Member("n1"); n.GetStatus() != "evacuated" {
		t.Errorf("n1 is %s", n.GetStatus())
	}
	back, err := r.e1.RestoreMember(ctx, f, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.GetMovedBack(), []string{"c:n2:live"}) || !reflect.DeepEqual(back.GetStarted(), []string{"e"}) {
		t.Fatalf("restore: moved back %v started %v", back.GetMovedBack(), back.GetStarted())
	}
	r.exactlyOnce("c", "n1", "running")
	r.exactlyOnce("e", "n1", "running")
	for _, name := range []string{"c", "e"} {
		for _, k := range []string{EvacuatedKey, EvacuateOriginKey, EvacuateLiveKey} {
			if v, ok := r.record(name).GetConfig()[k]; ok {
				t.Errorf("%s keeps %s=%s after the restore", name, k, v)
			}
		}
	}
	if _, err := r.e1.RestoreMember(ctx, f, "n1"); !errors.Is(err, ErrConflict) {
		t.Errorf("restoring a member that is online: %v", err)
	}
}

// TestPlansMatchMachines: the table docs and tests read is the machines'.
func TestPlansMatchMachines(t *testing.T) {
	r := newRig(t)
	ct := r.record("c")
	local := CopySpec{Source: ct, Copy: &shoalv1.Container{Name: "d", Node: "n1"}}
	remote := CopySpec{Source: ct, Copy: &shoalv1.Container{Name: "d", Node: "n2"}}
	for kind, m := range map[Kind]*machine{
		KindColdMove:   r.e1.coldMove(ct, "n2", noProgress{}).machine,
		KindLiveMove:   r.e1.liveMove(ct, "n2", noProgress{}).machine,
		KindCopyLocal:  r.e1.copyRun(local, noProgress{}).machine,
		KindCopy:       r.e1.copyRun(remote, noProgress{}).machine,
		KindVolumeCopy: r.e1.volumeCopyRun(VolumeCopySpec{Source: &shoalv1.StorageVolume{}}, noProgress{}).machine,
		KindVolumeMove: r.e1.volumeMoveRun(&shoalv1.StorageVolume{}, "n2", noProgress{}).machine,
	} {
		if !reflect.DeepEqual(m.phases(), Plans[kind]) || m.kind != kind {
			t.Errorf("%s: machine runs %v, Plans says %v", kind, m.phases(), Plans[kind])
		}
	}
}
