package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"path/filepath"
	"regexp"
	"strings"
)

// AutoCIDR asks Ensure to pick a free 10.x.y.0/24 for the network.
const AutoCIDR = "auto"

// DefaultDomain is the DNS domain used when Config.Domain is empty.
const DefaultDomain = "shoal"

// maxIfNameLen is IFNAMSIZ minus the trailing NUL.
const maxIfNameLen = 15

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrInvalidConfig reports a Config that cannot describe a network.
	ErrInvalidConfig = errors.New("invalid network config")
	// ErrNoFreeSubnet reports that "auto" found no 10.x.y.0/24 free on this host.
	ErrNoFreeSubnet = errors.New("no free subnet")
	// ErrNotBridge reports that a link with the network's name exists but is
	// not a bridge, so it cannot be adopted.
	ErrNotBridge = errors.New("link exists and is not a bridge")
	// ErrNotFound reports a static lease or lease that does not exist.
	ErrNotFound = errors.New("not found")
)

// Config describes a managed bridge network.
type Config struct {
	// Name is the bridge name, e.g. "shoalbr0" (at most 15 characters).
	Name string
	// IPv4CIDR is the host address and prefix on the bridge, e.g.
	// "10.87.0.1/24", or "auto" to pick a free 10.x.y.0/24 that overlaps no
	// host route or address (deterministic scan starting from a hash of Name;
	// an existing bridge keeps the address it already has).
	IPv4CIDR string
	// NAT masquerades traffic from the subnet that leaves through other
	// interfaces.
	NAT bool
	// StateDir holds dnsmasq's pid, lease, hosts and log files. Use one
	// directory per network. It must be traversable by the unprivileged user
	// dnsmasq drops to (Ensure creates it 0755).
	StateDir string
	// Domain is the DNS domain for containers; "shoal" when empty.
	Domain string
	// StaticOnly makes DHCP answer only the MACs given static leases
	// (SetStaticLeases): on a network whose addresses the cluster
	// allocates, each member serves its own containers and nobody else.
	StaticOnly bool
}

var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// dnsLabelRE matches one RFC 1123 label.
var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// withDefaults returns cfg with defaults filled in.
func (cfg Config) withDefaults() Config {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if cfg.IPv4CIDR == "" {
		cfg.IPv4CIDR = AutoCIDR
	}
	return cfg
}

// Validate reports whether cfg (with defaults applied) describes a network
// Ensure can build. Errors wrap ErrInvalidConfig.
func (cfg Config) Validate() error {
	cfg = cfg.withDefaults()
	if err := validateIfName(cfg.Name); err != nil {
		return err
	}
	if cfg.IPv4CIDR != AutoCIDR {
		if _, _, err := parseHostCIDR(cfg.IPv4CIDR); err != nil {
			return err
		}
	}
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return fmt.Errorf("%w: state dir %q must be an absolute path", ErrInvalidConfig, cfg.StateDir)
	}
	if !validDomain(cfg.Domain) {
		return fmt.Errorf("%w: domain %q is not a valid DNS name", ErrInvalidConfig, cfg.Domain)
	}
	return nil
}

func validateIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: name is empty", ErrInvalidConfig)
	case len(name) > maxIfNameLen:
		return fmt.Errorf("%w: name %q is longer than %d characters", ErrInvalidConfig, name, maxIfNameLen)
	case !ifNameRE.MatchString(name):
		return fmt.Errorf("%w: name %q may only hold letters, digits, '_', '.', '-' and must start with a letter or digit", ErrInvalidConfig, name)
	}
	return nil
}

func validDomain(d string) bool {
	if len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

func validHostname(h string) bool {
	return dnsLabelRE.MatchString(h)
}

// parseHostCIDR parses "a.b.c.d/n" as a host address inside its subnet.
func parseHostCIDR(s string) (net.IP, *net.IPNet, error) {
	ip, subnet, err := net.ParseCIDR(s)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: ipv4 cidr %q: %v", ErrInvalidConfig, s, err)
	}
	ip4 := ip.To4()
	if ip4 == nil {
		return nil, nil, fmt.Errorf("%w: %q is not an IPv4 address", ErrInvalidConfig, s)
	}
	ones, _ := subnet.Mask.Size()
	if ones < 8 || ones > 30 {
		return nil, nil, fmt.Errorf("%w: prefix /%d of %q must be between /8 and /30", ErrInvalidConfig, ones, s)
	}
	subnet.IP = subnet.IP.To4()
	if ip4.Equal(subnet.IP) || ip4.Equal(broadcast(subnet)) {
		return nil, nil, fmt.Errorf("%w: %q is the network or broadcast address, not a host address", ErrInvalidConfig, s)
	}
	return ip4, subnet, nil
}

// broadcast returns the last address of an IPv4 subnet.
func broadcast(n *net.IPNet) net.IP {
	ip := n.IP.To4()
	out := make(net.IP, 4)
	for i := range out {
		out[i] = ip[i] | ^n.Mask[i]
	}
	return out
}

// addToIP returns ip + d for IPv4.
func addToIP(ip net.IP, d int) net.IP {
	v := binary.BigEndian.Uint32(ip.To4())
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, v+uint32(d))
	return out
}

// dhcpRange returns the first and last addresses dnsmasq may hand out:
// network+2 .. broadcast-1 (dnsmasq never offers its own address).
func dhcpRange(n *net.IPNet) (net.IP, net.IP) {
	return addToIP(n.IP, 2), addToIP(broadcast(n), -1)
}

func overlaps(a, b *net.IPNet) bool {
	return a.Contains(b.IP) || b.Contains(a.IP)
}

// pickSubnet returns the first 10.x.y.0/24 that overlaps nothing in used,
// scanning all 65536 candidates in order from a start derived from name.
// It is a pure function so it can be tested without a host.
func pickSubnet(name string, used []*net.IPNet) (*net.IPNet, error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	start := h.Sum32() & 0xffff
	mask := net.CIDRMask(24, 32)
	for i := uint32(0); i < 1<<16; i++ {
		idx := (start + i) & 0xffff
		cand := &net.IPNet{IP: net.IPv4(10, byte(idx>>8), byte(idx), 0).To4(), Mask: mask}
		free := true
		for _, u := range used {
			if overlaps(cand, u) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return nil, fmt.Errorf("pick subnet for %s: %w", name, ErrNoFreeSubnet)
}

// bridgeMAC returns a stable, locally administered MAC for the bridge so
// its address does not change as ports come and go.
func bridgeMAC(name string) net.HardwareAddr {
	h := fnv.New32a()
	h.Write([]byte("bridge/" + name))
	s := h.Sum32()
	return net.HardwareAddr{0x00, 0x16, 0x3e, byte(s >> 16), byte(s >> 8), byte(s)}
}

// ValidateName checks a network (bridge) name: 1 to 15 letters, digits,
// '_', '.', '-'.
func ValidateName(name string) error { return validateIfName(name) }
