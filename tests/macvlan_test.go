package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// TestMacvlanNetwork puts a container directly on its host's LAN: a member
// on a simulated host whose eth0 is on a shared segment (the underlay), and
// a second host on that segment standing in for the LAN, with its own DHCP
// server. The container's macvlan NIC gets its address from the LAN's DHCP
// and reaches the LAN host; bad input is refused naming the key.
func TestMacvlanNetwork(t *testing.T) {
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		msg := "macvlan tests need: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	u, err := netns.NewUnderlay(t)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := u.AddHost("m1")
	if err != nil {
		t.Fatal(err)
	}
	lan, err := u.AddHost("lan")
	if err != nil {
		t.Fatal(err)
	}
	sub := u.Subnet.IP.To4()
	lo, hi := fmt.Sprintf("%d.%d.%d.200", sub[0], sub[1], sub[2]), fmt.Sprintf("%d.%d.%d.250", sub[0], sub[1], sub[2])
	dir := t.TempDir()
	if _, err := lan.Start("dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root", "--port=0",
		"--bind-interfaces", "--interface=eth0", "--except-interface=lo", "--dhcp-range="+lo+","+hi+",1h",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"), "--log-facility=-"); err != nil {
		t.Fatal(err)
	}
	m := harness.StartMember(t, binDir, mh, "")
	m.MustShoal("image", "build", "busybox")

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"network", "create", "lan1", "--type", "macvlan"}, "parent: required"},
		{[]string{"network", "create", "lan1", "--type", "macvlan", "parent=nosuch0"}, "parent nosuch0 does not exist on member m1"},
		{[]string{"network", "create", "lan1", "--type", "macvlan", "parent=eth0", "ipv4.address=10.1.1.1/24"}, "takes only parent"},
	} {
		if _, errOut, code := m.Shoal(tc.args...); code == 0 || !strings.Contains(errOut, tc.says) {
			t.Errorf("shoal %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}
	m.MustShoal("network", "create", "lan", "--type", "macvlan", "parent=eth0")
	if info := m.MustShoal("network", "info", "lan"); !strings.Contains(info, "type: macvlan") {
		t.Fatalf("network info lan:\n%s", info)
	}
	m.MustShoal("launch", "busybox", "v1", "--network", "lan")
	prefix := fmt.Sprintf("%d.%d.%d.", sub[0], sub[1], sub[2])
	var addr string
	m.WaitFor("v1's address from the LAN's DHCP", 60*time.Second, func() bool {
		out, _, code := m.Shoal("exec", "v1", "--", "ip", "-4", "-o", "addr", "show", "eth0")
		if code != 0 || !strings.Contains(out, " "+prefix) {
			return false
		}
		addr = strings.Fields(strings.SplitN(out, " inet ", 2)[1])[0]
		return true
	})
	t.Logf("v1 got %s from the LAN's DHCP server", addr)
	if out, errOut, code := m.Shoal("exec", "v1", "--", "ping", "-c", "1", "-W", "3", lan.IP.String()); code != 0 {
		t.Errorf("v1 pings the LAN host %s: exit %d\n%s%s", lan.IP, code, out, errOut)
	}
	if out, err := lan.Run(t.Context(), "ping", "-c", "1", "-W", "3", strings.Split(addr, "/")[0]); err != nil {
		t.Errorf("the LAN host pings v1 at %s: %v\n%s", addr, err, out)
	}
	if _, errOut, code := m.Shoal("network", "delete", "lan"); code == 0 || !strings.Contains(errOut, "used by v1") {
		t.Errorf("network delete of a used macvlan network: exit %d, %q", code, errOut)
	}
	m.MustShoal("delete", "v1", "--force")
	m.MustShoal("network", "delete", "lan")
}
