package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// fakeCluster is a View whose Propose applies replica commands, as the
// FSM does.
type fakeCluster struct {
	mu    sync.Mutex
	nodes []*shoalv1.Node
	cts   map[string]*shoalv1.Container
}

func (f *fakeCluster) Containers() []*shoalv1.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*shoalv1.Container
	for _, c := range f.cts {
		out = append(out, proto.Clone(c).(*shoalv1.Container))
	}
	return out
}
func (f *fakeCluster) Nodes() []*shoalv1.Node { return f.nodes }
func (f *fakeCluster) Container(name string) (*shoalv1.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cts[name]
	if !ok {
		return nil, errors.New("not found")
	}
	return proto.Clone(c).(*shoalv1.Container), nil
}
func (f *fakeCluster) propose(_ context.Context, m proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c := m.(type) {
	case *shoalv1.ContainerReplicaSetCommand:
		ct := f.cts[c.GetContainer()]
		ct.Replicas = slices.DeleteFunc(ct.Replicas, func(r *shoalv1.Replica) bool { return r.GetMember() == c.GetReplica().GetMember() })
		ct.Replicas = append(ct.Replicas, c.GetReplica())
	case *shoalv1.ContainerReplicaDropCommand:
		ct := f.cts[c.GetContainer()]
		ct.Replicas = slices.DeleteFunc(ct.Replicas, func(r *shoalv1.Replica) bool { return r.GetMember() == c.GetMember() })
	}
	return nil
}

// fakeHost keeps snapshot names per container and the replicas it holds.
type fakeHost struct {
	snaps    map[string][]string
	replicas []string
}

func (h *fakeHost) SnapshotVolume(_ context.Context, ct *shoalv1.Container, snap string) error {
	h.snaps[ct.GetName()] = append(h.snaps[ct.GetName()], snap)
	return nil
}
func (h *fakeHost) VolumeSnapshots(_ context.Context, ct *shoalv1.Container, _ string) ([]string, error) {
	return slices.Clone(h.snaps[ct.GetName()]), nil
}
func (h *fakeHost) DeleteVolumeSnapshot(_ context.Context, ct *shoalv1.Container, snap string) error {
	h.snaps[ct.GetName()] = slices.DeleteFunc(h.snaps[ct.GetName()], func(s string) bool { return s == snap })
	return nil
}
func (h *fakeHost) Replicas(context.Context) ([]string, error) { return slices.Clone(h.replicas), nil }
func (h *fakeHost) DeleteReplica(_ context.Context, name string) error {
	h.replicas = slices.DeleteFunc(h.replicas, func(s string) bool { return s == name })
	return nil
}

type send struct{ member, base, snap string }

func rig(t *testing.T) (*Replicator, *fakeCluster, *fakeHost, *[]send, *time.Time) {
	t.Helper()
	cl := &fakeCluster{nodes: []*shoalv1.Node{{Name: "n1", Status: "online"}, {Name: "n2", Status: "online"}, {Name: "n3", Status: "online"}},
		cts: map[string]*shoalv1.Container{"db": {Name: "db", Node: "n1", Status: "Running",
			Config: map[string]string{KeyEnabled: "true", KeyRPO: "4s"}}}}
	host := &fakeHost{snaps: map[string][]string{}}
	var sent []send
	now := time.Unix(1000, 0)
	r := &Replicator{Self: "n1", View: cl, Host: host, Propose: cl.propose, Now: func() time.Time { return now },
		Send: func(_ context.Context, ct *shoalv1.Container, member, base, snap string) (int64, error) {
			sent = append(sent, send{member, base, snap})
			return 100, nil
		}}
	return r, cl, host, &sent, &now
}

// The first round sends in full, the next on the snapshot the replica
// holds; the owner keeps only the snapshot the replica is based on.
func TestReplicateIncrementally(t *testing.T) {
	r, cl, host, sent, now := rig(t)
	ctx := context.Background()
	if got := r.due(); len(got) != 1 {
		t.Fatalf("due = %v, want db (no replica yet)", got)
	}
	if err := r.Replicate(ctx, cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	first := (*sent)[0]
	if first.member != "n2" || first.base != "" {
		t.Fatalf("first send %+v, want a full one to n2", first)
	}
	if got := r.due(); len(got) != 0 {
		t.Fatalf("due right after a round: %v", got)
	}
	*now = now.Add(3 * time.Second) // past RPO - RPO/4
	if got := r.due(); len(got) != 1 {
		t.Fatalf("due at lag 3s with RPO 4s = %v, want db", got)
	}
	if err := r.Replicate(ctx, cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	second := (*sent)[1]
	if second.base != first.snap {
		t.Fatalf("second send %+v, want an increment on %s", second, first.snap)
	}
	if got := host.snaps["db"]; fmt.Sprint(got) != fmt.Sprint([]string{second.snap}) {
		t.Fatalf("owner keeps %v, want only %s", got, second.snap)
	}
	rep := cl.cts["db"].GetReplicas()[0]
	if rep.GetSnapshot() != second.snap || rep.GetFrom() != "n1" || rep.GetTakenUnixNano() != now.UnixNano() || rep.GetLastBytes() != 100 {
		t.Fatalf("recorded %v", rep)
	}
}

// A healed owner promoted at a round whose record never came (its old
// owner died between the stream and the record) lacks the recorded base:
// it sends on its own newest snapshot, which the member may hold, instead
// of in full.
func TestReplicateOnUnrecordedRound(t *testing.T) {
	r, cl, host, sent, _ := rig(t)
	cl.cts["db"].Replicas = []*shoalv1.Replica{{Member: "n2", Snapshot: "ha-0old", From: "n3"}}
	host.snaps["db"] = []string{"ha-0new"} // the promoted replica's only snapshot
	if err := r.Replicate(context.Background(), cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	if s := (*sent)[0]; s.member != "n2" || s.base != "ha-0new" {
		t.Fatalf("send %+v, want an increment on ha-0new", s)
	}
	// Without any earlier snapshot of its own, in full.
	r2, cl2, _, sent2, _ := rig(t)
	cl2.cts["db"].Replicas = []*shoalv1.Replica{{Member: "n2", Snapshot: "ha-0old", From: "n3"}}
	if err := r2.Replicate(context.Background(), cl2.cts["db"]); err != nil {
		t.Fatal(err)
	}
	if s := (*sent2)[0]; s.base != "" {
		t.Fatalf("send %+v, want a full one", s)
	}
}

// A replica member that goes offline is replaced: the new one gets a full
// copy; the old one's record is parked, and the owner keeps its base
// snapshot, until it is back online and not chosen (the newer replica
// keeps the slot): then its record and that snapshot go.
func TestReplicaReplacedWhenItsMemberGoesOffline(t *testing.T) {
	r, cl, host, sent, now := rig(t)
	ctx := context.Background()
	if err := r.Replicate(ctx, cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	base := (*sent)[0].snap
	cl.nodes[1].Status = "offline"
	if got := r.due(); len(got) != 1 {
		t.Fatalf("due after n2 went offline = %v, want db", got)
	}
	*now = now.Add(time.Second)
	if err := r.Replicate(ctx, cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	if s := (*sent)[1]; s.member != "n3" || s.base != "" {
		t.Fatalf("send %+v, want a full one to n3", s)
	}
	if reps := cl.cts["db"].GetReplicas(); len(reps) != 2 || !slices.ContainsFunc(reps, func(r *shoalv1.Replica) bool { return r.GetMember() == "n2" && r.GetSnapshot() == base }) {
		t.Fatalf("replicas %v, want n3's and n2's parked at %s", reps, base)
	}
	if !slices.Contains(host.snaps["db"], base) {
		t.Fatalf("the owner deleted %s, the base of n2's parked replica: %v", base, host.snaps["db"])
	}
	if got := r.due(); len(got) != 0 {
		t.Fatalf("due with n2's replica parked = %v, want nothing", got)
	}

	cl.nodes[1].Status = "online"
	if got := r.due(); len(got) != 1 {
		t.Fatalf("due with n2 back and not chosen = %v, want db (to drop its record)", got)
	}
	if err := r.Replicate(ctx, cl.cts["db"]); err != nil {
		t.Fatal(err)
	}
	if reps := cl.cts["db"].GetReplicas(); len(reps) != 1 || reps[0].GetMember() != "n3" {
		t.Fatalf("replicas %v, want only n3", reps)
	}
	if slices.Contains(host.snaps["db"], base) {
		t.Fatalf("the owner still keeps %s: %v", base, host.snaps["db"])
	}
}

// A container healed here keeps its old owner's record, parked on the
// snapshot this member promoted; when that member is back, it is sent an
// increment on that snapshot, not the whole volume.
func TestReturningMemberGetsAnIncrement(t *testing.T) {
	r, cl, host, sent, now := rig(t)
	ctx := context.Background()
	ct := cl.cts["db"]
	ct.Config[KeyReplicas] = "2"
	ct.Replicas = []*shoalv1.Replica{{Member: "n2", Snapshot: "ha-promoted", TakenUnixNano: now.Add(-time.Minute).UnixNano(), From: "n1"}}
	host.snaps["db"] = []string{"ha-promoted"}
	cl.nodes[1].Status = "offline"
	if err := r.Replicate(ctx, ct); err != nil {
		t.Fatal(err)
	}
	if len(*sent) != 1 || (*sent)[0].member != "n3" {
		t.Fatalf("with n2 away, sent %+v, want one send to n3", *sent)
	}
	cl.nodes[1].Status = "online"
	*now = now.Add(100 * time.Millisecond)
	if got := r.due(); len(got) != 1 {
		t.Fatalf("due with n2 back = %v, want db", got)
	}
	if err := r.Replicate(ctx, ct); err != nil {
		t.Fatal(err)
	}
	var toN2 []send
	for _, s := range *sent {
		if s.member == "n2" {
			toN2 = append(toN2, s)
		}
	}
	if len(toN2) != 1 || toN2[0].base != "ha-promoted" {
		t.Fatalf("sends to n2: %+v, want one increment on ha-promoted", toN2)
	}
}

// A failed send records nothing and leaves the previous base in place.
func TestFailedSendRecordsNothing(t *testing.T) {
	r, cl, host, _, _ := rig(t)
	r.Send = func(context.Context, *shoalv1.Container, string, string, string) (int64, error) {
		return 0, errors.New("link down")
	}
	if err := r.Replicate(context.Background(), cl.cts["db"]); err == nil {
		t.Fatal("Replicate succeeded with every send failing")
	}
	if reps := cl.cts["db"].GetReplicas(); len(reps) != 0 {
		t.Fatalf("replicas recorded after a failed send: %v", reps)
	}
	if len(host.snaps["db"]) != 1 {
		t.Fatalf("owner snapshots %v", host.snaps["db"])
	}
}

// Replicas of containers the cluster no longer has, or that this member
// now owns, are deleted; one no record names is deleted at the second
// collect that finds it so; one recorded stays.
func TestCollect(t *testing.T) {
	r, cl, host, _, _ := rig(t)
	cl.cts["theirs"] = &shoalv1.Container{Name: "theirs", Node: "n2", Replicas: []*shoalv1.Replica{{Member: "n1"}}}
	cl.cts["unwanted"] = &shoalv1.Container{Name: "unwanted", Node: "n2", Replicas: []*shoalv1.Replica{{Member: "n3"}}}
	host.replicas = []string{"gone", "db", "theirs", "unwanted"}
	r.collect(context.Background())
	if fmt.Sprint(host.replicas) != "[theirs unwanted]" {
		t.Fatalf("replicas after a collect: %v, want [theirs unwanted]", host.replicas)
	}
	r.collect(context.Background())
	if fmt.Sprint(host.replicas) != "[theirs]" {
		t.Fatalf("replicas after a second collect: %v, want [theirs]", host.replicas)
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
