package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// StaticLease pins an address (and a hostname) to a MAC in this member's
// DHCP server.
type StaticLease struct {
	MAC      string
	IP       net.IP
	Hostname string
}

// Name is a DNS name the network's resolver answers on every member:
// Hostname and Hostname.DOMAIN → IP.
type Name struct {
	Hostname string
	IP       net.IP
}

// SetStaticLeases makes the DHCP server's static leases exactly want, plus
// the current entries for which keep returns true (nil keeps none). Each
// lease must be a host address of the subnet, not the gateway, with a
// unique MAC and address; a bad one changes nothing. dnsmasq re-reads the
// file (SIGHUP) only when it changed.
func (n *Network) SetStaticLeases(ctx context.Context, want []StaticLease, keep func(mac string) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	next := make([]staticLease, 0, len(want))
	macs, ips := map[string]bool{}, map[string]bool{}
	for _, l := range want {
		hw, err := net.ParseMAC(l.MAC)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("set static leases on %s: %w: bad MAC %q", n.name, ErrInvalidConfig, l.MAC)
		}
		ip4 := l.IP.To4()
		if ip4 == nil || !n.subnet.Contains(ip4) || ip4.Equal(n.gateway) || ip4.Equal(n.subnet.IP) || ip4.Equal(broadcast(n.subnet)) {
			return fmt.Errorf("set static leases on %s: %w: %s is not a host address of %s", n.name, ErrInvalidConfig, l.IP, n.subnet)
		}
		if l.Hostname != "" && !validHostname(l.Hostname) {
			return fmt.Errorf("set static leases on %s: %w: bad hostname %q", n.name, ErrInvalidConfig, l.Hostname)
		}
		if macs[hw.String()] || ips[ip4.String()] {
			return fmt.Errorf("set static leases on %s: %w: %s or %s given twice", n.name, ErrInvalidConfig, hw, ip4)
		}
		macs[hw.String()], ips[ip4.String()] = true, true
		next = append(next, staticLease{mac: hw.String(), ip: ip4, hostname: l.Hostname})
	}
	n.leaseMu.Lock()
	defer n.leaseMu.Unlock()
	cur, err := readStatic(n.paths.hosts)
	if err != nil {
		return err
	}
	for _, s := range cur {
		if keep != nil && keep(s.mac) && !macs[s.mac] && !ips[s.ip.String()] {
			next = append(next, s)
		}
	}
	if sameLeases(cur, next) {
		return nil
	}
	if err := writeStatic(n.paths.hosts, next); err != nil {
		return err
	}
	return n.reload()
}

func sameLeases(a, b []staticLease) bool {
	lines := func(ls []staticLease) []string {
		out := make([]string, len(ls))
		for i, l := range ls {
			out[i] = l.line()
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(lines(a), lines(b))
}

// SetNames makes the resolver answer exactly names (besides its own DHCP
// clients): on an overlay, every member resolves every container of the
// network. dnsmasq re-reads the file (SIGHUP) only when it changed.
func (n *Network) SetNames(ctx context.Context, names []Name) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lines := make([]string, 0, len(names))
	for _, nm := range names {
		if !validHostname(nm.Hostname) || nm.IP.To4() == nil {
			return fmt.Errorf("set names on %s: %w: %q → %v", n.name, ErrInvalidConfig, nm.Hostname, nm.IP)
		}
		lines = append(lines, fmt.Sprintf("%s %s.%s %s", nm.IP.To4(), nm.Hostname, n.cfg.Domain, nm.Hostname))
	}
	slices.Sort(lines)
	content := "# managed by shoal; edits are overwritten\n" + strings.Join(lines, "\n")
	if len(lines) > 0 {
		content += "\n"
	}
	n.leaseMu.Lock()
	defer n.leaseMu.Unlock()
	if cur, err := os.ReadFile(n.paths.names); err == nil && string(cur) == content {
		return nil
	}
	if err := writeAtomic(n.paths.names, content); err != nil {
		return fmt.Errorf("set names on %s: %w", n.name, err)
	}
	return n.reload()
}

// ensureNamesFile creates an empty names file if there is none.
func ensureNamesFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := writeAtomic(path, "# managed by shoal; edits are overwritten\n"); err != nil {
		return fmt.Errorf("create names file %s: %w", path, err)
	}
	return nil
}
