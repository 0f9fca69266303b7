package ha

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func node(name, status string, labels map[string]string) *shoalv1.Node {
	return &shoalv1.Node{Name: name, Status: status, Labels: labels}
}

func TestPolicyOf(t *testing.T) {
	if p := PolicyOf(nil); p.Enabled || p.Replicas != 1 || p.RPO != 10*time.Second {
		t.Fatalf("defaults: %+v", p)
	}
	if p := PolicyOf(map[string]string{KeyEnabled: "true", KeyReplicas: "2", KeyRPO: "3s"}); !p.Enabled || p.Replicas != 2 || p.RPO != 3*time.Second {
		t.Fatalf("set: %+v", p)
	}
}

// Replicas never land on the owner or an offline member, honour the
// container's constraints, keep the members they have, and spread.
func TestChooseReplicas(t *testing.T) {
	nodes := []*shoalv1.Node{
		node("n1", "online", nil), node("n2", "online", map[string]string{"zone": "b"}),
		node("n3", "online", map[string]string{"zone": "b"}), node("n4", "offline", nil), node("n5", "online", nil),
	}
	ct := func(cfg map[string]string, replicas ...string) *shoalv1.Container {
		c := &shoalv1.Container{Name: "db", Node: "n1", Config: cfg}
		for _, r := range replicas {
			c.Replicas = append(c.Replicas, &shoalv1.Replica{Member: r})
		}
		return c
	}
	on := map[string]string{KeyEnabled: "true"}
	busy := &shoalv1.Container{Name: "other", Node: "n5", Replicas: []*shoalv1.Replica{{Member: "n2"}, {Member: "n3"}}}
	for _, tc := range []struct {
		ct   *shoalv1.Container
		all  []*shoalv1.Container
		want string
	}{
		{ct(nil), nil, "[]"},
		{ct(on), nil, "[n2]"},
		{ct(on), []*shoalv1.Container{busy}, "[n5]"},
		{ct(map[string]string{KeyEnabled: "true", KeyReplicas: "3"}), nil, "[n2 n3 n5]"},
		{ct(map[string]string{KeyEnabled: "true", KeyReplicas: "4"}), nil, "[n2 n3 n5]"},
		{ct(on, "n3"), nil, "[n3]"},
		{ct(on, "n4"), nil, "[n2]"},
		{ct(map[string]string{KeyEnabled: "true", KeyReplicas: "2", "scheduler.constraint": "zone=b"}, "n5"), nil, "[n2 n3]"},
		// Of two current replicas the newer keeps the one slot.
		{&shoalv1.Container{Name: "db", Node: "n1", Config: on, Replicas: []*shoalv1.Replica{
			{Member: "n2", TakenUnixNano: 1}, {Member: "n5", TakenUnixNano: 2}}}, nil, "[n5]"},
	} {
		all := append(tc.all, tc.ct)
		if got := fmt.Sprint(ChooseReplicas(tc.ct, nodes, all, nil, nil)); got != tc.want {
			t.Errorf("ChooseReplicas(%v, replicas %v) = %s, want %s", tc.ct.GetConfig(), tc.ct.GetReplicas(), got, tc.want)
		}
	}
	// Members where the container would not fit come last; a current
	// replica stays where it is all the same.
	full := func(m string) error {
		if m == "n2" || m == "n3" {
			return errors.New("no room")
		}
		return nil
	}
	if got := fmt.Sprint(ChooseReplicas(ct(on), nodes, nil, full, nil)); got != "[n5]" {
		t.Errorf("with no room on n2 and n3: %s, want [n5]", got)
	}
	if got := fmt.Sprint(ChooseReplicas(ct(map[string]string{KeyEnabled: "true", KeyReplicas: "2"}, "n3"), nodes, nil, full, nil)); got != "[n3 n5]" {
		t.Errorf("with no room on n2 and n3, n3 holding a replica: %s, want [n3 n5]", got)
	}
	// A member whose pool lacks the disk for a copy is not chosen at all
	// (fewer replicas than asked rather than a send that fills it), unless
	// it already holds one (only increments go there).
	noDisk := func(m string) error {
		if m == "n3" || m == "n5" {
			return errors.New("no disk")
		}
		return nil
	}
	two := map[string]string{KeyEnabled: "true", KeyReplicas: "2"}
	if got := fmt.Sprint(ChooseReplicas(ct(two), nodes, nil, nil, noDisk)); got != "[n2]" {
		t.Errorf("with no disk on n3 and n5: %s, want [n2]", got)
	}
	if got := fmt.Sprint(ChooseReplicas(ct(two, "n3"), nodes, nil, nil, noDisk)); got != "[n3 n2]" {
		t.Errorf("n3 holds a replica already: %s, want [n3 n2]", got)
	}
}

// DiskRoom refuses a member whose pool has less free than the volume
// uses plus the headroom, names both, and never refuses a member whose
// free space nobody knows.
func TestDiskRoom(t *testing.T) {
	free := map[string]int64{"n2": 2 << 30, "n3": 1 << 30}
	room := DiskRoom(func(member, pool string) (int64, bool) {
		f, ok := free[member]
		return f, ok && pool == "default"
	}, func(context.Context, *shoalv1.Container) int64 { return 1 << 30 })
	ct := &shoalv1.Container{Name: "db", Pool: "default"}
	if err := room(ct, "n2"); err != nil {
		t.Errorf("n2 with 2 GiB free for 1 GiB: %v", err)
	}
	err := room(ct, "n3")
	if !errors.Is(err, ErrNoDisk) || !strings.Contains(err.Error(), "n3") || !strings.Contains(err.Error(), "1.1GiB") {
		t.Errorf("n3 with 1 GiB free for 1 GiB + 10%%: %v", err)
	}
	if err := room(ct, "n9"); err != nil {
		t.Errorf("a member whose free space is unknown: %v", err)
	}
}
