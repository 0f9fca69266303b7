package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestOverlayNetworkAcrossMembers creates an overlay network on a
// three-member cluster (each member in its own network namespace, real
// VXLAN between them), puts a container on each member and checks what a
// user would: each reaches the others by address and by name, with
// 1,400-byte packets; the addresses are the cluster's and survive a live
// move; delete is refused while the network is used; bad input is refused
// naming the key.
func TestOverlayNetworkAcrossMembers(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1 := ms[0]
	m1.MustShoal("image", "build", "busybox")
	sub := fmt.Sprintf("10.242.%d", rand.IntN(250))
	vni := fmt.Sprint(1000 + rand.IntN(9000)) // the cluster's default overlay has 1
	dev := "shvx" + vni

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"network", "create", "bad1", "--type", "overlay", "ipv4.address=" + sub + ".1/24", "bridge.mtu=1451"}, "mtu 1451"},
		{[]string{"network", "create", "bad2", "--type", "vlan"}, `type: "vlan": want bridge, overlay or macvlan`},
		{[]string{"network", "create", "bad3", "--type", "overlay", "colour=blue"}, `unknown key "colour"`},
		{[]string{"network", "create", "bad4", "vxlan.id=7"}, "vxlan.id: only an overlay network has it"},
		{[]string{"network", "create", "a-name-far-too-long"}, "name"},
		{[]string{"network", "create", "bad5", "--type", "overlay", "ipv4.address=" + sub + ".0/24"}, "ipv4.address"},
	} {
		if _, errOut, code := m1.Shoal(tc.args...); code == 0 || !strings.Contains(errOut, tc.says) {
			t.Errorf("shoal %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}
	m1.MustShoal("network", "create", "app", "--type", "overlay", "ipv4.address="+sub+".1/24", "vxlan.id="+vni)
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"network", "create", "app2", "--type", "overlay", "ipv4.address=" + sub + ".129/25"}, "overlaps network app"},
		{[]string{"network", "create", "app3", "--type", "overlay", "ipv4.address=10.243.1.1/24", "vxlan.id=" + vni}, "vni " + vni + " is used by network app"},
		{[]string{"network", "create", "app"}, "already exists"},
	} {
		if _, errOut, code := ms[1].Shoal(tc.args...); code == 0 || !strings.Contains(errOut, tc.says) {
			t.Errorf("shoal %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}
	// A refused network leaves nothing on the member that tried it.
	if out, err := ms[1].Host.Run(context.Background(), "ip", "link", "show", "app2"); err == nil {
		t.Errorf("a refused network left its bridge on n2:\n%s", out)
	}
	for _, m := range ms {
		m.WaitFor("the overlay on "+m.Opts.Name, 30*time.Second, func() bool {
			_, err := m.Host.Run(context.Background(), "ip", "link", "show", dev)
			return err == nil
		})
	}

	names := []string{"a1", "a2", "a3"}
	ips := map[string]string{}
	for i, name := range names {
		m1.MustShoal("launch", "busybox", name, "--network", "app", "--target", fmt.Sprintf("n%d", i+1))
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}

		// What a user would look at: each member's pinned leases, names,
		// dnsmasq log and the overlay's forwarding entries.
		for _, m := range ms {
			for _, f := range []string{"dnsmasq.hosts", "dnsmasq.names", "dnsmasq.log"} {
				b, _ := os.ReadFile(filepath.Join(m.StateDir, "networks", "app", f))
				t.Logf("%s %s:\n%s", m.Opts.Name, f, b)
			}
			out, _ := m.Host.Run(context.Background(), "bridge", "fdb", "show", "dev", dev)
			t.Logf("%s bridge fdb show dev %s:\n%s", m.Opts.Name, dev, out)
		}
	})
	for _, name := range names {
		ips[name] = m1.WaitAddress(name, 60*time.Second)
		if !strings.HasPrefix(ips[name], sub+".") {
			t.Fatalf("%s got %s, not an address of %s.0/24", name, ips[name], sub)
		}
	}
	info := m1.MustShoal("network", "info", "app")
	for i, name := range names {
		if !strings.Contains(info, name) || !strings.Contains(info, ips[name]) || !strings.Contains(info, fmt.Sprintf("n%d", i+1)) {
			t.Errorf("network info lacks %s %s on n%d:\n%s", name, ips[name], i+1, info)
		}
	}

	ping := func(from, to string, size int) error {
		out, errOut, code := m1.Shoal("exec", from, "--", "ping", "-c", "2", "-W", "3", "-s", fmt.Sprint(size), to)
		if code != 0 {
			return fmt.Errorf("ping %s (-s %d) from %s: exit %d\n%s%s", to, size, from, code, out, errOut)
		}
		return nil
	}
	for _, p := range [][2]string{{"a1", "a2"}, {"a2", "a3"}, {"a3", "a1"}} {
		if err := ping(p[0], ips[p[1]], 1372); err != nil { // 1,400-byte packets
			t.Error(err)
		}
		if err := ping(p[0], p[1]+".shoal", 56); err != nil {
			t.Error(err)
		}
	}
	if err := ping("a1", "a3", 56); err != nil { // a plain name
		t.Error(err)
	}

	if _, errOut, code := m1.Shoal("network", "delete", "app"); code == 0 || !strings.Contains(errOut, "a1, a2, a3") {
		t.Errorf("network delete of a used network: exit %d, %q; want a refusal listing a1, a2, a3", code, errOut)
	}

	// A TCP stream from a1 (on n1) to a2 survives ten live moves of a2
	// between n2 and n3: a2 keeps its address, the connection is never
	// reset and no number of the sequence is lost.
	startWorkload(t, m1, "a2", 0, "-serve", "7000")
	startWorkload(t, m1, "a1", 0, "-connect", ips["a2"]+":7000")
	m1.WaitFor("the stream flowing", 30*time.Second, func() bool {
		st := report(t, m1, "a1")
		return st["stream"] == "ok" && st["stream_seq"] != "0"
	})
	m1.MustShoal("exec", "a1", "--", "sh", "-c", "echo reset > /root/control")
	before := report(t, m1, "a1")
	var worst time.Duration
	for i := range 10 {
		to := []string{"n3", "n2"}[i%2]
		t.Logf("%s move %d of a2 to %s", time.Now().Format(time.StampMilli), i+1, to)
		worst = max(worst, liveMove(t, m1, "a2", to))
		if got := m1.List()["a2"]; got.Container.Node != to {
			t.Fatalf("a2 after move %d: %+v", i+1, got)
		}
	}
	liveMove(t, m1, "a2", "n3")
	after := report(t, m1, "a1")
	if after["stream"] != "ok" {
		for _, c := range []string{"a1", "a2"} {
			out, _, _ := m1.Shoal("file", "pull", c+"/root/workload.out", "-")
			t.Logf("%s workload.out:\n%s", c, out)
		}
		t.Fatalf("the stream from a1 to a2 broke during the moves: %v", after)
	}
	seq0, _ := strconv.Atoi(before["stream_seq"])
	seq1, _ := strconv.Atoi(after["stream_seq"])
	if seq1 <= seq0 {
		t.Fatalf("the stream made no progress over the moves: %v → %v", before, after)
	}
	t.Logf("TCP stream a1→a2 over 11 live moves of a2: unbroken, %d numbers in order, longest stall %sms (longest move downtime %s)",
		seq1-seq0, after["stream_maxstall_ms"], worst)
	if got := m1.List()["a2"]; got.Container.Node != "n3" || len(got.State.Ipv4) == 0 || got.State.Ipv4[0] != ips["a2"] {
		t.Fatalf("a2 after the moves: %+v, want it on n3 at %s", got, ips["a2"])
	}
	if out := m1.MustShoal("exec", "a2", "--", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, " "+ips["a2"]+"/") {
		t.Fatalf("a2's eth0 after the moves: %q, want %s", out, ips["a2"])
	}
	if err := ping("a1", ips["a2"], 1372); err != nil {
		t.Errorf("after a2 moved to n3: %v", err)
	}
	if err := ping("a2", "a1.shoal", 56); err != nil {
		t.Errorf("after a2 moved to n3: %v", err)
	}

	// NIC devices: a second interface on the cluster's default network is
	// plugged into the running a3, gets its address from the cluster (and
	// from n3's DHCP), survives a live move, and is unplugged on remove.
	def := m1.Bridge // the cluster's default network, an overlay
	defInfo := m1.MustShoal("network", "info", def)
	if !strings.Contains(defInfo, "type: overlay") {
		t.Fatalf("the cluster's default network %s is not an overlay:\n%s", def, defInfo)
	}
	out := m1.MustShoal("config", "device", "add", "a3", "eth1", "nic", "network="+def, "mtu=1300")
	mt := regexp.MustCompile(`ipv4\.address=([0-9.]+) `).FindStringSubmatch(out)
	if mt == nil {
		t.Fatalf("device add printed %q, want the allocated address", out)
	}
	eth1 := mt[1]
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"config", "device", "add", "a3", "eth1", "nic", "network=" + def}, "already exists"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=nope"}, `network "nope"`},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=app", "ipv4.address=" + ips["a1"]}, "is used by a1/eth0"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=app", "colour=red"}, `colour: unknown nic key`},
		{[]string{"config", "device", "add", "a3", "eth2", "nic"}, "network: required"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=" + def, "mtu=9000"}, "mtu: 9000 is more than network " + def + "'s MTU"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=" + def, "mtu=100"}, "mtu: \"100\": want 576 to 9000"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "network=" + def, "name=eth1"}, "name: nics eth1 and eth2 are both eth1"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "nictype=ipvlan", "parent=eth0"}, "nictype: \"ipvlan\": want macvlan"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "nictype=macvlan"}, "parent: required"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "nictype=macvlan", "parent=nosuch0"}, "parent: nosuch0 does not exist on member n3"},
		{[]string{"config", "device", "add", "a3", "eth2", "nic", "nictype=macvlan", "parent=eth0", "network=" + def}, "nictype: give either"},
		{[]string{"config", "device", "remove", "a3", "eth0"}, "eth0 cannot be removed"},
	} {
		if _, errOut, code := m1.Shoal(tc.args...); code == 0 || !strings.Contains(errOut, tc.says) {
			t.Errorf("shoal %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}
	gw := regexp.MustCompile(`ipv4: ([0-9.]+)/(\d+)`).FindStringSubmatch(defInfo)
	if gw == nil {
		t.Fatalf("network info %s has no ipv4 line:\n%s", def, defInfo)
	}
	m1.WaitFor("eth1 in a3", 30*time.Second, func() bool {
		_, _, code := m1.Shoal("exec", "a3", "--", "ip", "link", "show", "eth1")
		return code == 0
	})
	if out, _, _ := m1.Shoal("exec", "a3", "--", "ip", "link", "show", "eth1"); !strings.Contains(out, " mtu 1300 ") {
		t.Errorf("a3's eth1 was added with mtu=1300: %q", out)
	}
	if out, errOut, code := m1.Shoal("exec", "a3", "--", "udhcpc", "-i", "eth1", "-n", "-q", "-t", "5", "-s", "/bin/true"); code != 0 || !strings.Contains(out+errOut, "lease of "+eth1+" obtained") {
		t.Errorf("DHCP on a3's eth1: exit %d, %q%q; want the lease of %s", code, out, errOut, eth1)
	}
	m1.MustShoal("exec", "a3", "--", "ip", "addr", "add", eth1+"/"+gw[2], "dev", "eth1")
	if out, errOut, code := m1.Shoal("exec", "a3", "--", "ping", "-c", "1", "-W", "3", "-I", "eth1", gw[1]); code != 0 {
		t.Errorf("a3 pings %s's gateway over eth1: exit %d\n%s%s", def, code, out, errOut)
	}
	liveMove(t, m1, "a3", "n1")
	if out, errOut, code := m1.Shoal("exec", "a3", "--", "ping", "-c", "1", "-W", "3", "-I", "eth1", gw[1]); code != 0 {
		t.Errorf("after a live move to n1, a3 pings %s's gateway over eth1: exit %d\n%s%s", def, code, out, errOut)
	}
	if list := m1.MustShoal("config", "device", "list", "a3"); !strings.Contains(list, eth1) || !strings.Contains(list, ips["a3"]) {
		t.Errorf("device list a3 after the move:\n%s", list)
	}
	m1.MustShoal("config", "device", "remove", "a3", "eth1")
	m1.WaitFor("eth1 gone from a3", 30*time.Second, func() bool {
		_, _, code := m1.Shoal("exec", "a3", "--", "ip", "link", "show", "eth1")
		return code != 0
	})
	if strings.Contains(m1.MustShoal("network", "info", def), eth1) {
		t.Errorf("%s is still allocated on %s after eth1 was removed", eth1, def)
	}

	for _, name := range names {
		m1.MustShoal("delete", name, "--force")
	}
	m1.MustShoal("network", "delete", "app")
	for _, m := range ms {
		m.WaitFor("the overlay gone from "+m.Opts.Name, 30*time.Second, func() bool {
			_, err := m.Host.Run(context.Background(), "ip", "link", "show", dev)
			return err != nil
		})
	}
}
