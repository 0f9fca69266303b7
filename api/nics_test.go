package api

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Each bad nic device is refused with InvalidArgument naming its key; a
// good one comes back with the keys in their fields and a MAC.
func TestNICFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		says string
	}{
		{"Eth1", map[string]string{"network": "app"}, "name: \"Eth1\""},
		{"eth1", map[string]string{}, "network: required"},
		{"eth1", map[string]string{"network": "app", "colour": "red"}, "colour: unknown nic key"},
		{"eth1", map[string]string{"network": "app", "mtu": "100"}, "mtu: \"100\": want 576 to 9000"},
		{"eth1", map[string]string{"network": "app", "mtu": "x"}, "mtu: \"x\""},
		{"eth1", map[string]string{"network": "app", "name": "a b"}, "name: \"a b\""},
		{"eth1", map[string]string{"network": "app", "hwaddr": "01:00:5e:00:00:01"}, "hwaddr:"},
		{"eth1", map[string]string{"network": "app", "ipv4.address": "10.1.1"}, "ipv4.address:"},
		{"eth1", map[string]string{"network": "app", "parent": "eth0"}, "parent: only a nictype=macvlan NIC"},
		{"eth1", map[string]string{"nictype": "sriov", "parent": "eth0"}, "nictype: \"sriov\": want macvlan"},
		{"eth1", map[string]string{"nictype": "macvlan"}, "parent: required"},
		{"eth1", map[string]string{"nictype": "macvlan", "parent": "eth0", "network": "app"}, "nictype: give either"},
		{"eth1", map[string]string{"nictype": "macvlan", "parent": "eth0", "ipv4.address": "10.1.1.1"}, "ipv4.address: a nictype=macvlan NIC"},
		{"eth1", map[string]string{"nictype": "macvlan", "parent": "bad/name"}, "parent:"},
	} {
		_, err := nicFromConfig(tc.name, tc.cfg)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("nicFromConfig(%q, %v) = %v, want InvalidArgument naming %q", tc.name, tc.cfg, err, tc.says)
		}
	}
	nic, err := nicFromConfig("lan0", map[string]string{"nictype": "macvlan", "parent": "eth1", "mtu": "1400", "name": "wan0"})
	if err != nil {
		t.Fatal(err)
	}
	if nic.GetNictype() != "macvlan" || nic.GetParent() != "eth1" || nic.GetMtu() != 1400 || nic.GetIfname() != "wan0" || nic.GetHwaddr() == "" {
		t.Fatalf("nicFromConfig = %v", nic)
	}
}
