package overlay

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }
func vtep(b byte) net.IP          { return net.IPv4(192, 0, 2, b).To4() }
func addr(b byte) net.IP          { return net.IPv4(10, 42, 0, b).To4() }

func TestPlanAndDiff(t *testing.T) {
	local := vtep(1)
	st := State{VTEPs: []net.IP{vtep(1), vtep(2), vtep(3)}, Endpoints: []Endpoint{
		{MAC: mac(1), IP: addr(1), VTEP: vtep(1)}, // local
		{MAC: mac(2), IP: addr(2), VTEP: vtep(2)},
		{MAC: mac(3), VTEP: vtep(3)},              // no address yet
		{MAC: mac(4), IP: addr(4), VTEP: vtep(9)}, // on a member that left
	}}
	want, skipped, err := plan(local, st)
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 1 || len(want.flood) != 2 || want.flood[local.String()] || len(want.unicast) != 2 ||
		want.unicast[mac(2).String()] != "192.0.2.2" || len(want.arp) != 2 || want.arp["10.42.0.1"] != mac(1).String() {
		t.Fatalf("plan = %+v (skipped %d)", want, skipped)
	}

	// From nothing: everything is added, VXLAN entries before bridge entries.
	ops := diff(newTable(), want, 5, 6)
	if len(ops) != 2+2+2+2 {
		t.Fatalf("diff from empty: %d ops, want 8: %+v", len(ops), ops)
	}
	for _, o := range ops {
		if o.kind == opDel || o.kind == opReplace {
			t.Fatalf("diff from empty wants %s %s", o.kind, describe(o.neigh))
		}
	}
	// Converged: nothing to do.
	if ops := diff(want, want, 5, 6); len(ops) != 0 {
		t.Fatalf("diff of a table with itself: %+v", ops)
	}

	// mac(2) moves to the local member, mac(3) to member 2, member 3 leaves.
	st.VTEPs = st.VTEPs[:2]
	st.Endpoints[1].VTEP = local
	st.Endpoints[2].VTEP = vtep(2)
	next, _, err := plan(local, st)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range diff(want, next, 5, 6) {
		got = append(got, o.kind.String()+" "+describe(o.neigh))
	}
	wantOps := []string{
		"replace VXLAN entry 02:00:00:00:00:03 → 192.0.2.2",
		"remove bridge entry 02:00:00:00:00:02 → VXLAN port",
		"remove VXLAN entry 02:00:00:00:00:02 → 192.0.2.2",
		"remove VXLAN entry 00:00:00:00:00:00 → 192.0.2.3",
	}
	if strings.Join(got, "\n") != strings.Join(wantOps, "\n") {
		t.Errorf("diff after moves:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantOps, "\n"))
	}
}

func TestPlanRefusesBadState(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   State
		says string
	}{
		{"ipv6 vtep", State{VTEPs: []net.IP{net.ParseIP("2001:db8::1")}}, "vtep"},
		{"multicast mac", State{VTEPs: []net.IP{vtep(2)}, Endpoints: []Endpoint{{MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, VTEP: vtep(2)}}}, "unicast"},
		{"zero mac", State{VTEPs: []net.IP{vtep(2)}, Endpoints: []Endpoint{{MAC: make(net.HardwareAddr, 6), VTEP: vtep(2)}}}, "unicast"},
		{"no vtep", State{VTEPs: []net.IP{vtep(2)}, Endpoints: []Endpoint{{MAC: mac(1)}}}, "vtep"},
		{"address twice", State{VTEPs: []net.IP{vtep(2)}, Endpoints: []Endpoint{
			{MAC: mac(1), IP: addr(1), VTEP: vtep(2)}, {MAC: mac(2), IP: addr(1), VTEP: vtep(2)}}}, "ip 10.42.0.1 is on both"},
		{"mac on two members", State{VTEPs: []net.IP{vtep(2), vtep(3)}, Endpoints: []Endpoint{
			{MAC: mac(1), VTEP: vtep(2)}, {MAC: mac(1), VTEP: vtep(3)}}}, "mac 02:00:00:00:00:01 is on both"},
	} {
		_, _, err := plan(vtep(1), tc.st)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: plan = %v, want ErrInvalidConfig naming %q", tc.name, err, tc.says)
		}
	}
}
