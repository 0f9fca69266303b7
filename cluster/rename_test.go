package cluster

import (
	"errors"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// A rename keeps the record but its name, moves the address index with it,
// and is refused for a running container, a taken name and no name.
func TestContainerRename(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/29"}})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n2"}})
	mustApply(t, f, nicCt("a", "02:00:00:00:00:01", ""))
	mustApply(t, f, nicCt("b", "02:00:00:00:00:02", ""))
	mustApply(t, f, &shoalv1.SnapshotCreateCommand{Container: "a", Snapshot: &shoalv1.Snapshot{Name: "s1"}})
	mustApply(t, f, &shoalv1.ContainerReplicaSetCommand{Container: "a", Replica: &shoalv1.Replica{Member: "n2", Snapshot: "ha-1", From: "n1"}})
	ip := nicOf(t, f, "a").GetIpv4()

	mustApply(t, f, &shoalv1.ContainerDesiredStateCommand{Name: "a", DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
	if err := apply(t, f, &shoalv1.ContainerRenameCommand{Name: "a", NewName: "c"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("rename of a running container: %v, want ErrInUse", err)
	}
	mustApply(t, f, &shoalv1.ContainerDesiredStateCommand{Name: "a", DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED})
	if err := apply(t, f, &shoalv1.ContainerRenameCommand{Name: "a", NewName: "b"}); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto b: %v, want ErrExists", err)
	}
	if err := apply(t, f, &shoalv1.ContainerRenameCommand{Name: "a"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("rename to nothing: %v, want ErrInvalidCommand", err)
	}
	if err := apply(t, f, &shoalv1.ContainerRenameCommand{Name: "zz", NewName: "y"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename of a missing container: %v, want ErrNotFound", err)
	}
	ch := f.Subscribe()
	mustApply(t, f, &shoalv1.ContainerRenameCommand{Name: "a", NewName: "c"})
	if got := <-ch; got != (Change{"container", "c"}) {
		t.Fatalf("change = %+v", got)
	}
	if _, err := f.Container("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name still there: %v", err)
	}
	c := nicOf(t, f, "c")
	if c.GetIpv4() != ip {
		t.Fatalf("address after rename %q, want %q", c.GetIpv4(), ip)
	}
	ct, _ := f.Container("c")
	if len(ct.GetSnapshots()) != 1 || len(ct.GetReplicas()) != 0 {
		t.Fatalf("renamed record: snapshots %v, replicas %v (want s1, none)", ct.GetSnapshots(), ct.GetReplicas())
	}
	f.mu.RLock()
	owner, _ := f.s.addrs.owner("app", ip)
	f.mu.RUnlock()
	if owner != "c/eth0" {
		t.Fatalf("address %s indexed to %q, want c/eth0", ip, owner)
	}
	// The MAC is still taken (by c), the address too.
	if err := apply(t, f, nicCt("d", "02:00:00:00:00:01", "")); err == nil {
		t.Fatal("a new container took the renamed one's MAC")
	}
	// A snapshot round trip keeps the new name.
	g := roundTrip(t, f)
	if _, err := g.Container("c"); err != nil {
		t.Fatal(err)
	}
}

// A snapshot rename keeps the snapshot and refuses a taken or missing name.
func TestSnapshotRename(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1", Node: "n1"}})
	mustApply(t, f, &shoalv1.SnapshotCreateCommand{Container: "c1", Snapshot: &shoalv1.Snapshot{Name: "s1", CreatedAtUnixNano: 5, ExpiresAtUnixNano: 9}})
	mustApply(t, f, &shoalv1.SnapshotCreateCommand{Container: "c1", Snapshot: &shoalv1.Snapshot{Name: "s2"}})
	if err := apply(t, f, &shoalv1.SnapshotRenameCommand{Container: "c1", Name: "s1", NewName: "s2"}); !errors.Is(err, ErrExists) {
		t.Fatalf("onto s2: %v", err)
	}
	if err := apply(t, f, &shoalv1.SnapshotRenameCommand{Container: "c1", Name: "nope", NewName: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	mustApply(t, f, &shoalv1.SnapshotRenameCommand{Container: "c1", Name: "s1", NewName: "first"})
	ct, _ := f.Container("c1")
	if sn := ct.GetSnapshots()[0]; sn.GetName() != "first" || sn.GetCreatedAtUnixNano() != 5 || sn.GetExpiresAtUnixNano() != 9 {
		t.Fatalf("renamed snapshot %v", sn)
	}
}
