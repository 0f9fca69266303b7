package overlay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The end-to-end tests build a small cluster of network namespaces: an
// underlay namespace with a bridge, "hosts" joined to it by veths (the
// members, each with the network's bridge, the anycast gateway and an
// overlay), and "containers", each a namespace with an eth0 whose peer is
// a port of its host's bridge. Everything lives inside namespaces named
// shoal-ovt-<id>-*, so deleting them cleans up even after a failure.

const (
	gateway = "198.51.100.1"
	vni     = 4242
)

// gatewayMAC is the same on every member: the anycast gateway.
var gatewayMAC = net.HardwareAddr{0x02, 0x5e, 0x00, 0x00, 0x00, 0x01}

func requireHost(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"ip", "ping", "busybox", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" (scripts/install.sh installs it)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "end-to-end overlay test needs: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

type slogWriter struct{ t testing.TB }

func (w slogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// lab is one test's namespaces.
type lab struct {
	t     testing.TB
	id    string
	under netns.NsHandle
	hosts []*host
}

type host struct {
	name string
	ns   netns.NsHandle
	vtep net.IP
	ovl  *Overlay
}

type ctr struct {
	name string
	ns   netns.NsHandle
	mac  net.HardwareAddr
	ip   net.IP
	on   *host
}

func (c *ctr) endpoint() Endpoint { return Endpoint{MAC: c.mac, IP: c.ip, VTEP: c.on.vtep} }

func newLab(t testing.TB) *lab {
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{t: t, id: hex.EncodeToString(b)}
	l.under = l.newNS("u")
	l.in(l.under, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ub"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	return l
}

// newNS makes a named namespace (so `ip netns exec` finds it) and removes
// it when the test ends; IPv6 is off so no neighbour discovery adds noise.
func (l *lab) newNS(suffix string) netns.NsHandle {
	l.t.Helper()
	name := fmt.Sprintf("shoal-ovt-%s-%s", l.id, suffix)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		l.t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		l.t.Fatalf("create namespace %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			l.t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	l.in(ns, func() error {
		for _, k := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return ns
}

// in runs fn on a thread inside ns.
func (l *lab) in(ns netns.NsHandle, fn func() error) {
	l.t.Helper()
	if err := inNS(ns, fn); err != nil {
		l.t.Fatal(err)
	}
}

func inNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

func (l *lab) nsName(suffix string) string { return fmt.Sprintf("shoal-ovt-%s-%s", l.id, suffix) }

// exec runs a command in a namespace and fails the test if it fails.
func (l *lab) exec(ns string, args ...string) string {
	l.t.Helper()
	out, err := l.try(ns, args...)
	if err != nil {
		l.t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return out
}

func (l *lab) try(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// addHost makes member n: a veth to the underlay bridge with 192.0.2.n,
// the network's bridge with the anycast gateway, and the overlay.
func (l *lab) addHost(n int) *host {
	l.t.Helper()
	h := &host{name: fmt.Sprintf("h%d", n), vtep: net.IPv4(192, 0, 2, byte(n)).To4()}
	h.ns = l.newNS(h.name)
	l.in(l.under, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.name, MTU: 1500}, PeerName: "u0", PeerNamespace: netlink.NsFd(h.ns)}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		ub, err := netlink.LinkByName("ub")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(v, ub); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	l.in(h.ns, func() error {
		u0, err := netlink.LinkByName("u0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(u0, &netlink.Addr{IPNet: &net.IPNet{IP: h.vtep, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(u0); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ovbr", HardwareAddr: gatewayMAC}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(gateway), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	l.ensure(h, Config{Bridge: "ovbr", VNI: vni, Local: h.vtep})
	l.hosts = append(l.hosts, h)
	return h
}

func (l *lab) ensure(h *host, cfg Config) {
	l.t.Helper()
	log := slog.New(slog.NewTextHandler(slogWriter{l.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l.in(h.ns, func() error {
		o, err := Ensure(context.Background(), cfg, log.With("member", h.name))
		h.ovl = o
		return err
	})
}

// addCtr makes a container namespace with eth0 on h's bridge.
func (l *lab) addCtr(name string, n int, h *host) *ctr {
	l.t.Helper()
	c := &ctr{name: name, ns: l.newNS(name), mac: net.HardwareAddr{0x02, 0x16, 0x3e, 0, 0, byte(n)},
		ip: net.IPv4(198, 51, 100, byte(n)).To4()}
	l.plug(c, h)
	return c
}

// plug connects c's eth0 to h's bridge: a new veth pair whose container
// end keeps c's MAC and address, as a restored container's NIC does after
// a move.
func (l *lab) plug(c *ctr, h *host) {
	l.t.Helper()
	l.in(h.ns, func() error {
		br, err := netlink.LinkByName("ovbr")
		if err != nil {
			return err
		}
		v := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: "v-" + c.name, MTU: h.ovl.MTU(), MasterIndex: br.Attrs().Index},
			PeerName:  "eth0", PeerHardwareAddr: c.mac, PeerMTU: uint32(h.ovl.MTU()), PeerNamespace: netlink.NsFd(c.ns),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("plug %s into %s: %w", c.name, h.name, err)
		}
		return netlink.LinkSetUp(v)
	})
	l.in(c.ns, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: c.ip, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(gateway)})
	})
	c.on = h
}

// unplug removes c's veth from its host, as a container leaving does.
func (l *lab) unplug(c *ctr) {
	l.t.Helper()
	l.in(c.on.ns, func() error {
		v, err := netlink.LinkByName("v-" + c.name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(v)
	})
}

// syncAll gives every member the same state, as the FSM would.
func (l *lab) syncAll(ctrs ...*ctr) map[string]Stats {
	l.t.Helper()
	st := State{}
	for _, h := range l.hosts {
		st.VTEPs = append(st.VTEPs, h.vtep)
	}
	for _, c := range ctrs {
		st.Endpoints = append(st.Endpoints, c.endpoint())
	}
	out := map[string]Stats{}
	for _, h := range l.hosts {
		l.in(h.ns, func() error {
			s, err := h.ovl.Sync(context.Background(), st)
			out[h.name] = s
			return err
		})
	}
	return out
}

// ping sends count full-size pings with DF set (-M do): a payload of the
// overlay's MTU minus 28 fills the MTU exactly.
func (l *lab) ping(from *ctr, to net.IP) error {
	size := from.on.ovl.MTU() - 28
	out, err := l.try(l.nsName(from.name), "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", fmt.Sprint(size), to.String())
	if err != nil {
		return fmt.Errorf("ping %s from %s (%d bytes, DF): %v\n%s", to, from.name, size+28, err, out)
	}
	return nil
}

// rx is how many packets h's VXLAN device has received from the overlay.
func (l *lab) rx(h *host) uint64 {
	l.t.Helper()
	var n uint64
	l.in(h.ns, func() error {
		link, err := netlink.LinkByName(h.ovl.Device())
		if err != nil {
			return err
		}
		n = link.Attrs().Statistics.RxPackets
		return nil
	})
	return n
}

func (l *lab) table(h *host) table {
	l.t.Helper()
	var tb table
	l.in(h.ns, func() (err error) {
		tb, err = h.ovl.read()
		return err
	})
	return tb
}

func TestOverlayForwardsAcrossMembers(t *testing.T) {
	requireHost(t)
	l := newLab(t)
	h1, h2, h3 := l.addHost(1), l.addHost(2), l.addHost(3)
	c1, c2, c3 := l.addCtr("c1", 11, h1), l.addCtr("c2", 12, h2), l.addCtr("c3", 13, h3)

	if got := h1.ovl.MTU(); got != 1450 {
		t.Fatalf("overlay MTU on a 1500-byte underlay = %d, want 1450", got)
	}
	stats := l.syncAll(c1, c2, c3)
	// Each member: 2 flood entries, 2 remote MACs × (VXLAN + bridge entry), 3 ARP entries.
	for name, s := range stats {
		if s.Added != 2+2*2+3 || s.Removed != 0 {
			t.Errorf("%s: first sync %+v, want 9 added, none removed", name, s)
		}
	}
	for name, s := range l.syncAll(c1, c2, c3) {
		if s.Changed() {
			t.Errorf("%s: second sync of the same state changed %+v", name, s)
		}
	}

	// Full-size frames with DF cross between every pair of members.
	for _, p := range [][2]*ctr{{c1, c2}, {c1, c3}, {c3, c2}, {c2, c1}} {
		if err := l.ping(p[0], p[1].ip); err != nil {
			t.Error(err)
		}
	}
	// The gateway answers on every member, locally.
	for _, c := range []*ctr{c1, c2, c3} {
		if err := l.ping(c, net.ParseIP(gateway)); err != nil {
			t.Error(err)
		}
	}

	// Nothing is learned from the wire: the kernel holds exactly what was
	// programmed (h1: flood to h2 and h3, c2 and c3 remote, three ARP entries).
	tb := l.table(h1)
	if len(tb.flood) != 2 || tb.unicast[c2.mac.String()] != h2.vtep.String() || tb.unicast[c3.mac.String()] != h3.vtep.String() ||
		len(tb.unicast) != 2 || len(tb.port) != 2 || len(tb.arp) != 3 {
		t.Errorf("h1's forwarding state is not the programmed one: %+v", tb)
	}

	// ARP suppression and no flooding: with c1's neighbour cache empty, one
	// ping to c2 puts exactly the echo request on h2's VXLAN device and
	// nothing on h3's (c1's ARP for c2, and c2's for c1, are answered by
	// their own member's bridge).
	l.exec(l.nsName("c1"), "ip", "neigh", "flush", "dev", "eth0")
	l.exec(l.nsName("c2"), "ip", "neigh", "flush", "dev", "eth0")
	rx2, rx3 := l.rx(h2), l.rx(h3)
	l.exec(l.nsName("c1"), "ping", "-n", "-q", "-c", "1", "-W", "2", c2.ip.String())
	if d2, d3 := l.rx(h2)-rx2, l.rx(h3)-rx3; d2 != 1 || d3 != 0 {
		t.Errorf("one ping c1→c2 with cold ARP caches: h2's VXLAN received %d packets (want 1: the echo request), h3's %d (want 0)", d2, d3)
	}

	// The anycast gateway never crosses: ARP for it and the pings stay on h1.
	l.exec(l.nsName("c1"), "ip", "neigh", "flush", "dev", "eth0")
	rx2, rx3 = l.rx(h2), l.rx(h3)
	l.exec(l.nsName("c1"), "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", gateway)
	if d2, d3 := l.rx(h2)-rx2, l.rx(h3)-rx3; d2 != 0 || d3 != 0 {
		t.Errorf("pings from c1 to the gateway reached other members: h2 received %d, h3 %d packets on the overlay", d2, d3)
	}
	// Nor does the member's own stack (its frames carry the anycast MAC):
	// h1 cannot ping c2 through the overlay, and h2 sees nothing of it.
	rx2 = l.rx(h2)
	if out, err := l.try(l.nsName("h1"), "ping", "-n", "-q", "-c", "1", "-W", "1", c2.ip.String()); err == nil {
		t.Errorf("member h1 reached c2 on h2 through the overlay from its own stack:\n%s", out)
	}
	if d2 := l.rx(h2) - rx2; d2 != 0 {
		t.Errorf("a ping from member h1's own stack put %d packets on h2's overlay", d2)
	}
	// DHCP stays local too: each member serves its own containers.
	rx2, rx3 = l.rx(h2), l.rx(h3)
	l.try(l.nsName("c1"), "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "2", "-T", "1", "-s", "/bin/true")
	if d2, d3 := l.rx(h2)-rx2, l.rx(h3)-rx3; d2 != 0 || d3 != 0 {
		t.Errorf("c1's DHCP discovers crossed the overlay: h2 received %d, h3 %d packets", d2, d3)
	}
}

// TestOverlayFollowsMoves moves a container between members, re-syncs, and
// checks that its peers reach it at the new member only, and that entries
// for a member that left are dropped.
func TestOverlayFollowsMoves(t *testing.T) {
	requireHost(t)
	l := newLab(t)
	h1, h2, h3 := l.addHost(1), l.addHost(2), l.addHost(3)
	c1, c2 := l.addCtr("c1", 11, h1), l.addCtr("c2", 12, h2)
	l.syncAll(c1, c2)
	if err := l.ping(c1, c2.ip); err != nil {
		t.Fatal(err)
	}

	for i, to := range []*host{h3, h1, h2} {
		l.unplug(c2)
		l.plug(c2, to)
		stats := l.syncAll(c1, c2)
		if err := l.ping(c1, c2.ip); err != nil {
			t.Fatalf("after move %d of c2 to %s: %v", i+1, to.name, err)
		}
		for _, h := range l.hosts {
			tb := l.table(h)
			_, static := tb.port[c2.mac.String()]
			if h == to && (static || tb.unicast[c2.mac.String()] != "") {
				t.Errorf("move %d: %s runs c2 but still forwards it to the overlay: %+v", i+1, h.name, tb)
			}
			if h != to && (!static || tb.unicast[c2.mac.String()] != to.vtep.String()) {
				t.Errorf("move %d: %s does not forward c2 to %s: %+v (sync %+v)", i+1, h.name, to.name, tb, stats[h.name])
			}
		}
		// c1 reaches c2 without a detour: the member c2 left sees nothing.
		if to != h1 {
			prev := map[*host]uint64{}
			for _, h := range l.hosts {
				prev[h] = l.rx(h)
			}
			l.exec(l.nsName("c1"), "ping", "-n", "-q", "-c", "1", "-W", "2", c2.ip.String())
			for _, h := range l.hosts {
				if h != to && h != h1 && l.rx(h) != prev[h] {
					t.Errorf("move %d: a ping c1→c2 (now on %s) also reached %s", i+1, to.name, h.name)
				}
			}
		}
	}

	// h3 leaves: the others drop its flood entry and any endpoint it owned.
	c3 := l.addCtr("c3", 13, h3)
	l.syncAll(c1, c2, c3)
	st := State{VTEPs: []net.IP{h1.vtep, h2.vtep}, Endpoints: []Endpoint{c1.endpoint(), c2.endpoint(), c3.endpoint()}}
	var s Stats
	l.in(h1.ns, func() (err error) { s, err = h1.ovl.Sync(context.Background(), st); return err })
	tb := l.table(h1)
	if s.Skipped != 1 || tb.flood[h3.vtep.String()] || tb.unicast[c3.mac.String()] != "" || tb.arp[c3.ip.String()] != "" {
		t.Errorf("after h3 left, h1 still forwards to it: %+v (sync %+v)", tb, s)
	}
	if err := l.ping(c1, c3.ip); err == nil {
		t.Error("c1 still reaches c3 on a member that left the network")
	}
}

func TestOverlayRefusesBadInput(t *testing.T) {
	requireHost(t)
	l := newLab(t)
	h1 := l.addHost(1)
	c1 := l.addCtr("c1", 11, h1)
	good := Config{Bridge: "ovbr", VNI: vni, Local: h1.vtep}
	cases := []struct {
		name string
		cfg  func(Config) Config
		is   error
		says string
	}{
		{"mtu above the underlay's", func(c Config) Config { c.MTU = 1451; return c }, ErrMTUTooLarge, "mtu 1451: the underlay u0 (mtu 1500) carries 1450 at most"},
		{"vni zero", func(c Config) Config { c.VNI = 0; return c }, ErrInvalidConfig, "vni 0"},
		{"vni over 24 bits", func(c Config) Config { c.VNI = MaxVNI + 1; return c }, ErrInvalidConfig, "vni 16777216"},
		{"no such bridge", func(c Config) Config { c.Bridge = "nobr"; return c }, ErrNoBridge, "nobr"},
		{"local address on no interface", func(c Config) Config { c.Local = net.IPv4(192, 0, 2, 99); return c }, ErrNoUnderlay, "192.0.2.99"},
		{"port out of range", func(c Config) Config { c.Port = 70000; return c }, ErrInvalidConfig, "port 70000"},
	}
	for _, tc := range cases {
		var err error
		l.in(h1.ns, func() error { _, err = Ensure(context.Background(), tc.cfg(good), nil); return nil })
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Ensure = %v, want %v naming %q", tc.name, err, tc.is, tc.says)
		}
	}

	// A bad state changes nothing: two MACs claiming one address.
	l.syncAll(c1)
	before := l.table(h1)
	dup := State{VTEPs: []net.IP{h1.vtep, net.IPv4(192, 0, 2, 2)}, Endpoints: []Endpoint{
		c1.endpoint(), {MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, IP: c1.ip, VTEP: net.IPv4(192, 0, 2, 2)}}}
	var err error
	l.in(h1.ns, func() error { _, err = h1.ovl.Sync(context.Background(), dup); return nil })
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ip 198.51.100.11 is on both") {
		t.Errorf("Sync with a duplicate address = %v, want ErrInvalidConfig naming the address", err)
	}
	if after := l.table(h1); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused Sync changed the forwarding state: %+v → %+v", before, after)
	}

	// Ensure is idempotent, and Delete removes the device and the table.
	l.ensure(h1, Config{Bridge: "ovbr", VNI: vni, Local: h1.vtep})
	l.in(h1.ns, func() error { return h1.ovl.Delete(context.Background()) })
	if _, err := l.try(l.nsName("h1"), "ip", "link", "show", h1.ovl.Device()); err == nil {
		t.Errorf("%s still exists after Delete", h1.ovl.Device())
	}
	if out, err := l.try(l.nsName("h1"), "nft", "list", "table", "bridge", filterTable("ovbr")); err == nil {
		t.Errorf("table bridge %s still exists after Delete:\n%s", filterTable("ovbr"), out)
	}
}

// TestOverlayAdmitsMembersOnly: a host on the underlay that is not a member
// sends VXLAN frames for the network's VNI to a member (it knows the VNI,
// the port and a container's MAC); the member drops them before they reach
// its VXLAN device. Once the host is a member, its frames get through.
func TestOverlayAdmitsMembersOnly(t *testing.T) {
	requireHost(t)
	l := newLab(t)
	h1 := l.addHost(1)
	l.addHost(2)
	c1 := l.addCtr("c1", 11, h1)
	l.syncAll(c1)
	rogue := l.addHost(4) // not in the members' state
	l.hosts = l.hosts[:2]
	c4 := l.addCtr("c4", 14, rogue)
	st := State{VTEPs: []net.IP{h1.vtep, rogue.vtep}, Endpoints: []Endpoint{c1.endpoint(), c4.endpoint()}}
	l.in(rogue.ns, func() error { _, err := rogue.ovl.Sync(context.Background(), st); return err })
	rx := l.rx(h1)
	l.try(l.nsName("c4"), "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", c1.ip.String())
	if d := l.rx(h1) - rx; d != 0 {
		t.Errorf("h1 took %d VXLAN packets from a host that is not a member", d)
	}
	// Admitted as a member, the same host's frames arrive.
	l.hosts = append(l.hosts, rogue)
	l.syncAll(c1, c4)
	if err := l.ping(c4, c1.ip); err != nil {
		t.Errorf("after the host became a member: %v", err)
	}
}
