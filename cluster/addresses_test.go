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

// A nictype=macvlan NIC sits on a host interface, not a network: the
// cluster allocates it no address and indexes nothing on any network.
func TestMacvlanNICNeedsNoNetwork(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/29"}})
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "m", Node: "n1",
		Nics: []*shoalv1.NIC{{Name: "eth0", Network: "app", Hwaddr: "02:00:00:00:00:01"},
			{Name: "lan0", Nictype: "macvlan", Parent: "eth1", Ifname: "wan0", Hwaddr: "02:00:00:00:00:02"}}}})
	ct, err := f.Container("m")
	if err != nil {
		t.Fatal(err)
	}
	if lan := ct.GetNics()[1]; lan.GetIpv4() != "" || lan.GetParent() != "eth1" || lan.GetIfname() != "wan0" {
		t.Fatalf("macvlan nic recorded as %v", lan)
	}
	if got := nicOf(t, f, "m").GetIpv4(); got != "10.42.0.2" {
		t.Fatalf("eth0 on app got %q, want 10.42.0.2", got)
	}
}

// A NIC added later gets the next free address, and may not take a name
// inside the container that another NIC has.
func TestNICAddChecksNames(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 10, Ipv4Cidr: "10.42.0.1/29"}})
	mustApply(t, f, nicCt("a", "02:00:00:00:00:01", ""))
	add := func(nic *shoalv1.NIC) error {
		return apply(t, f, &shoalv1.ContainerNicAddCommand{Container: "a", Nic: nic})
	}
	if err := add(&shoalv1.NIC{Name: "eth1", Network: "app", Hwaddr: "02:00:00:00:00:02"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nic  *shoalv1.NIC
		is   error
		says string
	}{
		{&shoalv1.NIC{Name: "eth1", Network: "app"}, ErrExists, "nic eth1"},
		{&shoalv1.NIC{Name: "eth2", Network: "app", Ifname: "eth0"}, ErrInvalidCommand, "nics eth0 and eth2 are both eth0"},
		{&shoalv1.NIC{Name: "eth2", Nictype: "macvlan", Parent: "eth9", Ifname: "eth1"}, ErrInvalidCommand, "nics eth1 and eth2 are both eth1"},
	} {
		if err := add(tc.nic); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("add %v = %v, want %v naming %q", tc.nic, err, tc.is, tc.says)
		}
	}
	ct, _ := f.Container("a")
	if len(ct.GetNics()) != 2 || ct.GetNics()[1].GetIpv4() != "10.42.0.3" {
		t.Fatalf("after the refused adds: %v", ct.GetNics())
	}
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
		{&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "d", Node: "n1",
			Nics: []*shoalv1.NIC{{Name: "eth0", Network: "app"}, {Name: "lan", Network: "app", Ifname: "eth0"}}}}, ErrInvalidCommand, "nics eth0 and lan are both eth0"},
		{&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "d", Node: "n1",
			Nics: []*shoalv1.NIC{{Name: "eth0", Nictype: "macvlan"}}}}, ErrInvalidCommand, "want macvlan with a parent"},
		{&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "d", Node: "n1",
			Nics: []*shoalv1.NIC{{Name: "eth0", Nictype: "macvlan", Parent: "eth1", Ipv4: "10.42.0.6"}}}}, ErrInvalidCommand, "no ipv4.address"},
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
