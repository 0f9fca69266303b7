package tests

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// TestMacvlanNetwork puts a container directly on its host's LAN: a member
// on a simulated host whose eth0 is on a shared segment (the underlay), and
// a second host on that segment standing in for the LAN, with its own DHCP
// server. The container's macvlan NIC gets its address from the LAN's DHCP
// and reaches the LAN host; after a live move to a second member on the
// same LAN, the LAN host reaches it at once (the target announces it with
// a gratuitous ARP, so the LAN's switch — here the underlay bridge —
// forwards to its new port); bad input is refused naming the key.
func TestMacvlanNetwork(t *testing.T) {
	requireLiveMove(t)
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
	mh2, err := u.AddHost("m2")
	if err != nil {
		t.Fatal(err)
	}
	harness.StartMember(t, binDir, mh2, strings.TrimSpace(m.MustShoal("cluster", "add", "m2")))
	m.WaitFor("m2 a voter", 60*time.Second, func() bool { r := m.Members()["m2"]; return r.Status == "online" && r.Role == "voter" })
	ip := strings.Split(addr, "/")[0]
	garps := watchGARP(t, "/run/netns/"+lan.NS, net.ParseIP(ip))
	liveMove(t, m, "v1", "m2")
	select {
	case <-garps:
	case <-time.After(10 * time.Second):
		t.Errorf("the LAN saw no gratuitous ARP for %s after v1 moved live to m2", ip)
	}
	if out, err := lan.Run(t.Context(), "ping", "-c", "1", "-W", "2", ip); err != nil {
		t.Errorf("right after v1 moved live to m2, the LAN host cannot reach it at %s (the switch still sends to m1): %v\n%s", ip, err, out)
	}
	if out, errOut, code := m.Shoal("exec", "v1", "--", "ip", "-4", "-o", "addr", "show", "eth0"); code != 0 || !strings.Contains(out, " "+addr) {
		t.Errorf("v1's eth0 after the move: %q %q, want %s", out, errOut, addr)
	}
	if _, errOut, code := m.Shoal("network", "delete", "lan"); code == 0 || !strings.Contains(errOut, "used by v1") {
		t.Errorf("network delete of a used macvlan network: exit %d, %q", code, errOut)
	}
	m.MustShoal("delete", "v1", "--force")
	m.MustShoal("network", "delete", "lan")

	// A nic device with nictype=macvlan needs no network: a running
	// container on m1's default network gets a second interface on the LAN,
	// named and sized as asked, which the LAN's DHCP answers; it stays
	// through a restart and goes on remove.
	m.MustShoal("launch", "busybox", "v2", "--target", "m1")
	out := m.MustShoal("config", "device", "add", "v2", "lan0", "nic", "nictype=macvlan", "parent=eth0", "name=wan0", "mtu=1400")
	hw := regexp.MustCompile(`hwaddr=(\S+)`).FindStringSubmatch(out)
	if hw == nil {
		t.Fatalf("device add printed %q, want the NIC's hwaddr", out)
	}
	wan0 := func(what string) {
		t.Helper()
		m.WaitFor("wan0 in v2 "+what, 30*time.Second, func() bool {
			_, _, code := m.Shoal("exec", "v2", "--", "ip", "link", "show", "wan0")
			return code == 0
		})
		out, _, _ := m.Shoal("exec", "v2", "--", "ip", "link", "show", "wan0")
		if !strings.Contains(out, " mtu 1400 ") || !strings.Contains(out, hw[1]) {
			t.Errorf("v2's wan0 %s: %q, want mtu 1400 and %s", what, out, hw[1])
		}
		if out, errOut, code := m.Shoal("exec", "v2", "--", "udhcpc", "-i", "wan0", "-n", "-q", "-t", "5", "-s", "/bin/true"); code != 0 || !strings.Contains(out+errOut, "lease of "+prefix) {
			t.Errorf("DHCP from the LAN on v2's wan0 %s: exit %d, %q%q", what, code, out, errOut)
		}
	}
	wan0("once plugged in")
	if list := m.MustShoal("config", "device", "list", "v2"); !strings.Contains(list, "macvlan:eth0") || !strings.Contains(list, "wan0") {
		t.Errorf("device list v2:\n%s", list)
	}
	m.MustShoal("restart", "v2")
	wan0("after a restart")
	m.MustShoal("config", "device", "remove", "v2", "lan0")
	m.WaitFor("wan0 gone from v2", 30*time.Second, func() bool {
		_, _, code := m.Shoal("exec", "v2", "--", "ip", "link", "show", "wan0")
		return code != 0
	})
	m.MustShoal("delete", "v2", "--force")
}

// watchGARP listens on every interface of the network namespace at nsPath
// for a gratuitous ARP (sender and target address both ip) and signals the
// first one; it stops when the test ends.
func watchGARP(t *testing.T, nsPath string, ip net.IP) <-chan struct{} {
	t.Helper()
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := vnetns.Set(ns); err != nil {
		t.Fatal(err)
	}
	fd, serr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err := vnetns.Set(orig); err != nil {
		t.Fatal(err) // the thread stays locked and dies with the test goroutine
	}
	runtime.UnlockOSThread()
	if serr != nil {
		t.Fatal(serr)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.Timeval{Sec: 0, Usec: 200000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 128)
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if err == unix.EBADF {
					return
				}
				continue
			}
			// Ethernet (14) + ARP: spa at 28..32, tpa at 38..42.
			if n >= 42 && net.IP(buf[28:32]).Equal(ip) && net.IP(buf[38:42]).Equal(ip) {
				close(done)
				return
			}
		}
	}()
	return done
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
