package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Underlay is a bridge in the root network namespace with its own /24 that
// simulated hosts are plugged into. It has no address of its own.
type Underlay struct {
	// ID is the random 6-hex-digit id carried by every name of this underlay.
	ID string
	// Bridge is the bridge's name in the root netns ("shu"+ID).
	Bridge string
	// Subnet is the underlay's IPv4 /24.
	Subnet *net.IPNet

	t      T
	mu     sync.Mutex
	hosts  []*Host
	closed bool
}

// NewUnderlay creates an empty underlay and registers its full teardown
// (hosts, processes, links, namespaces) with t.Cleanup.
func NewUnderlay(t T) (*Underlay, error) {
	t.Helper()
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	id := randHex(3)
	u := &Underlay{ID: id, Bridge: BridgePrefix + id, Subnet: subnet, t: t}
	// The marker comes first so a concurrent CleanLeftovers sees an owner.
	if err := writeMarker(id); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("tear down underlay %s: %v", u.ID, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "ip", "link", "add", u.Bridge, "type", "bridge", "stp_state", "0"); err != nil {
		return nil, fmt.Errorf("create underlay bridge: %w", err)
	}
	if err := disableIPv6(u.Bridge); err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "link", "set", u.Bridge, "up"); err != nil {
		return nil, fmt.Errorf("bring up underlay bridge: %w", err)
	}
	t.Logf("underlay %s: bridge %s, subnet %s", u.ID, u.Bridge, u.Subnet)
	return u, nil
}

// freeSubnet picks a 10.250.X.0/24 that overlaps no IPv4 route of the root
// netns.
func freeSubnet() (*net.IPNet, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for range 64 {
		x := rand.IntN(256)
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.250.%d.0/24", x))
		clash := false
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones == 0 {
				continue // the default route
			}
			if r.Dst.Contains(cand.IP) || cand.Contains(r.Dst.IP) {
				clash = true
				break
			}
		}
		if !clash {
			return cand, nil
		}
	}
	return nil, errors.New("no free 10.250.X.0/24 subnet")
}

// disableIPv6 keeps the root netns from putting a link-local address on one
// of our links.
func disableIPv6(link string) error {
	p := filepath.Join("/proc/sys/net/ipv6/conf", link, "disable_ipv6")
	if _, err := os.Stat(p); err != nil {
		return nil // IPv6 not built in
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("disable IPv6 on %s: %w", link, err)
	}
	return nil
}

var hostNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// AddHost creates a simulated host: a named netns "shn-<name>-<id>" with lo
// up and an eth0 holding the next free address of the subnet (.1, .2, ...),
// whose veth peer is on the underlay bridge, and a mount namespace with the
// netns's own /sys (see the package doc). name must be lowercase letters,
// digits and dashes, at most 20 characters, and unique in the underlay.
func (u *Underlay) AddHost(name string) (*Host, error) {
	u.t.Helper()
	if !hostNameRe.MatchString(name) {
		return nil, fmt.Errorf("add host %q: name must match %s", name, hostNameRe)
	}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, fmt.Errorf("add host %q: underlay %s is closed", name, u.ID)
	}
	for _, h := range u.hosts {
		if h.Name == name {
			u.mu.Unlock()
			return nil, fmt.Errorf("add host %q: name taken", name)
		}
	}
	idx := len(u.hosts) + 1
	if idx > 254 {
		u.mu.Unlock()
		return nil, fmt.Errorf("add host %q: underlay full", name)
	}
	ip := make(net.IP, 4)
	copy(ip, u.Subnet.IP.To4())
	ip[3] = byte(idx)
	h := &Host{
		Name: name,
		NS:   fmt.Sprintf("%s%s-%s", NetnsPrefix, name, u.ID),
		IP:   ip,
		Veth: fmt.Sprintf("%s%s%02x", VethPrefix, u.ID, idx),
		u:    u,
	}
	// Registered before any step so a half-built host is torn down too.
	u.hosts = append(u.hosts, h)
	u.mu.Unlock()
	if err := h.setup(); err != nil {
		return nil, fmt.Errorf("add host %q: %w", name, err)
	}
	u.t.Logf("host %s: netns %s, %s on %s", h.Name, h.NS, h.IP, u.Bridge)
	return h, nil
}

// Hosts returns the underlay's hosts in the order they were added.
func (u *Underlay) Hosts() []*Host {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*Host(nil), u.hosts...)
}

// Partition splits the underlay: a host cannot exchange packets with any host
// in another group. Hosts named in no group keep talking to everyone. It
// replaces any earlier partition; cuts made with Host.Cut stay. The rules are
// per-host nftables drops inside each netns (table "inet shn_part").
func (u *Underlay) Partition(groups ...[]*Host) error {
	group := map[*Host]int{}
	for gi, g := range groups {
		for _, h := range g {
			if h.u != u {
				return fmt.Errorf("partition: host %s is not on underlay %s", h.Name, u.ID)
			}
			if _, dup := group[h]; dup {
				return fmt.Errorf("partition: host %s is in two groups", h.Name)
			}
			group[h] = gi
		}
	}
	var errs []error
	for _, h := range u.Hosts() {
		gi, in := group[h]
		var others []net.IP
		if in {
			for o, oi := range group {
				if oi != gi {
					others = append(others, o.IP)
				}
			}
		}
		if err := h.setPartition(others); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("partition underlay %s: %w", u.ID, err)
	}
	return nil
}

// Heal removes every partition and every cut on the underlay.
func (u *Underlay) Heal() error {
	var errs []error
	for _, h := range u.Hosts() {
		if err := h.setPartition(nil); err != nil {
			errs = append(errs, err)
		}
		if err := h.Heal(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("heal underlay %s: %w", u.ID, err)
	}
	return nil
}

// Close tears the underlay down: every host (its processes, holder, veth and
// netns), then the bridge and the marker. It is called from t.Cleanup and may
// be called earlier; later calls do nothing.
func (u *Underlay) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	hosts := append([]*Host(nil), u.hosts...)
	u.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	for i := len(hosts) - 1; i >= 0; i-- {
		if err := hosts[i].teardown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", hosts[i].Name, err))
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", u.Bridge)); err == nil {
		if err := run(ctx, "ip", "link", "del", u.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge: %w", err))
		}
	}
	if err := os.RemoveAll(filepath.Join(MarkerDir, u.ID)); err != nil {
		errs = append(errs, fmt.Errorf("remove marker: %w", err))
	}
	return errors.Join(errs...)
}
