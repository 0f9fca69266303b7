package node

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/shoal-dev/shoal/network"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// openNetworks brings up every managed network the cluster records, creating
// the default bridge on first start.
func (n *Node) openNetworks(ctx context.Context) error {
	nets := n.fsm.Networks()
	if len(nets) == 0 {
		nw, err := n.ensureNetwork(ctx, &shoalv1.Network{Name: n.cfg.Bridge, Type: "bridge", Ipv4Cidr: n.cfg.BridgeCIDR, Nat: true})
		if err != nil {
			return err
		}
		rec := &shoalv1.Network{Name: nw.Name(), Type: "bridge", Ipv4Cidr: cidr(nw), Nat: true}
		return n.cl.Propose(ctx, &shoalv1.NetworkCreateCommand{Network: rec})
	}
	for _, rec := range nets {
		if _, err := n.ensureNetwork(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) ensureNetwork(ctx context.Context, rec *shoalv1.Network) (*network.Network, error) {
	nw, err := network.Ensure(ctx, network.Config{
		Name: rec.GetName(), IPv4CIDR: rec.GetIpv4Cidr(), NAT: rec.GetNat(),
		StateDir: filepath.Join(n.cfg.StateDir, "networks", rec.GetName()),
	}, n.baseLog)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", rec.GetName(), err)
	}
	n.netMu.Lock()
	n.nets[rec.GetName()] = nw
	n.netMu.Unlock()
	return nw, nil
}

func cidr(nw *network.Network) string {
	ones, _ := nw.Subnet().Mask.Size()
	return fmt.Sprintf("%s/%d", nw.Gateway(), ones)
}

// defaultNetwork returns the network containers attach to by default.
func (n *Node) defaultNetwork() (*network.Network, error) {
	n.netMu.RLock()
	defer n.netMu.RUnlock()
	if nw, ok := n.nets[n.cfg.Bridge]; ok {
		return nw, nil
	}
	for _, nw := range n.nets {
		return nw, nil
	}
	return nil, fmt.Errorf("no managed network")
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
