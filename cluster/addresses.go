package cluster

import (
	"cmp"
	"fmt"
	"net"
	"strings"

	"github.com/shoal-dev/shoal/network/ipam"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// addresses is the FSM's index of what containers' NICs hold on each
// network: network → IPv4 or MAC → "container/nic", and per network a
// bitmap of the addresses in use, so the lowest free one is found quickly.
// It is derived from the containers (rebuilt on Restore), so it never needs
// a snapshot of its own.
type addresses struct {
	owners map[string]map[string]string
	used   map[string]*ipam.Used
}

func newAddresses() addresses {
	return addresses{owners: map[string]map[string]string{}, used: map[string]*ipam.Used{}}
}

func (a addresses) owner(network, key string) (string, bool) {
	o, ok := a.owners[network][key]
	return o, ok
}

func (a addresses) set(network, key, owner string) {
	if a.owners[network] == nil {
		a.owners[network] = map[string]string{}
	}
	a.owners[network][key] = owner
}

// drop forgets a network.
func (a addresses) drop(network string) {
	delete(a.owners, network)
	delete(a.used, network)
}

// pool is a network's address pool (false: it has no IPv4 subnet).
func (s *state) pool(network string) (ipam.Pool, bool) {
	nw, ok := s.networks[network]
	if !ok || nw.GetIpv4Cidr() == "" {
		return ipam.Pool{}, false
	}
	p, err := ipam.NewPool(nw.GetIpv4Cidr())
	return p, err == nil
}

// index records every NIC of ct.
func (s *state) index(ct *shoalv1.Container) {
	for _, nic := range ct.GetNics() {
		owner := ct.GetName() + "/" + nic.GetName()
		if nic.GetIpv4() != "" {
			s.addrs.set(nic.GetNetwork(), nic.GetIpv4(), owner)
			if p, ok := s.pool(nic.GetNetwork()); ok {
				u := s.addrs.used[nic.GetNetwork()]
				if u == nil {
					u = &ipam.Used{}
					s.addrs.used[nic.GetNetwork()] = u
				}
				p.Add(u, net.ParseIP(nic.GetIpv4()))
			}
		}
		if nic.GetHwaddr() != "" {
			s.addrs.set(nic.GetNetwork(), strings.ToLower(nic.GetHwaddr()), owner)
		}
	}
}

// release forgets ct's NICs: their addresses are free again.
func (s *state) release(ct *shoalv1.Container) {
	for _, nic := range ct.GetNics() {
		delete(s.addrs.owners[nic.GetNetwork()], nic.GetIpv4())
		delete(s.addrs.owners[nic.GetNetwork()], strings.ToLower(nic.GetHwaddr()))
		if p, ok := s.pool(nic.GetNetwork()); ok && s.addrs.used[nic.GetNetwork()] != nil && nic.GetIpv4() != "" {
			p.Remove(s.addrs.used[nic.GetNetwork()], net.ParseIP(nic.GetIpv4()))
		}
	}
}

// checkNames checks that a container's NICs have distinct device names and
// distinct interface names inside the container (name=, else the device
// name).
func checkNames(container string, nics []*shoalv1.NIC) error {
	names, ifnames := map[string]bool{}, map[string]string{}
	for _, nic := range nics {
		if nic.GetName() == "" || names[nic.GetName()] {
			return fmt.Errorf("container %q: nic name %q is empty or given twice: %w", container, nic.GetName(), ErrInvalidCommand)
		}
		names[nic.GetName()] = true
		ifname := cmp.Or(nic.GetIfname(), nic.GetName())
		if o, ok := ifnames[ifname]; ok {
			return fmt.Errorf("container %q: name: nics %s and %s are both %s inside the container: %w", container, o, nic.GetName(), ifname, ErrInvalidCommand)
		}
		ifnames[ifname] = nic.GetName()
	}
	return nil
}

// assignAddresses checks ct's NICs against the networks and what other
// containers hold, and gives every NIC without a static address the lowest
// free one of its network. It runs inside Apply on the record about to be
// stored, so the allocation is part of the entry that creates the
// container: every replica computes the same address and none is given
// twice. It changes nothing in the state; index does, once the entry is
// accepted.
func (s *state) assignAddresses(ct *shoalv1.Container) error {
	if err := checkNames(ct.GetName(), ct.GetNics()); err != nil {
		return err
	}
	taken := map[string]string{} // within ct itself: network/key → nic
	for _, nic := range ct.GetNics() {
		if nic.GetNictype() != "" {
			if nic.GetNictype() != "macvlan" || nic.GetParent() == "" || nic.GetNetwork() != "" || nic.GetIpv4() != "" {
				return fmt.Errorf("container %q: nic %s: nictype %q: want macvlan with a parent, no network and no ipv4.address: %w", ct.GetName(), nic.GetName(), nic.GetNictype(), ErrInvalidCommand)
			}
			continue
		}
		nw, ok := s.networks[nic.GetNetwork()]
		if !ok {
			return fmt.Errorf("container %q: nic %s: network %q: %w", ct.GetName(), nic.GetName(), nic.GetNetwork(), ErrNotFound)
		}
		claim := func(key, what string) error {
			if o, ok := s.addrs.owner(nw.GetName(), key); ok {
				return fmt.Errorf("container %q: nic %s: %s %s on network %s is used by %s: %w", ct.GetName(), nic.GetName(), what, key, nw.GetName(), o, ErrInUse)
			}
			if o, ok := taken[nw.GetName()+"/"+key]; ok {
				return fmt.Errorf("container %q: nics %s and %s both have %s %s on network %s: %w", ct.GetName(), o, nic.GetName(), what, key, nw.GetName(), ErrInUse)
			}
			taken[nw.GetName()+"/"+key] = nic.GetName()
			return nil
		}
		if mac := strings.ToLower(nic.GetHwaddr()); mac != "" {
			if hw, err := net.ParseMAC(mac); err != nil || len(hw) != 6 || hw[0]&1 == 1 {
				return fmt.Errorf("container %q: nic %s: hwaddr %q: want a unicast Ethernet address: %w", ct.GetName(), nic.GetName(), mac, ErrInvalidCommand)
			}
			if err := claim(mac, "hwaddr"); err != nil {
				return err
			}
		}
		if nw.GetIpv4Cidr() == "" {
			if nic.GetIpv4() != "" {
				return fmt.Errorf("container %q: nic %s: ipv4.address %s: network %s has no IPv4 subnet: %w", ct.GetName(), nic.GetName(), nic.GetIpv4(), nw.GetName(), ErrInvalidCommand)
			}
			continue
		}
		pool, err := ipam.NewPool(nw.GetIpv4Cidr())
		if err != nil {
			return fmt.Errorf("container %q: network %s: %w", ct.GetName(), nw.GetName(), err)
		}
		if nic.GetIpv4() != "" {
			ip := net.ParseIP(nic.GetIpv4())
			if err := pool.Check(ip); err != nil {
				return fmt.Errorf("container %q: nic %s: ipv4.address: %w", ct.GetName(), nic.GetName(), err)
			}
			nic.Ipv4, nic.Ipv4Static = ip.To4().String(), true
			if err := claim(nic.GetIpv4(), "ipv4.address"); err != nil {
				return err
			}
			continue
		}
		used := s.addrs.used[nw.GetName()]
		if used == nil {
			used = &ipam.Used{}
		}
		ip, err := pool.NextFree(used, func(ip net.IP) bool {
			_, mine := taken[nw.GetName()+"/"+ip.String()]
			return mine
		})
		if err != nil {
			return fmt.Errorf("container %q: nic %s: network %s: %w", ct.GetName(), nic.GetName(), nw.GetName(), err)
		}
		nic.Ipv4, nic.Ipv4Static = ip.String(), false
		taken[nw.GetName()+"/"+nic.GetIpv4()] = nic.GetName()
	}
	return nil
}

// DefaultNetworkKey is the cluster config key naming the network a new
// container's eth0 joins when the user names none.
const DefaultNetworkKey = "cluster.default_network"

// ShutdownKey is the cluster config key saying what a member's clean
// shutdown does with its containers: ShutdownStay (the default: they keep
// running) or ShutdownEvacuate (moved to other members first, live where
// CRIU can).
const ShutdownKey = "cluster.shutdown"

// Values of ShutdownKey.
const (
	ShutdownStay     = "stay"
	ShutdownEvacuate = "evacuate"
)

// MaxVNI is the largest VXLAN network identifier.
const MaxVNI = 1<<24 - 1

// checkNetwork refuses a network that would clash with one the cluster has:
// an unknown type, an overlay without a free VNI, a subnet that overlaps
// another network's. Each error names the key.
func (s *state) checkNetwork(n *shoalv1.Network) error {
	switch n.GetType() {
	case "", "bridge":
		if n.GetVni() != 0 {
			return fmt.Errorf("network %q: vni: only an overlay network has one: %w", n.GetName(), ErrInvalidCommand)
		}
	case "overlay":
		if n.GetVni() == 0 || n.GetVni() > MaxVNI {
			return fmt.Errorf("network %q: vni %d: want 1 to %d: %w", n.GetName(), n.GetVni(), MaxVNI, ErrInvalidCommand)
		}
		for _, o := range s.networks {
			if o.GetType() == "overlay" && o.GetVni() == n.GetVni() {
				return fmt.Errorf("network %q: vni %d is used by network %s: %w", n.GetName(), n.GetVni(), o.GetName(), ErrInUse)
			}
		}
		if n.GetIpv4Cidr() == "" {
			return fmt.Errorf("network %q: ipv4.address: an overlay needs its gateway/prefix decided once for the cluster: %w", n.GetName(), ErrInvalidCommand)
		}
	case "macvlan":
		if n.GetVni() != 0 || n.GetIpv4Cidr() != "" {
			return fmt.Errorf("network %q: a macvlan network has no vni and no ipv4.address (the parent's LAN gives addresses): %w", n.GetName(), ErrInvalidCommand)
		}
		if MacvlanParent(n, "") == "" {
			has := false
			for k := range n.GetConfig() {
				has = has || strings.HasPrefix(k, "parent.")
			}
			if !has {
				return fmt.Errorf("network %q: parent: a macvlan network needs the host interface it sits on (parent=eth1, parent.MEMBER=...): %w", n.GetName(), ErrInvalidCommand)
			}
		}
		return nil
	default:
		return fmt.Errorf("network %q: type %q: want bridge, overlay or macvlan: %w", n.GetName(), n.GetType(), ErrInvalidCommand)
	}
	if n.GetIpv4Cidr() == "" {
		return nil
	}
	if _, err := ipam.NewPool(n.GetIpv4Cidr()); err != nil {
		return fmt.Errorf("network %q: ipv4.address: %w", n.GetName(), err)
	}
	_, mine, _ := net.ParseCIDR(n.GetIpv4Cidr())
	for _, o := range s.networks {
		if _, theirs, err := net.ParseCIDR(o.GetIpv4Cidr()); err == nil && (mine.Contains(theirs.IP) || theirs.Contains(mine.IP)) {
			return fmt.Errorf("network %q: ipv4.address %s overlaps network %s (%s): %w", n.GetName(), n.GetIpv4Cidr(), o.GetName(), o.GetIpv4Cidr(), ErrInUse)
		}
	}
	return nil
}

// networkUsers lists the containers with a NIC on a network, sorted.
func (s *state) networkUsers(network string) []string {
	var out []string
	for _, name := range sortedKeys(s.containers) {
		for _, nic := range s.containers[name].GetNics() {
			if nic.GetNetwork() == network {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// MacvlanParent is the host interface a macvlan network sits on on a
// member: its parent.MEMBER key, else its parent key.
func MacvlanParent(n *shoalv1.Network, member string) string {
	if p := n.GetConfig()["parent."+member]; member != "" && p != "" {
		return p
	}
	return n.GetConfig()["parent"]
}
