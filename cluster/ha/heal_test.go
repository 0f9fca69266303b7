package ha

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

type configCluster struct {
	*fakeCluster
	cfg    map[string]string
	noRoom map[string]error // member → why nothing more fits there
}

func (c configCluster) ClusterConfig() map[string]string { return c.cfg }
func (c configCluster) Fits(_ *shoalv1.Container, member string) error {
	return c.noRoom[member]
}

// A heal goes to the newest replica on a member with room; when none has
// room, to the newest all the same, saying why it does not fit.
func TestHealTarget(t *testing.T) {
	cl := &fakeCluster{nodes: []*shoalv1.Node{{Name: "n1", Status: "offline"}, {Name: "n2", Status: "online"},
		{Name: "n3", Status: "online"}, {Name: "n4", Status: "offline"}}}
	ct := &shoalv1.Container{Name: "db", Node: "n1", Replicas: []*shoalv1.Replica{
		{Member: "n2", TakenUnixNano: 10}, {Member: "n3", TakenUnixNano: 20}, {Member: "n4", TakenUnixNano: 30}}}
	full := errors.New("memory: 1GiB free, 2GiB asked")
	for _, tc := range []struct {
		noRoom     map[string]error
		want       string
		wantBeyond error
	}{
		{nil, "n3", nil},
		{map[string]error{"n3": full}, "n2", nil},
		{map[string]error{"n2": full, "n3": full}, "n3", full},
	} {
		got, beyond := HealTarget(ct, configCluster{cl, nil, tc.noRoom})
		if got.GetMember() != tc.want || beyond != tc.wantBeyond {
			t.Errorf("no room on %v: HealTarget = %s, %v; want %s, %v", tc.noRoom, got.GetMember(), beyond, tc.want, tc.wantBeyond)
		}
	}
	if got, _ := HealTarget(&shoalv1.Container{Name: "x", Replicas: []*shoalv1.Replica{{Member: "n4"}}}, configCluster{cl, nil, nil}); got != nil {
		t.Errorf("HealTarget with the only replica offline = %v, want none", got)
	}
}

// The leader heals an HA container only once its member has been offline
// for the threshold, to the online member with the newest replica; a
// stopped member (clean shutdown) is never healed, nor a container
// without HA; threshold 0 turns healing off.
func TestHealer(t *testing.T) {
	cl := &fakeCluster{nodes: []*shoalv1.Node{{Name: "n1", Status: "offline"}, {Name: "n2", Status: "online"},
		{Name: "n3", Status: "online"}, {Name: "n4", Status: "stopped"}},
		cts: map[string]*shoalv1.Container{
			"db": {Name: "db", Node: "n1", Config: map[string]string{KeyEnabled: "true"}, Replicas: []*shoalv1.Replica{
				{Member: "n2", TakenUnixNano: 10}, {Member: "n3", TakenUnixNano: 20}}},
			"plain": {Name: "plain", Node: "n1", Replicas: []*shoalv1.Replica{{Member: "n2"}}},
			"clean": {Name: "clean", Node: "n4", Config: map[string]string{KeyEnabled: "true"}, Replicas: []*shoalv1.Replica{{Member: "n2"}}},
		}}
	var heals, events []string
	now := time.Unix(100, 0)
	h := &Healer{IsLeader: func() bool { return true }, View: configCluster{cl, map[string]string{KeyHealingThreshold: "2s"}, nil},
		Log: testLog(t), Now: func() time.Time { return now },
		Event: func(action, resource, detail string) { events = append(events, action+" "+resource+" "+detail) },
		Propose: func(_ context.Context, m proto.Message) error {
			c := m.(*shoalv1.ContainerHealCommand)
			heals = append(heals, fmt.Sprintf("%s:%s->%s", c.GetName(), c.GetFrom(), c.GetNode()))
			return nil
		}}
	h.Check(context.Background())
	now = now.Add(1900 * time.Millisecond)
	h.Check(context.Background())
	if len(heals) != 0 {
		t.Fatalf("healed before the threshold: %v", heals)
	}
	now = now.Add(200 * time.Millisecond)
	h.Check(context.Background())
	if fmt.Sprint(heals) != "[db:n1->n3]" {
		t.Fatalf("heals %v, want [db:n1->n3] (the newest replica)", heals)
	}
	// The replica was taken at 10 ns past the epoch, the member seen
	// offline at 100 s: at most that much is lost.
	if len(events) != 1 || !strings.HasPrefix(events[0], "container-healed db n1 -> n3 (data as of ") || !strings.HasSuffix(events[0], "lost ≤ 1m40s)") {
		t.Fatalf("events %q", events)
	}
	heals = nil
	h.View = configCluster{cl, map[string]string{KeyHealingThreshold: "0s"}, nil}
	now = now.Add(time.Minute)
	h.Check(context.Background())
	if len(heals) != 0 {
		t.Fatalf("healing off, yet %v", heals)
	}
}

type fenceHost struct {
	fenced  bool
	stopped []string
	started []string
}

func (f *fenceHost) SetFenced(b bool) { f.fenced = b }
func (f *fenceHost) Fenced() bool     { return f.fenced }
func (f *fenceHost) FenceContainer(_ context.Context, name string) error {
	f.stopped = append(f.stopped, name)
	return nil
}
func (f *fenceHost) Reconcile(_ context.Context, name string) error {
	f.started = append(f.started, name)
	return nil
}

// Past the lease without quorum the member fences itself and stops its
// HA containers (only those); with quorum back it lifts the fence and
// reconciles them.
func TestFencer(t *testing.T) {
	cl := &fakeCluster{cts: map[string]*shoalv1.Container{
		"db":    {Name: "db", Node: "n1", Config: map[string]string{KeyEnabled: "true"}},
		"plain": {Name: "plain", Node: "n1"},
		"other": {Name: "other", Node: "n2", Config: map[string]string{KeyEnabled: "true"}},
	}}
	contact := time.Second
	host := &fenceHost{}
	f := &Fencer{Self: "n1", Contact: func() time.Duration { return contact }, View: cl, Host: host, Log: testLog(t)}
	f.Check(context.Background())
	if host.fenced || len(host.stopped) != 0 {
		t.Fatalf("fenced within the lease: %+v", host)
	}
	contact = FenceLease + time.Millisecond
	f.Check(context.Background())
	if !host.fenced || fmt.Sprint(host.stopped) != "[db]" {
		t.Fatalf("past the lease: %+v, want fenced with db stopped", host)
	}
	contact = 0
	f.Check(context.Background())
	if host.fenced || fmt.Sprint(host.started) != "[db]" {
		t.Fatalf("quorum back: %+v, want the fence lifted and db reconciled", host)
	}
}

// shoal cluster heal: an offline member's HA containers go now; a member
// the cluster sees alive only with the operator's word, and then it is
// recorded offline first; containers without a replica are reported.
func TestHealMember(t *testing.T) {
	cl := &fakeCluster{nodes: []*shoalv1.Node{{Name: "n1", Status: "online"}, {Name: "n2", Status: "online"}, {Name: "n3", Status: "offline"}},
		cts: map[string]*shoalv1.Container{
			"db":   {Name: "db", Node: "n1", Config: map[string]string{KeyEnabled: "true"}, Replicas: []*shoalv1.Replica{{Member: "n2"}}},
			"bare": {Name: "bare", Node: "n1", Config: map[string]string{KeyEnabled: "true"}},
			"off":  {Name: "off", Node: "n3", Config: map[string]string{KeyEnabled: "true"}, Replicas: []*shoalv1.Replica{{Member: "n2"}}},
		}}
	var proposed []string
	propose := func(_ context.Context, m proto.Message) error {
		switch c := m.(type) {
		case *shoalv1.NodeUpsertCommand:
			proposed = append(proposed, c.GetNode().GetName()+"="+c.GetNode().GetStatus())
		case *shoalv1.ContainerHealCommand:
			proposed = append(proposed, c.GetName()+"->"+c.GetNode())
		}
		return nil
	}
	ctx := context.Background()
	v := configCluster{cl, nil, nil}
	if _, _, err := HealMember(ctx, v, propose, "n2", "n9", false); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("unknown member: %v", err)
	}
	if _, _, err := HealMember(ctx, v, propose, "n2", "n2", true); !errors.Is(err, ErrNotDead) {
		t.Errorf("healing the member that answers: %v", err)
	}
	if _, _, err := HealMember(ctx, v, propose, "n2", "n1", false); !errors.Is(err, ErrNotDead) || !strings.Contains(err.Error(), "--i-know-it-is-fenced") {
		t.Errorf("an online member without the flag: %v", err)
	}
	if len(proposed) != 0 {
		t.Fatalf("refused heals proposed %v", proposed)
	}
	v.noRoom = map[string]error{"n2": errors.New("cpu: 0 free")}
	healed, skipped, err := HealMember(ctx, v, propose, "n2", "n3", false)
	if err != nil || fmt.Sprint(healed) != "[off:n2 (beyond its reservations: cpu: 0 free)]" || len(skipped) != 0 {
		t.Fatalf("offline n3: %v %v %v", healed, skipped, err)
	}
	proposed = nil
	v.noRoom = nil
	healed, skipped, err = HealMember(ctx, v, propose, "n2", "n1", true)
	if err != nil || fmt.Sprint(healed) != "[db:n2]" || len(skipped) != 1 || !strings.Contains(skipped[0], "bare: no online member") {
		t.Fatalf("n1 with the flag: %v %v %v", healed, skipped, err)
	}
	if proposed[0] != "n1=offline" {
		t.Fatalf("proposed %v, want n1 recorded offline first", proposed)
	}
}
