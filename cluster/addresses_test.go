package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/network/ipam"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func nicCt(name, mac, ip string) *shoalv1.ContainerCreateCommand {
	return &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n1",
		Nics: []*shoalv1.NIC{{Name: "eth0", Network: "app", Hwaddr: mac, Ipv4: ip}}}}
}

func nicOf(t *testing.T, f *FSM, name string) *shoalv1.NIC {
	t.Helper()
	ct, err := f.Container(name)
	if err != nil {
		t.Fatal(err)
	}
	return ct.GetNics()[0]
}

func TestAddressesAllocatedInTheCreateEntry(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/29"}})
	mustApply(t, f, nicCt("a", "02:00:00:00:00:01", ""))
	mustApply(t, f, nicCt("b", "02:00:00:00:00:02", "10.42.0.5")) // static
	mustApply(t, f, nicCt("c", "02:00:00:00:00:03", ""))
	if got := []string{nicOf(t, f, "a").GetIpv4(), nicOf(t, f, "b").GetIpv4(), nicOf(t, f, "c").GetIpv4()}; fmt.Sprint(got) != "[10.42.0.2 10.42.0.5 10.42.0.3]" {
		t.Fatalf("addresses %v, want lowest free around the static .5", got)
	}
	if !nicOf(t, f, "b").GetIpv4Static() || nicOf(t, f, "a").GetIpv4Static() {
		t.Fatal("ipv4_static marks the wrong NICs")
	}

	// Conflicts are refused with the owner named, and change nothing.
	for _, tc := range []struct {
		cmd  *shoalv1.ContainerCreateCommand
		is   error
		says string
	}{
		{nicCt("d", "02:00:00:00:00:04", "10.42.0.5"), ErrInUse, "ipv4.address 10.42.0.5 on network app is used by b/eth0"},
		{nicCt("d", "02:00:00:00:00:01", ""), ErrInUse, "hwaddr 02:00:00:00:00:01 on network app is used by a/eth0"},
		{nicCt("d", "02:00:00:00:00:04", "10.42.0.1"), ipam.ErrOutOfRange, "gateway"},
		{nicCt("d", "02:00:00:00:00:04", "10.9.9.9"), ipam.ErrOutOfRange, "outside"},
		{nicCt("d", "01:00:5e:00:00:01", ""), ErrInvalidCommand, "unicast"},
		{&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "d", Node: "n1",
			Nics: []*shoalv1.NIC{{Name: "eth0", Network: "nope"}}}}, ErrNotFound, `network "nope"`},
	} {
		if err := apply(t, f, tc.cmd); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("create %v = %v, want %v naming %q", tc.cmd.GetContainer().GetNics(), err, tc.is, tc.says)
		}
	}
	if _, err := f.Container("d"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a refused create left a container")
	}

	// The pool has .2–.6: a, c, b(.5), then .4 and .6, then it is full.
	mustApply(t, f, nicCt("d", "02:00:00:00:00:04", ""))
	mustApply(t, f, nicCt("e", "02:00:00:00:00:05", ""))
	if err := apply(t, f, nicCt("g", "02:00:00:00:00:07", "")); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("create on a full network = %v, want ErrExhausted", err)
	}
	// Delete releases; a move keeps the address.
	mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: "a"})
	mustApply(t, f, &shoalv1.NodeUpsertCommand{Node: &shoalv1.Node{Name: "n2", Status: "online", CpuMillis: 2000, MemoryBytes: 1 << 30}})
	mustApply(t, f, &shoalv1.ContainerMoveCommand{Name: "c", From: "n1", Node: "n2"})
	if nicOf(t, f, "c").GetIpv4() != "10.42.0.3" {
		t.Fatalf("a move changed c's address to %s", nicOf(t, f, "c").GetIpv4())
	}
	mustApply(t, f, nicCt("g", "02:00:00:00:00:07", ""))
	if nicOf(t, f, "g").GetIpv4() != "10.42.0.2" {
		t.Fatalf("the address a had was not given again: g got %s", nicOf(t, f, "g").GetIpv4())
	}

	// The index survives a snapshot: the restored FSM refuses the same clash.
	g := roundTrip(t, f)
	if err := apply(t, g, nicCt("h", "02:00:00:00:00:08", "10.42.0.3")); !errors.Is(err, ErrInUse) {
		t.Fatalf("after restore, a taken static address = %v, want ErrInUse", err)
	}
}

func TestNetworkCreateRefusesClashes(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/16"}})
	for _, tc := range []struct {
		n    *shoalv1.Network
		is   error
		says string
	}{
		{&shoalv1.Network{Name: "x", Type: "overlay", Vni: 10, Ipv4Cidr: "10.50.0.1/24"}, ErrInUse, "vni 10 is used by network app"},
		{&shoalv1.Network{Name: "x", Type: "overlay", Vni: 11, Ipv4Cidr: "10.42.7.1/24"}, ErrInUse, "overlaps network app"},
		{&shoalv1.Network{Name: "x", Type: "bridge", Ipv4Cidr: "10.0.0.1/8"}, ErrInUse, "overlaps network app"},
		{&shoalv1.Network{Name: "x", Type: "overlay", Vni: MaxVNI + 1, Ipv4Cidr: "10.50.0.1/24"}, ErrInvalidCommand, "vni 16777216"},
		{&shoalv1.Network{Name: "x", Type: "overlay", Vni: 12}, ErrInvalidCommand, "ipv4.address"},
		{&shoalv1.Network{Name: "x", Type: "vlan"}, ErrInvalidCommand, `type "vlan": want bridge, overlay or macvlan`},
		{&shoalv1.Network{Name: "x", Type: "bridge", Ipv4Cidr: "10.50.0.0/24"}, ipam.ErrInvalid, "network or broadcast"},
	} {
		if err := apply(t, f, &shoalv1.NetworkCreateCommand{Network: tc.n}); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("create %v = %v, want %v naming %q", tc.n, err, tc.is, tc.says)
		}
	}
}

// roundTrip persists f's state and restores it into a new FSM.
func roundTrip(t *testing.T, f *FSM) *FSM {
	t.Helper()
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
	return g
}

func TestNetworkDeleteRefusedWhileUsed(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/24"}})
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "def", Type: "bridge", Ipv4Cidr: "10.43.0.1/24"}})
	mustApply(t, f, &shoalv1.ClusterConfigCommand{Set: map[string]string{DefaultNetworkKey: "def"}})
	mustApply(t, f, nicCt("b", "02:00:00:00:00:02", ""))
	mustApply(t, f, nicCt("a", "02:00:00:00:00:01", ""))
	if err := apply(t, f, &shoalv1.NetworkDeleteCommand{Name: "app"}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "used by a, b") {
		t.Fatalf("delete of a used network = %v, want ErrInUse listing a, b", err)
	}
	if err := apply(t, f, &shoalv1.NetworkDeleteCommand{Name: "def"}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), DefaultNetworkKey) {
		t.Fatalf("delete of the default network = %v, want ErrInUse naming %s", err, DefaultNetworkKey)
	}
	mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: "a"})
	mustApply(t, f, &shoalv1.ContainerDeleteCommand{Name: "b"})
	mustApply(t, f, &shoalv1.NetworkDeleteCommand{Name: "app"})
	if _, err := f.Network("app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("app after delete: %v", err)
	}
	if err := apply(t, f, &shoalv1.NetworkDeleteCommand{Name: "app"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
}
