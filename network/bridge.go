package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// resolvConf is where upstream nameservers come from; tests point it at a
// file of their own so dnsmasq never forwards off the test bridge.
var resolvConf = "/etc/resolv.conf"

// ensureBridge creates the bridge or adopts an existing one. It reports
// whether it created the link, so a failed Ensure can undo only its own work.
func ensureBridge(ctx context.Context, name string, log *slog.Logger) (netlink.Link, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	link, err := netlink.LinkByName(name)
	if err == nil {
		if link.Type() != "bridge" {
			return nil, false, fmt.Errorf("adopt bridge %s: %w (type %s)", name, ErrNotBridge, link.Type())
		}
		log.Debug("adopting existing bridge", "bridge", name)
		return link, false, nil
	}
	var notFound netlink.LinkNotFoundError
	if !errors.As(err, &notFound) {
		return nil, false, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.HardwareAddr = bridgeMAC(name)
	br := &netlink.Bridge{LinkAttrs: attrs}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, false, fmt.Errorf("create bridge %s: %w", name, err)
	}
	link, err = netlink.LinkByName(name)
	if err != nil {
		_ = netlink.LinkDel(br)
		return nil, false, fmt.Errorf("look up new bridge %s: %w", name, err)
	}
	log.Info("created bridge", "bridge", name)
	return link, true, nil
}

// configureBridge makes ip/subnet the only global IPv4 address of the bridge
// and sets the link up.
func configureBridge(ctx context.Context, link netlink.Link, ip net.IP, subnet *net.IPNet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name := link.Attrs().Name
	want := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: subnet.Mask}}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet.IP.Equal(ip) && a.IPNet.Mask.String() == subnet.Mask.String() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := netlink.AddrReplace(link, want); err != nil {
		return fmt.Errorf("set address %s on %s: %w", want.IPNet, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// bridgeIPv4 returns the first global IPv4 address of an existing bridge,
// used to keep the subnet an "auto" network already has.
func bridgeIPv4(name string) (net.IP, *net.IPNet, bool) {
	link, err := netlink.LinkByName(name)
	if err != nil || link.Type() != "bridge" {
		return nil, nil, false
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, false
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE || a.IPNet.IP.To4() == nil {
			continue
		}
		subnet := &net.IPNet{IP: a.IPNet.IP.Mask(a.IPNet.Mask).To4(), Mask: a.IPNet.Mask}
		return a.IPNet.IP.To4(), subnet, true
	}
	return nil, nil, false
}

// deleteBridge removes the bridge; a missing bridge is not an error.
func deleteBridge(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("delete bridge %s: %w (type %s)", name, ErrNotBridge, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// enableIPForward turns on IPv4 forwarding for the host.
func enableIPForward(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cur, err := os.ReadFile(ipForwardPath)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
	}
	return nil
}

// usedNetworks lists every IPv4 prefix the host already uses: addresses on
// any link, routes in any table (default routes excepted) and the upstream
// nameservers, so "auto" never shadows them.
func usedNetworks(ctx context.Context, skipLink string) ([]*net.IPNet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var used []*net.IPNet
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	skipIndex := -1
	if skipLink != "" {
		if l, err := netlink.LinkByName(skipLink); err == nil {
			skipIndex = l.Attrs().Index
		}
	}
	for _, a := range addrs {
		if a.LinkIndex == skipIndex || a.IPNet == nil {
			continue
		}
		used = append(used, &net.IPNet{IP: a.IPNet.IP.Mask(a.IPNet.Mask), Mask: a.IPNet.Mask})
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == skipIndex {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			continue
		}
		used = append(used, r.Dst)
	}
	for _, ns := range hostNameservers() {
		if ip4 := ns.To4(); ip4 != nil {
			used = append(used, &net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)})
		}
	}
	return used, nil
}

// hostNameservers returns the nameservers in resolvConf, if any.
func hostNameservers() []net.IP {
	f, err := os.Open(resolvConf)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []net.IP
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if ip := net.ParseIP(fields[1]); ip != nil {
				out = append(out, ip)
			}
		}
	}
	return out
}
