package cluster

import (
	"errors"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// TestPlacementSkipsMembersThatCannotEnforce checks that a member's
// recorded unenforceable keys reach the scheduler: a container setting one
// is placed elsewhere, and a create on that member is refused when applied.
func TestPlacementSkipsMembersThatCannotEnforce(t *testing.T) {
	const why = "this host cannot enforce I/O weights (no BFQ scheduler on its block devices; offered: none mq-deadline kyber)"
	f := NewFSM()
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "a", Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30,
		UnenforceableKeys: map[string]string{"limits.disk.priority": why}}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "b", Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	cfg := map[string]string{"limits.disk.priority": "5", "limits.memory": "64MiB"}
	req, err := PlacementRequest("c", cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.SchedulerSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if node, _, err := scheduler.Place(snap, req, scheduler.Spread); err != nil || node != "b" {
		t.Fatalf("placed on %q, %v; want b", node, err)
	}
	err = apply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c", Node: "a", Config: cfg}})
	if !errors.Is(err, scheduler.ErrNoFit) || !strings.Contains(err.Error(), "limits.disk.priority: "+why) {
		t.Fatalf("create on a: %v", err)
	}
	// Without the key, a is fine.
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "d", Node: "a", Config: map[string]string{"limits.memory": "64MiB"}}})
}
