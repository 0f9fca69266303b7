package network

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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireHost skips (or, with CI=true, fails) when the host cannot run the
// end-to-end tests, naming what is missing.
func requireHost(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{dnsmasqPath, "ip", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "end-to-end network test needs: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestMain gives dnsmasq no upstream servers during tests: test traffic
// must never leave the test's own bridge and namespaces.
func TestMain(m *testing.M) {
	f, err := os.CreateTemp("", "shoal-net-resolv-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f.WriteString("# no upstream servers in tests\n")
	f.Close()
	resolvConf = f.Name()
	code := m.Run()
	os.Remove(f.Name())
	os.Exit(code)
}

// slogWriter sends log lines to t.Log.
type slogWriter struct{ t *testing.T }

func (w slogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(slogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testEnv is one test's bridge name, state dir and namespaces, all removed
// (and checked removed) in t.Cleanup, even when the test fails.
type testEnv struct {
	t      *testing.T
	id     string
	bridge string
	state  string
	tmp    string
	nsList []string
	veths  []string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	requireHost(t)
	id := randHex(t, 3)
	// dnsmasq drops privileges, so the state dir must be reachable by
	// "nobody": t.TempDir's parent is 0700, use our own 0755 tree.
	tmp, err := os.MkdirTemp("", "shoal-net-"+id+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, id: id, bridge: "sht" + id, tmp: tmp, state: filepath.Join(tmp, "state")}
	t.Cleanup(e.cleanup)
	return e
}

func (e *testEnv) config() Config {
	return Config{Name: e.bridge, IPv4CIDR: AutoCIDR, NAT: true, StateDir: e.state}
}

func (e *testEnv) cleanup() {
	t := e.t
	ctx := context.Background()
	for _, v := range e.veths {
		if l, err := netlink.LinkByName(v); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
	for _, ns := range e.nsList {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Errorf("delete netns %s: %v: %s", ns, err, out)
		}
	}
	log := slog.New(slog.DiscardHandler)
	runningMu.Lock()
	n := running[e.bridge]
	runningMu.Unlock()
	if n != nil {
		_ = n.Delete(ctx)
	}
	_ = killStrays(ctx, e.bridge, log)
	_ = deleteNFT(ctx, e.bridge)
	_ = deleteBridge(ctx, e.bridge)
	_ = os.RemoveAll(e.tmp)
	e.assertGone()
}

// assertGone checks that nothing of this test is left on the host.
func (e *testEnv) assertGone() {
	t := e.t
	t.Helper()
	if _, err := netlink.LinkByName(e.bridge); err == nil {
		t.Errorf("bridge %s still exists", e.bridge)
	}
	for _, v := range e.veths {
		if _, err := netlink.LinkByName(v); err == nil {
			t.Errorf("veth %s still exists", v)
		}
	}
	if exists, _, err := nftState(context.Background(), e.bridge); err != nil || exists {
		t.Errorf("nft table %s: exists=%v err=%v", tableName(e.bridge), exists, err)
	}
	if pids := findDnsmasq(e.bridge); len(pids) > 0 {
		t.Errorf("dnsmasq still running for %s: %v", e.bridge, pids)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, ns := range e.nsList {
		if strings.Contains(string(out), ns) {
			t.Errorf("netns %s still exists", ns)
		}
	}
}

// addNamespace creates netns <ns> with eth0 (MAC mac) plugged into the bridge.
func (e *testEnv) addNamespace(suffix, mac string) string {
	t := e.t
	t.Helper()
	ns := "shtns" + e.id + suffix
	run(t, "ip", "netns", "add", ns)
	e.nsList = append(e.nsList, ns)
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer h.Close()
	br, err := netlink.LinkByName(e.bridge)
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	hostEnd := "vh" + e.id + suffix
	peer := "vp" + e.id + suffix
	hw, _ := net.ParseMAC(mac)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostEnd
	attrs.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: peer, PeerHardwareAddr: hw, PeerNamespace: netlink.NsFd(int(h))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s: %v", hostEnd, err)
	}
	e.veths = append(e.veths, hostEnd)
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatalf("set %s up: %v", hostEnd, err)
	}
	nsRun(t, ns, "ip", "link", "set", "dev", peer, "name", "eth0")
	nsRun(t, ns, "ip", "link", "set", "dev", "eth0", "up")
	nsRun(t, ns, "ip", "link", "set", "dev", "lo", "up")
	return ns
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// dhcp runs busybox udhcpc once in ns and returns the address it applied.
func (e *testEnv) dhcp(ns, hostname string) net.IP {
	t := e.t
	t.Helper()
	script := filepath.Join(e.tmp, "udhcpc.sh")
	result := filepath.Join(e.tmp, "lease-"+ns)
	_ = os.Remove(result)
	body := `#!/bin/sh
# Apply the lease to the interface only: no default route, no resolv.conf.
case "$1" in
deconfig) ip -4 addr flush dev "$interface" ;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	echo "$ip" > "$RESULT"
	;;
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n",
		"-t", "10", "-T", "1", "-A", "1", "-i", "eth0", "-s", script, "-x", "hostname:"+hostname)
	cmd.Env = append(os.Environ(), "RESULT="+result)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("udhcpc in %s took %s:\n%s", ns, time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("udhcpc in %s: %v\n%s", ns, err, out)
	}
	raw, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("udhcpc in %s applied no lease: %v\n%s", ns, err, out)
	}
	ip := net.ParseIP(strings.TrimSpace(string(raw)))
	if ip == nil {
		t.Fatalf("udhcpc wrote %q", raw)
	}
	return ip.To4()
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			if d := time.Since(start); d > time.Second {
				t.Logf("waited %s for %s", d.Round(time.Millisecond), what)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *testEnv) resolves(ns string, gw net.IP, name string, want net.IP) error {
	out, err := exec.Command("ip", "netns", "exec", ns, "busybox", "nslookup", name, gw.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nslookup %s: %v: %s", name, err, out)
	}
	if !strings.Contains(string(out), want.String()) {
		return fmt.Errorf("nslookup %s: want %s in %s", name, want, out)
	}
	return nil
}

func onlyDnsmasq(t *testing.T, bridge string) int {
	t.Helper()
	pids := findDnsmasq(bridge)
	if len(pids) != 1 {
		t.Fatalf("want exactly one dnsmasq for %s, got %v", bridge, pids)
	}
	return pids[0]
}

func TestEndToEnd(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := testLogger(t)

	n, err := Ensure(ctx, e.config(), log)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	gw, subnet := n.Gateway(), n.Subnet()
	t.Logf("network %s: gateway %s subnet %s", n.Name(), gw, subnet)
	if !subnet.Contains(gw) || n.Name() != e.bridge {
		t.Fatalf("gateway %s not in %s", gw, subnet)
	}

	exists, masq, err := nftState(ctx, e.bridge)
	if err != nil || !exists || !masq {
		t.Fatalf("nft table: exists=%v masq=%v err=%v", exists, masq, err)
	}
	out := run(t, "nft", "list", "table", "inet", tableName(e.bridge))
	if !strings.Contains(out, "masquerade") || !strings.Contains(out, subnet.String()) {
		t.Fatalf("nft table lacks masquerade for %s:\n%s", subnet, out)
	}
	t.Logf("nft table:\n%s", out)

	// Ensure twice: same network, one dnsmasq.
	pid := onlyDnsmasq(t, e.bridge)
	n2, err := Ensure(ctx, e.config(), log)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if n2 != n || onlyDnsmasq(t, e.bridge) != pid {
		t.Fatalf("second Ensure was not idempotent")
	}

	// Someone deletes the bridge under us: Ensure recreates it and restarts
	// dnsmasq, whose sockets died with the old bridge.
	if err := deleteBridge(ctx, e.bridge); err != nil {
		t.Fatal(err)
	}
	n, err = Ensure(ctx, e.config(), log)
	if err != nil {
		t.Fatalf("Ensure after bridge loss: %v", err)
	}
	if pid2 := onlyDnsmasq(t, e.bridge); pid2 == pid {
		t.Fatalf("dnsmasq %d not restarted after bridge loss", pid)
	}
	if !n.Gateway().Equal(gw) {
		t.Logf("gateway moved from %s to %s after bridge loss", gw, n.Gateway())
		gw, subnet = n.Gateway(), n.Subnet()
	}

	// DHCP, lease bookkeeping, ping and DNS from a namespace.
	mac1 := RandomMAC()
	ns1 := e.addNamespace("a", mac1)
	ip1 := e.dhcp(ns1, "alpha")
	if !subnet.Contains(ip1) || ip1.Equal(gw) {
		t.Fatalf("leased %s, not a host address of %s", ip1, subnet)
	}
	waitFor(t, 5*time.Second, "lease in Leases()", func() error {
		got, ok := n.LeaseFor(mac1)
		if !ok || !got.Equal(ip1) {
			ls, err := n.Leases()
			return fmt.Errorf("LeaseFor(%s) = %v %v; leases %+v %v", mac1, got, ok, ls, err)
		}
		return nil
	})
	ls, err := n.Leases()
	if err != nil || len(ls) != 1 || ls[0].Hostname != "alpha" || ls[0].Expiry.Before(time.Now()) {
		t.Fatalf("Leases() = %+v, %v", ls, err)
	}
	nsRun(t, ns1, "busybox", "ping", "-c", "1", "-W", "2", gw.String())
	waitFor(t, 5*time.Second, "DNS for alpha", func() error { return e.resolves(ns1, gw, "alpha."+DefaultDomain, ip1) })
	waitFor(t, 5*time.Second, "short name alpha", func() error { return e.resolves(ns1, gw, "alpha", ip1) })
	waitFor(t, 5*time.Second, "reverse DNS for alpha", func() error {
		out, err := exec.Command("ip", "netns", "exec", ns1, "busybox", "nslookup", ip1.String(), gw.String()).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "alpha."+DefaultDomain) {
			return fmt.Errorf("nslookup %s: %v: %s", ip1, err, out)
		}
		return nil
	})

	// Static lease: a second namespace gets the pinned address and name.
	mac2 := RandomMAC()
	static := addToIP(subnet.IP, 200)
	if err := n.SetStaticLease(ctx, mac2, static, "beta"); err != nil {
		t.Fatalf("SetStaticLease: %v", err)
	}
	if err := n.SetStaticLease(ctx, RandomMAC(), static, "dup"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("pinning %s twice: err = %v", static, err)
	}
	if err := n.SetStaticLease(ctx, mac2, gw, "beta"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("pinning the gateway: err = %v", err)
	}
	ns2 := e.addNamespace("b", mac2)
	if got := e.dhcp(ns2, "ignored"); !got.Equal(static) {
		t.Fatalf("static lease: got %s, want %s", got, static)
	}
	waitFor(t, 5*time.Second, "DNS for beta", func() error { return e.resolves(ns1, gw, "beta."+DefaultDomain, static) })
	if err := n.RemoveStaticLease(ctx, mac2); err != nil {
		t.Fatalf("RemoveStaticLease: %v", err)
	}
	if err := n.RemoveStaticLease(ctx, mac2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RemoveStaticLease twice: err = %v, want ErrNotFound", err)
	}

	// Kill dnsmasq: the supervisor starts a new one that still serves.
	old := onlyDnsmasq(t, e.bridge)
	if err := killPid(old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "dnsmasq restart", func() error {
		pids := findDnsmasq(e.bridge)
		if len(pids) != 1 || pids[0] == old {
			return fmt.Errorf("dnsmasq pids %v (old %d)", pids, old)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "DNS after restart", func() error { return e.resolves(ns1, gw, "alpha."+DefaultDomain, ip1) })

	// Daemon crash (supervisor gone, dnsmasq orphaned): Ensure replaces the
	// orphan, never duplicates it.
	orphan := onlyDnsmasq(t, e.bridge)
	runningMu.Lock()
	_ = n.stop(ctx, false)
	runningMu.Unlock()
	if pids := findDnsmasq(e.bridge); len(pids) != 1 || pids[0] != orphan {
		t.Fatalf("abandoning killed dnsmasq: %v", pids)
	}
	n, err = Ensure(ctx, e.config(), log)
	if err != nil {
		t.Fatalf("Ensure after crash: %v", err)
	}
	if pid := onlyDnsmasq(t, e.bridge); pid == orphan {
		t.Fatalf("orphan dnsmasq %d was adopted, want replaced", pid)
	}
	if !n.Gateway().Equal(gw) {
		t.Fatalf("gateway moved from %s to %s", gw, n.Gateway())
	}

	// Close keeps bridge, nft table and leases; Ensure brings DHCP back.
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if pids := findDnsmasq(e.bridge); len(pids) != 0 {
		t.Fatalf("dnsmasq survived Close: %v", pids)
	}
	if _, err := netlink.LinkByName(e.bridge); err != nil {
		t.Fatalf("bridge gone after Close: %v", err)
	}
	if exists, _, _ := nftState(ctx, e.bridge); !exists {
		t.Fatal("nft table gone after Close")
	}
	n, err = Ensure(ctx, e.config(), log)
	if err != nil {
		t.Fatalf("Ensure after Close: %v", err)
	}
	if !n.Gateway().Equal(gw) || n.Subnet().String() != subnet.String() {
		t.Fatalf("subnet changed across Close: %s -> %s", subnet, n.Subnet())
	}
	if got, ok := n.LeaseFor(mac1); !ok || !got.Equal(ip1) {
		t.Fatalf("lease for %s lost across Close: %v %v", mac1, got, ok)
	}
	onlyDnsmasq(t, e.bridge)
	waitFor(t, 10*time.Second, "DNS after re-Ensure", func() error { return e.resolves(ns1, gw, "alpha."+DefaultDomain, ip1) })

	if raw, err := os.ReadFile(n.paths.log); err == nil {
		t.Logf("dnsmasq log:\n%s", raw)
	}

	// Delete removes everything.
	if err := n.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := netlink.LinkByName(e.bridge); err == nil {
		t.Fatal("bridge survived Delete")
	}
	if exists, _, _ := nftState(ctx, e.bridge); exists {
		t.Fatal("nft table survived Delete")
	}
	if pids := findDnsmasq(e.bridge); len(pids) != 0 {
		t.Fatalf("dnsmasq survived Delete: %v", pids)
	}
	if _, err := os.Stat(e.state); !os.IsNotExist(err) {
		t.Fatalf("state dir survived Delete: %v", err)
	}
}

func killPid(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

func TestEnsureExplicitCIDRWithoutNAT(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Take the subnet "auto" would choose, but spell it out.
	used, err := usedNetworks(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pickSubnet(e.bridge, used)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.IPv4CIDR = addToIP(sub.IP, 1).String() + "/24"
	cfg.NAT = false
	cfg.Domain = "lab.test"
	n, err := Ensure(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if exists, masq, err := nftState(ctx, e.bridge); err != nil || !exists || masq {
		t.Fatalf("nft without NAT: exists=%v masq=%v err=%v", exists, masq, err)
	}
	// Turning NAT on re-installs the table with a masquerade rule.
	cfg.NAT = true
	if _, err := Ensure(ctx, cfg, testLogger(t)); err != nil {
		t.Fatalf("Ensure with NAT: %v", err)
	}
	if exists, masq, err := nftState(ctx, e.bridge); err != nil || !exists || !masq {
		t.Fatalf("nft with NAT: exists=%v masq=%v err=%v", exists, masq, err)
	}
	onlyDnsmasq(t, e.bridge)
	if err := n.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

func TestEnsureRejectsNonBridge(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = e.bridge // a veth squatting on the bridge's name
	peer := "vp" + e.id + "x"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: peer}); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	e.veths = append(e.veths, e.bridge, peer)
	_, err := Ensure(ctx, e.config(), testLogger(t))
	if !errors.Is(err, ErrNotBridge) {
		t.Fatalf("Ensure over a veth: err = %v, want ErrNotBridge", err)
	}
	if exists, _, _ := nftState(ctx, e.bridge); exists {
		t.Fatal("failed Ensure left an nft table")
	}
}

func TestEnsureRejectsPrivateStateDir(t *testing.T) {
	e := newTestEnv(t)
	if err := os.Chmod(e.tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(context.Background(), e.config(), testLogger(t))
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Ensure with a 0700 parent: err = %v, want ErrInvalidConfig", err)
	}
	// The failed Ensure undid its bridge and table; cleanup asserts the rest.
	if _, err := netlink.LinkByName(e.bridge); err == nil {
		t.Fatal("failed Ensure left the bridge")
	}
	if exists, _, _ := nftState(context.Background(), e.bridge); exists {
		t.Fatal("failed Ensure left an nft table")
	}
}

// TestStaticOnlyLeasesAndNames: with StaticOnly, DHCP answers only the MACs
// the cluster gave addresses, with exactly those addresses; SetNames makes
// names of containers elsewhere resolve here.
func TestStaticOnlyLeasesAndNames(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := e.config()
	cfg.StaticOnly = true
	n, err := Ensure(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	known, stranger := "02:16:3e:00:aa:01", "02:16:3e:00:aa:02"
	ns1, ns2 := e.addNamespace("a", known), e.addNamespace("b", stranger)
	want := addToIP(n.Subnet().IP, 50)
	if err := n.SetStaticLeases(ctx, []StaticLease{{MAC: known, IP: want, Hostname: "c1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.dhcp(ns1, "c1"); !got.Equal(want) {
		t.Fatalf("the container with a static lease got %s, want %s", got, want)
	}
	out, err := exec.Command("ip", "netns", "exec", ns2, "busybox", "udhcpc", "-f", "-q", "-n",
		"-t", "3", "-T", "1", "-i", "eth0", "-s", "/bin/true").CombinedOutput()
	if err == nil {
		t.Fatalf("a MAC without a static lease got an address from a static-only network:\n%s", out)
	}

	far := addToIP(n.Subnet().IP, 77)
	if err := n.SetNames(ctx, []Name{{Hostname: "far1", IP: far}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"far1.shoal", "far1", "c1.shoal"} {
		ip := far
		if name == "c1.shoal" {
			ip = want
		}
		waitFor(t, 10*time.Second, "DNS "+name, func() error { return e.resolves(ns1, n.Gateway(), name, ip) })
	}

	// Replacing the set with keep: kept entries stay, others go.
	other := StaticLease{MAC: stranger, IP: addToIP(n.Subnet().IP, 51), Hostname: "c2"}
	if err := n.SetStaticLeases(ctx, []StaticLease{other}, func(mac string) bool { return mac == known }); err != nil {
		t.Fatal(err)
	}
	leases, err := readStatic(n.paths.hosts)
	if err != nil || len(leases) != 2 {
		t.Fatalf("after a replace keeping %s: %v %v", known, leases, err)
	}
	if err := n.SetStaticLeases(ctx, []StaticLease{other, {MAC: known, IP: other.IP}}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("two MACs on one address = %v, want ErrInvalidConfig", err)
	}
	if err := n.SetStaticLeases(ctx, []StaticLease{{MAC: known, IP: n.Gateway()}}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("a lease on the gateway = %v, want ErrInvalidConfig", err)
	}
	if err := n.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}
