package ha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

type configCluster struct {
	*fakeCluster
	cfg map[string]string
}

func (c configCluster) ClusterConfig() map[string]string { return c.cfg }

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
	var heals []string
	now := time.Unix(100, 0)
	h := &Healer{IsLeader: func() bool { return true }, View: configCluster{cl, map[string]string{KeyHealingThreshold: "2s"}},
		Log: testLog(t), Now: func() time.Time { return now },
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
	heals = nil
	h.View = configCluster{cl, map[string]string{KeyHealingThreshold: "0s"}}
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
