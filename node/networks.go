package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/overlay"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// networkSyncTimeout bounds one pass of the network reconciler.
const networkSyncTimeout = 10 * time.Second

// openNetworks brings up every managed network the cluster records, creating
// the default bridge on first start.
//
// The default network of a new cluster (a member started with --listen) is
// an overlay, so containers on different members reach each other out of
// the box; a one-node daemon without --listen gets a plain bridge. Its name
// is recorded as cluster.default_network.
func (n *Node) openNetworks(ctx context.Context) error {
	nets := n.fsm.Networks()
	if len(nets) == 0 && !n.cl.IsLeader() {
		// A joining member may not have applied the log yet: catch up
		// before deciding the cluster has no network.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := n.cl.Sync(sctx); err != nil {
			n.log.Warn("catch up with the leader before opening networks", "err", err)
		}
		cancel()
		nets = n.fsm.Networks()
	}
	if len(nets) == 0 {
		rec := &shoalv1.Network{Name: n.cfg.Bridge, Type: "bridge", Ipv4Cidr: n.cfg.BridgeCIDR, Nat: true}
		if _, err := vtepOf(n.cfg.Address); err == nil {
			rec.Type, rec.Vni = "overlay", 1
		} else if n.cfg.Address != "" {
			n.log.Warn("the default network is a per-member bridge, not an overlay", "reason", err)
		}
		nw, err := n.ensureNetwork(ctx, rec)
		if err != nil {
			return err
		}
		rec.Ipv4Cidr = cidr(nw)
		if err := n.cl.Propose(ctx, &shoalv1.NetworkCreateCommand{Network: rec}); err != nil {
			return err
		}
		return n.cl.Propose(ctx, &shoalv1.ClusterConfigCommand{Set: map[string]string{cluster.DefaultNetworkKey: rec.GetName()}})
	}
	for _, rec := range nets {
		if _, err := n.ensureNetwork(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// ensureNetwork brings up one network on this member: the bridge with the
// gateway address, NAT and dnsmasq, and for an overlay the VXLAN port.
// Every member of an overlay carries the same gateway address and (the
// bridge's MAC derives from its name) the same gateway MAC.
func (n *Node) ensureNetwork(ctx context.Context, rec *shoalv1.Network) (*network.Network, error) {
	if rec.GetType() == "macvlan" {
		return nil, n.ensureMacvlan(rec)
	}
	isOverlay := rec.GetType() == "overlay"
	var local net.IP
	if isOverlay {
		var err error
		if local, err = vtepOf(n.cfg.Address); err != nil {
			return nil, fmt.Errorf("overlay network %s: %w", rec.GetName(), err)
		}
	}
	nw, err := network.Ensure(ctx, network.Config{
		Name: rec.GetName(), IPv4CIDR: rec.GetIpv4Cidr(), NAT: rec.GetNat(), StaticOnly: isOverlay,
		StateDir: filepath.Join(n.cfg.StateDir, "networks", rec.GetName()),
	}, n.baseLog)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", rec.GetName(), err)
	}
	var ovl *overlay.Overlay
	if isOverlay {
		ovl, err = overlay.Ensure(ctx, overlay.Config{
			Bridge: rec.GetName(), VNI: rec.GetVni(), Port: int(rec.GetPort()), Local: local, MTU: int(rec.GetMtu()),
		}, n.baseLog)
		if err != nil {
			n.netMu.RLock()
			_, before := n.nets[rec.GetName()]
			n.netMu.RUnlock()
			if !before {
				if derr := nw.Delete(context.WithoutCancel(ctx)); derr != nil {
					n.log.Warn("remove half-built network", "network", rec.GetName(), "err", derr)
				}
			}
			return nil, fmt.Errorf("network %s: %w", rec.GetName(), err)
		}
	}
	n.netMu.Lock()
	n.nets[rec.GetName()] = nw
	if ovl != nil {
		n.ovls[rec.GetName()] = ovl
	}
	n.netMu.Unlock()
	return nw, nil
}

// ensureMacvlan checks that a macvlan network's parent exists on this
// member and records it; nothing is created on the host until a container
// joins (its NIC is a macvlan on the parent).
func (n *Node) ensureMacvlan(rec *shoalv1.Network) error {
	parent := cluster.MacvlanParent(rec, n.cfg.Name)
	if parent == "" {
		return fmt.Errorf("macvlan network %s: no parent for member %s (set parent or parent.%s): %w", rec.GetName(), n.cfg.Name, n.cfg.Name, ErrNotFound)
	}
	if _, err := netlink.LinkByName(parent); err != nil {
		return fmt.Errorf("macvlan network %s: parent %s does not exist on member %s: %w", rec.GetName(), parent, n.cfg.Name, ErrNotFound)
	}
	n.netMu.Lock()
	n.macvlans[rec.GetName()] = parent
	n.netMu.Unlock()
	return nil
}

// vtepOf is a member's underlay address: the host part of its API address.
func vtepOf(addr string) (net.IP, error) {
	if addr == "" {
		return nil, errors.New("this member has no address: an overlay needs --listen, whose address is the VXLAN endpoint")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if ip := net.ParseIP(host).To4(); ip != nil {
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("member address %s is unspecified: an overlay needs the address other members reach this one at", addr)
		}
		return ip, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return nil, fmt.Errorf("resolve member address %s: %w", host, err)
	}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			return v4, nil
		}
	}
	return nil, fmt.Errorf("member address %s has no IPv4 address", host)
}

func cidr(nw *network.Network) string {
	ones, _ := nw.Subnet().Mask.Size()
	return fmt.Sprintf("%s/%d", nw.Gateway(), ones)
}

// defaultNetwork returns the network containers attach to by default: the
// cluster's (cluster.default_network), else this member's --bridge.
func (n *Node) defaultNetwork() (*network.Network, error) {
	name := n.fsm.ClusterConfig()[cluster.DefaultNetworkKey]
	n.netMu.RLock()
	defer n.netMu.RUnlock()
	if nw, ok := n.nets[name]; ok {
		return nw, nil
	}
	if nw, ok := n.nets[n.cfg.Bridge]; ok {
		return nw, nil
	}
	for _, nw := range n.nets {
		return nw, nil
	}
	return nil, fmt.Errorf("no managed network")
}

// DefaultNetwork is the name of the network a new container's eth0 joins
// when the user names none.
func (n *Node) DefaultNetwork() string {
	nw, err := n.defaultNetwork()
	if err != nil {
		return ""
	}
	return nw.Name()
}

// nicMTU is the MTU containers' NICs on a network must use (0: the kernel's
// default).
func (n *Node) nicMTU(name string) (int, error) {
	n.netMu.RLock()
	defer n.netMu.RUnlock()
	if _, ok := n.macvlans[name]; ok {
		return 0, nil
	}
	if _, ok := n.nets[name]; !ok {
		return 0, fmt.Errorf("network %q is not available on member %s: %w", name, n.cfg.Name, ErrNotFound)
	}
	if o, ok := n.ovls[name]; ok {
		return o.MTU(), nil
	}
	return 0, nil
}

// CheckNIC reports whether this member can give a container nic: a
// nictype=macvlan NIC's parent exists here, and its MTU fits under what
// it attaches to (its network's bridge, or the parent). The error names
// the key at fault.
func (n *Node) CheckNIC(nic *shoalv1.NIC) error {
	limit, what := 0, ""
	switch {
	case nic.GetNictype() == "macvlan":
		l, err := netlink.LinkByName(nic.GetParent())
		if err != nil {
			return fmt.Errorf("parent: %s does not exist on member %s: %w", nic.GetParent(), n.cfg.Name, ErrInvalidDevice)
		}
		limit, what = l.Attrs().MTU, "parent "+nic.GetParent()
	default:
		mtu, err := n.nicMTU(nic.GetNetwork())
		if err != nil {
			return err
		}
		n.netMu.RLock()
		parent, macvlan := n.macvlans[nic.GetNetwork()]
		n.netMu.RUnlock()
		dev := nic.GetNetwork()
		if macvlan {
			dev = parent
		}
		if mtu == 0 {
			if l, err := netlink.LinkByName(dev); err == nil {
				mtu = l.Attrs().MTU
			}
		}
		limit, what = mtu, "network "+nic.GetNetwork()
	}
	if nic.GetMtu() > 0 && limit > 0 && int(nic.GetMtu()) > limit {
		return fmt.Errorf("mtu: %d is more than %s's MTU %d on member %s: %w", nic.GetMtu(), what, limit, n.cfg.Name, ErrInvalidDevice)
	}
	return nil
}

// Leases returns the DHCP leases of a managed network.
func (n *Node) Leases(name string) ([]*shoalv1.Lease, error) {
	n.netMu.RLock()
	nw, ok := n.nets[name]
	n.netMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	ls, err := nw.Leases()
	if err != nil {
		return nil, err
	}
	out := make([]*shoalv1.Lease, 0, len(ls))
	for _, l := range ls {
		out = append(out, &shoalv1.Lease{Hwaddr: l.MAC, Ipv4: l.IP.String(), Hostname: l.Hostname})
	}
	return out, nil
}

// kickNetworks asks the network reconciler for a pass; it never blocks.
func (n *Node) kickNetworks() {
	select {
	case n.netKick <- struct{}{}:
	default:
	}
}

// runNetworks is the network reconciler: after every kick it makes this
// member's DHCP, DNS and overlay forwarding match the cluster's state.
func (n *Node) runNetworks(ctx context.Context) {
	n.syncNetworks(ctx)
	for {
		select {
		case <-n.stop:
			return
		case <-ctx.Done():
			return
		case <-n.netKick:
			n.syncNetworks(ctx)
		}
	}
}

// syncNetworks runs one pass over every network the cluster records:
//   - a network created on another member is brought up here;
//   - DHCP pins the address the cluster allocated to each NIC of this
//     member's containers (on an overlay it answers nobody else);
//   - DNS answers, on an overlay, for every container of the network on any
//     member; on a bridge, for this member's;
//   - an overlay's forwarding entries are reconciled: every member's VTEP
//     for broadcast, each remote NIC's MAC to its owner's VTEP.
func (n *Node) syncNetworks(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, networkSyncTimeout)
	defer cancel()
	cts := n.fsm.Containers()
	vteps := map[string]net.IP{}
	for _, m := range n.fsm.Nodes() {
		if ip, err := vtepOf(m.GetAddress()); err == nil {
			vteps[m.GetName()] = ip
		}
	}
	recorded := map[string]bool{}
	for _, rec := range n.fsm.Networks() {
		recorded[rec.GetName()] = true
	}
	n.netMu.RLock()
	var gone []string
	for name := range n.nets {
		if !recorded[name] {
			gone = append(gone, name)
		}
	}
	for name := range n.macvlans {
		if !recorded[name] {
			gone = append(gone, name)
		}
	}
	n.netMu.RUnlock()
	for _, name := range gone {
		if unlock, ok := n.locks.tryLock("net/" + name); ok {
			n.teardownNetwork(ctx, name) // deleted by the cluster
			unlock()
		}
	}
	for _, rec := range n.fsm.Networks() {
		name := rec.GetName()
		if rec.GetType() == "macvlan" {
			n.netMu.RLock()
			_, open := n.macvlans[name]
			n.netMu.RUnlock()
			if !open {
				if err := n.ensureMacvlan(rec); err != nil {
					n.log.Warn("macvlan network unavailable on this member", "network", name, "err", err)
				}
			}
			continue // the LAN's DHCP and DNS serve it
		}
		n.netMu.RLock()
		nw, open := n.nets[name]
		ovl := n.ovls[name]
		n.netMu.RUnlock()
		if !open {
			var err error
			if nw, err = n.ensureNetwork(ctx, rec); err != nil {
				n.log.Warn("bring up network", "network", name, "err", err)
				continue
			}
			n.netMu.RLock()
			ovl = n.ovls[name]
			n.netMu.RUnlock()
		}
		var leases []network.StaticLease
		var names []network.Name
		var st overlay.State
		legacy := map[string]bool{} // MACs of local containers recorded without NICs
		for _, ct := range cts {
			local := ct.GetNode() == n.cfg.Name
			if len(ct.GetNics()) == 0 && local {
				legacy[strings.ToLower(ct.GetHwaddr())] = true
			}
			for _, nic := range ct.GetNics() {
				if nic.GetNetwork() != name {
					continue
				}
				ip := net.ParseIP(nic.GetIpv4())
				if local && ip != nil {
					leases = append(leases, network.StaticLease{MAC: nic.GetHwaddr(), IP: ip, Hostname: ct.GetName()})
				}
				if ip != nil && nic.GetName() == "eth0" && (local || ovl != nil) {
					names = append(names, network.Name{Hostname: ct.GetName(), IP: ip})
				}
				if vtep, ok := vteps[ct.GetNode()]; ok && ovl != nil {
					mac, err := net.ParseMAC(nic.GetHwaddr())
					if err == nil {
						st.Endpoints = append(st.Endpoints, overlay.Endpoint{MAC: mac, IP: ip, VTEP: vtep})
					}
				}
			}
		}
		var keep func(string) bool
		if ovl == nil {
			keep = func(mac string) bool { return legacy[mac] }
		}
		if err := nw.SetStaticLeases(ctx, leases, keep); err != nil {
			n.log.Warn("pin addresses", "network", name, "err", err)
		}
		if err := nw.SetNames(ctx, names); err != nil {
			n.log.Warn("publish names", "network", name, "err", err)
		}
		if ovl == nil {
			continue
		}
		for _, ip := range vteps {
			st.VTEPs = append(st.VTEPs, ip)
		}
		if _, err := ovl.Sync(ctx, st); err != nil {
			n.log.Warn("sync overlay forwarding", "network", name, "err", err)
		}
	}
}

// CreateNetwork brings a network up on this member and records it, so
// every other member brings it up too. "auto" for the address is resolved
// here (a free 10.x.y.0/24 on this host). If the cluster refuses the record
// (a VNI or subnet clash), what was built here is removed.
func (n *Node) CreateNetwork(ctx context.Context, rec *shoalv1.Network) (*shoalv1.Network, error) {
	unlock := n.locks.lock("net/" + rec.GetName())
	defer unlock()
	if _, err := n.fsm.Network(rec.GetName()); err == nil {
		return nil, fmt.Errorf("network %q: %w", rec.GetName(), cluster.ErrExists)
	}
	n.netMu.RLock()
	_, busy := n.nets[rec.GetName()]
	n.netMu.RUnlock()
	if busy {
		return nil, fmt.Errorf("network %q: %w", rec.GetName(), cluster.ErrExists)
	}
	if rec.GetIpv4Cidr() != network.AutoCIDR {
		// Refuse a clash before anything is built on this host.
		if err := n.fsm.CheckNetwork(rec); err != nil {
			return nil, err
		}
	}
	nw, err := n.ensureNetwork(ctx, rec)
	if err != nil {
		return nil, err
	}
	rec = proto.Clone(rec).(*shoalv1.Network)
	if nw != nil {
		rec.Ipv4Cidr = cidr(nw)
	}
	if err := n.cl.Propose(ctx, &shoalv1.NetworkCreateCommand{Network: rec}); err != nil {
		if _, missing := n.fsm.Network(rec.GetName()); missing != nil {
			n.teardownNetwork(context.WithoutCancel(ctx), rec.GetName())
		}
		return nil, err
	}
	n.kickNetworks()
	return rec, nil
}

// DeleteNetwork removes a network's record (refused while a container's
// NIC is on it); every member then tears it down.
func (n *Node) DeleteNetwork(ctx context.Context, name string) error {
	if err := n.cl.Propose(ctx, &shoalv1.NetworkDeleteCommand{Name: name}); err != nil {
		return err
	}
	n.kickNetworks()
	return nil
}

// teardownNetwork removes a network from this host: its VXLAN port, then
// the bridge, NAT and dnsmasq.
func (n *Node) teardownNetwork(ctx context.Context, name string) {
	n.netMu.Lock()
	nw, ovl := n.nets[name], n.ovls[name]
	delete(n.nets, name)
	delete(n.ovls, name)
	delete(n.macvlans, name)
	n.netMu.Unlock()
	if ovl != nil {
		if err := ovl.Delete(ctx); err != nil {
			n.log.Warn("remove overlay", "network", name, "err", err)
		}
	}
	if nw != nil {
		if err := nw.Delete(ctx); err != nil {
			n.log.Warn("remove network", "network", name, "err", err)
		}
	}
	n.log.Info("network removed from this member", "network", name)
}
