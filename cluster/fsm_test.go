package cluster

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func apply(t *testing.T, f *FSM, m proto.Message) error {
	t.Helper()
	data, err := Encode(m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Data: data})
	if res == nil {
		return nil
	}
	return res.(error)
}

func mustApply(t *testing.T, f *FSM, m proto.Message) {
	t.Helper()
	if err := apply(t, f, m); err != nil {
		t.Fatalf("apply %T: %v", m, err)
	}
}

func TestContainerCommands(t *testing.T) {
	f := NewFSM()
	ch := f.Subscribe()
	c1 := &shoalv1.Container{Name: "c1", Node: "n1", ImageFingerprint: "abc", Config: map[string]string{"limits.cpu": "1"},
		DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: c1})
	if got := <-ch; got != (Change{"container", "c1"}) {
		t.Fatalf("change = %+v", got)
	}
	if err := apply(t, f, &shoalv1.ContainerCreateCommand{Container: c1}); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	mustApply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1", Config: map[string]string{"limits.memory": "256MiB"}})
	mustApply(t, f, &shoalv1.ContainerDesiredStateCommand{Name: "c1", DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED})
	mustApply(t, f, &shoalv1.ContainerStatusCommand{Name: "c1", Node: "n1", Status: "Stopped"})
	if err := apply(t, f, &shoalv1.ContainerStatusCommand{Name: "c1", Node: "n2", Status: "Running"}); err == nil {
		t.Fatal("status from a node that does not own the container was accepted")
	}
	mustApply(t, f, &shoalv1.SnapshotCreateCommand{Container: "c1", Snapshot: &shoalv1.Snapshot{Name: "s1"}})
	if err := apply(t, f, &shoalv1.SnapshotCreateCommand{Container: "c1", Snapshot: &shoalv1.Snapshot{Name: "s1"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate snapshot: %v", err)
	}
	got, err := f.Container("c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Config["limits.memory"] != "256MiB" || got.Config["limits.cpu"] != "" ||
		got.DesiredState != shoalv1.DesiredState_DESIRED_STATE_STOPPED || got.Status != "Stopped" ||
		len(got.Snapshots) != 1 || got.Snapshots[0].Name != "s1" {
		t.Fatalf("container after updates = %v", got)
	}
	got.Config["mutated"] = "x"
	if again, _ := f.Container("c1"); again.Config["mutated"] != "" {
		t.Fatal("Container returned a reference into the FSM")
	}
	mustApply(t, f, &shoalv1.SnapshotDeleteCommand{Container: "c1", Name: "s1"})
	if err := apply(t, f, &shoalv1.SnapshotDeleteCommand{Container: "c1", Name: "s1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing snapshot: %v", err)
	}
	mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: "c1"})
	if _, err := f.Container("c1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := apply(t, f, &shoalv1.ContainerUpdateCommand{Name: "c1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

func TestImageCommands(t *testing.T) {
	f := NewFSM()
	if err := apply(t, f, &shoalv1.AliasSetCommand{Alias: "a", Fingerprint: "ff"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alias to missing image: %v", err)
	}
	mustApply(t, f, &shoalv1.ImageAddCommand{Image: &shoalv1.Image{Fingerprint: "ff00", Nodes: []string{"n1"}}})
	mustApply(t, f, &shoalv1.ImageAddCommand{Image: &shoalv1.Image{Fingerprint: "ff00", Nodes: []string{"n2"}}})
	mustApply(t, f, &shoalv1.ImageAddCommand{Image: &shoalv1.Image{Fingerprint: "ff11"}})
	mustApply(t, f, &shoalv1.AliasSetCommand{Alias: "busybox", Fingerprint: "ff00"})
	img, err := f.ResolveImage("busybox")
	if err != nil || img.Fingerprint != "ff00" || len(img.Nodes) != 2 || len(img.Aliases) != 1 {
		t.Fatalf("resolve alias = %v, %v", img, err)
	}
	if img, err := f.ResolveImage("ff1"); err != nil || img.Fingerprint != "ff11" {
		t.Fatalf("resolve prefix = %v, %v", img, err)
	}
	if _, err := f.ResolveImage("ff"); err == nil {
		t.Fatal("ambiguous prefix resolved")
	}
	if _, err := f.ResolveImage("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing image: %v", err)
	}
	mustApply(t, f, &shoalv1.ImageDeleteCommand{Fingerprint: "ff00"})
	if _, err := f.ResolveImage("busybox"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alias survived its image: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Node: "n1",
		Snapshots: []*shoalv1.Snapshot{{Name: "s1", Config: map[string]string{"a": "b"}}}}})
	mustApply(t, f, &shoalv1.ImageAddCommand{Image: &shoalv1.Image{Fingerprint: "ff", Size: 10}})
	mustApply(t, f, &shoalv1.AliasSetCommand{Alias: "x", Fingerprint: "ff"})
	mustApply(t, f, &shoalv1.PoolCreateCommand{Pool: &shoalv1.StoragePool{Name: "default", Driver: "btrfs"}})
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "br0", Ipv4Cidr: "10.0.0.1/24"}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1"}})
	if err := apply(t, f, &shoalv1.PoolCreateCommand{Pool: &shoalv1.StoragePool{Name: "default"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate pool: %v", err)
	}

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
		t.Fatalf("restored state differs:\n%v\n%v", f.s.export(), g.s.export())
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte{0xff, 0xff}))); err == nil {
		t.Fatal("garbage snapshot restored")
	}
}

func TestDecodeRejectsUnknown(t *testing.T) {
	if _, _, err := Decode([]byte{200, 1, 2}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, _, err := Decode(nil); err == nil {
		t.Fatal("empty entry decoded")
	}
	f := NewFSM()
	defer func() {
		if recover() == nil {
			t.Fatal("Apply of an undecodable entry did not panic")
		}
	}()
	f.Apply(&raft.Log{Type: raft.LogCommand, Data: []byte{200}})
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func TestMembershipCommands(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ClusterInitCommand{Name: "c", CaCertPem: []byte("cert"), CaKeyPem: []byte("key"), GossipKey: []byte("k")})
	if err := apply(t, f, &shoalv1.ClusterInitCommand{Name: "other"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	if id := f.Identity(); id.GetName() != "c" || string(id.GetCaKeyPem()) != "key" {
		t.Fatalf("identity = %v", id)
	}
	mustApply(t, f, &shoalv1.TokenAddCommand{Name: "n2", SecretHash: "h", ExpiresUnix: 100, Role: "node"})
	for _, tc := range []struct {
		cmd  *shoalv1.TokenRedeemCommand
		want error
	}{
		{&shoalv1.TokenRedeemCommand{Name: "n2", SecretHash: "wrong", NowUnix: 10}, ErrTokenInvalid},
		{&shoalv1.TokenRedeemCommand{Name: "n3", SecretHash: "h", NowUnix: 10}, ErrTokenInvalid},
		{&shoalv1.TokenRedeemCommand{Name: "n2", SecretHash: "h", NowUnix: 100}, ErrTokenInvalid}, // expired
		{&shoalv1.TokenRedeemCommand{Name: "n2", SecretHash: "h", NowUnix: 99}, nil},
		{&shoalv1.TokenRedeemCommand{Name: "n2", SecretHash: "h", NowUnix: 99}, ErrTokenInvalid}, // reused
	} {
		if err := apply(t, f, tc.cmd); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("redeem %v = %v, want %v", tc.cmd, err, tc.want)
		}
	}
	mustApply(t, f, &shoalv1.TokenAddCommand{Name: "n4", SecretHash: "h4", ExpiresUnix: 100})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n2", Address: "a:1", CpuMillis: 2000}})
	snap, _ := f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(f.s.export(), g.s.export()) || g.Identity() == nil || len(g.s.tokens) != 1 {
		t.Fatal("identity or tokens lost in a snapshot round trip")
	}
	mustApply(t, g, &shoalv1.NodeRemoveCommand{Name: "n2"})
	if _, err := g.Node("n2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node after remove: %v", err)
	}
}

func TestContainerMove(t *testing.T) {
	f := NewFSM()
	for _, n := range []string{"a", "b"} {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c", Node: "a", Status: "Stopped"}})
	if err := apply(t, f, &shoalv1.ContainerMoveCommand{Name: "c", Node: "b", From: "b"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("move from the wrong owner: %v", err)
	}
	if err := apply(t, f, &shoalv1.ContainerMoveCommand{Name: "c", Node: "z", From: "a"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("move to an unknown node: %v", err)
	}
	mustApply(t, f, &shoalv1.ContainerMoveCommand{Name: "c", Node: "b", From: "a", DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
	ct, _ := f.Container("c")
	if ct.Node != "b" || ct.Status != "" || ct.DesiredState != shoalv1.DesiredState_DESIRED_STATE_RUNNING {
		t.Fatalf("after move: %v", ct)
	}
	big := &shoalv1.Container{Name: "big", Node: "a", Config: map[string]string{"limits.memory": "900MiB"}}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: big})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "big2", Node: "b", Config: map[string]string{"limits.memory": "900MiB"}}})
	if err := apply(t, f, &shoalv1.ContainerMoveCommand{Name: "big", Node: "b", From: "a"}); err == nil {
		t.Fatal("a move that oversubscribes its target was accepted")
	}
}

// Replica records: only from the owner, never on the owner, only on a
// known member; a move keeps them (it carries their base snapshot) but
// the one on the new owner.
func TestReplicaRecords(t *testing.T) {
	f := NewFSM()
	for _, n := range []string{"n1", "n2"} {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "db", Node: "n1"}})
	set := func(r *shoalv1.Replica) error {
		return apply(t, f, &shoalv1.ContainerReplicaSetCommand{Container: "db", Replica: r})
	}
	for _, tc := range []struct {
		r    *shoalv1.Replica
		is   error
		says string
	}{
		{&shoalv1.Replica{Member: "n1", Snapshot: "ha-1", From: "n1"}, ErrInvalidCommand, "its owner n1 cannot hold"},
		{&shoalv1.Replica{Member: "n9", Snapshot: "ha-1", From: "n1"}, ErrNotFound, `"n9"`},
		{&shoalv1.Replica{Member: "n2", Snapshot: "ha-1", From: "n2"}, ErrInUse, "from n2, but n1 owns it"},
		{&shoalv1.Replica{Member: "n2", From: "n1"}, ErrInvalidCommand, "needs a member and a snapshot"},
	} {
		if err := set(tc.r); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("set %v = %v, want %v naming %q", tc.r, err, tc.is, tc.says)
		}
	}
	if err := set(&shoalv1.Replica{Member: "n2", Snapshot: "ha-1", From: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := set(&shoalv1.Replica{Member: "n2", Snapshot: "ha-2", From: "n1"}); err != nil {
		t.Fatal(err)
	}
	ct, _ := f.Container("db")
	if len(ct.GetReplicas()) != 1 || ct.GetReplicas()[0].GetSnapshot() != "ha-2" {
		t.Fatalf("replicas %v, want n2 at ha-2 only", ct.GetReplicas())
	}
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n3", Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	if err := set(&shoalv1.Replica{Member: "n3", Snapshot: "ha-2", From: "n1"}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, f, &shoalv1.ContainerMoveCommand{Name: "db", Node: "n2", From: "n1", DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
	ct, _ = f.Container("db")
	if len(ct.GetReplicas()) != 1 || ct.GetReplicas()[0].GetMember() != "n3" || ct.GetReplicas()[0].GetFrom() != "n2" {
		t.Fatalf("replicas after a move to n2: %v, want n3's, now from n2", ct.GetReplicas())
	}
}

// Healing moves an HA container off an offline member only: to an online
// member with a replica, bumping the generation; a member that stopped
// cleanly is never healed.
func TestHealCommand(t *testing.T) {
	f := NewFSM()
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "db", Node: "n1"}})
	mustApply(t, f, &shoalv1.ContainerReplicaSetCommand{Container: "db", Replica: &shoalv1.Replica{Member: "n4", Snapshot: "ha-0", From: "n1"}})
	mustApply(t, f, &shoalv1.ContainerReplicaSetCommand{Container: "db", Replica: &shoalv1.Replica{Member: "n2", Snapshot: "ha-1", From: "n1", TakenUnixNano: 7}})
	heal := func(to string) error {
		return apply(t, f, &shoalv1.ContainerHealCommand{Name: "db", Node: to, From: "n1"})
	}
	if err := heal("n2"); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "not offline") {
		t.Fatalf("heal off an online member: %v", err)
	}
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusStopped}})
	if err := heal("n2"); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("heal off a cleanly stopped member: %v", err)
	}
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusOffline}})
	if err := heal("n3"); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "holds no replica") {
		t.Fatalf("heal to a member without a replica: %v", err)
	}
	if err := heal("n2"); err != nil {
		t.Fatal(err)
	}
	ct, _ := f.Container("db")
	if ct.GetNode() != "n2" || ct.GetGeneration() != 1 {
		t.Fatalf("after the heal: node %s generation %d", ct.GetNode(), ct.GetGeneration())
	}
	// The old owner's stale copy holds the snapshot n2 promoted: it is
	// recorded as n2's replica, to be brought up to date by an increment.
	// n4's replica stays, now from n2 (which sends in full if it lacks ha-0).
	r := ct.GetReplicas()
	if len(r) != 2 || r[0].GetMember() != "n1" || r[0].GetSnapshot() != "ha-1" || r[0].GetFrom() != "n2" || r[0].GetTakenUnixNano() != 7 ||
		r[1].GetMember() != "n4" || r[1].GetSnapshot() != "ha-0" || r[1].GetFrom() != "n2" {
		t.Fatalf("after the heal, replicas %v: want n1's stale copy at ha-1 and n4's at ha-0, both from n2", r)
	}
	if err := heal("n2"); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second heal from n1: %v", err)
	}
}

// Fits weighs a container against a member as if it ran nowhere yet: its
// own reservation does not count against it.
func TestFits(t *testing.T) {
	f := NewFSM()
	for _, n := range []string{"n1", "n2", "n3"} {
		mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: n, Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	}
	two := map[string]string{"limits.cpu": "2"}
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "db", Node: "n1", Config: two}})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "busy", Node: "n2", Config: two}})
	db, _ := f.Container("db")
	if err := f.Fits(db, "n2"); err == nil {
		t.Error("db fits on n2, whose CPUs busy holds")
	}
	for _, n := range []string{"n1", "n3"} {
		if err := f.Fits(db, n); err != nil {
			t.Errorf("db on %s: %v", n, err)
		}
	}
}

// A member's own record at start keeps an evacuation its view may not have
// caught up with; any other upsert (a restore) sets the status it carries.
func TestNodeUpsertKeepsEvacuated(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusEvacuated}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusOnline, CpuMillis: 4000}, KeepEvacuated: true})
	if n, _ := f.Node("n1"); n.GetStatus() != StatusEvacuated || n.GetCpuMillis() != 4000 {
		t.Fatalf("after the member's own record: %v, want evacuated with the new capacity", n)
	}
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n1", Status: StatusOnline}})
	if n, _ := f.Node("n1"); n.GetStatus() != StatusOnline {
		t.Fatalf("after a restore: %v", n)
	}
}
