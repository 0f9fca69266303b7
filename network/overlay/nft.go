package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// filterTable is the nftables table (family bridge) owned by an overlay.
func filterTable(bridge string) string { return "shoal_ovl_" + bridge }

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func matchIF(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

func matchPayload(base expr.PayloadBase, offset uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

func matchUDPDport(port uint16) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
	}, matchPayload(expr.PayloadBaseTransportHeader, 2, binaryutil.BigEndian.PutUint16(port))...)
}

func rule(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// ensureFilter (re)installs the overlay's table atomically (add, delete and
// build in one batch):
//
//	table bridge shoal_ovl_<br> {
//	  chain forward { type filter hook forward priority filter;
//	    oifname <vx> udp dport {67,68} drop; iifname <vx> udp dport {67,68} drop  # DHCP stays local
//	    iifname <vx> ether saddr <gw mac> drop }  # another member's gateway
//	  chain output { type filter hook output priority filter;
//	    oifname <vx> drop }  # the member's own frames (source: the anycast MAC)
//	}
//
// The output rule is what makes the anycast gateway work: a frame from
// another member's gateway would carry the same MAC and address as ours, and
// a container's reply to it would come back to its own member. ARP requests
// for the gateway need no rule: with neigh_suppress on the VXLAN port the
// bridge never forwards ARP for its own address to that port.
func ensureFilter(ctx context.Context, bridge, vx string, gwMAC net.HardwareAddr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: filterTable(bridge)}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	oif, iif := matchIF(expr.MetaKeyOIFNAME, vx), matchIF(expr.MetaKeyIIFNAME, vx)
	for _, port := range []uint16{67, 68} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: rule(oif, matchUDPDport(port))})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: rule(iif, matchUDPDport(port))})
	}
	if len(gwMAC) == 6 {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: rule(iif,
			matchPayload(expr.PayloadBaseLLHeader, 6, gwMAC))})
	}
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: rule(oif)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table bridge %s: %w", t.Name, err)
	}
	return nil
}

// deleteFilter removes the overlay's table; a missing table is not an error.
func deleteFilter(ctx context.Context, bridge string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	for _, t := range []*nftables.Table{
		{Family: nftables.TableFamilyBridge, Name: filterTable(bridge)},
		{Family: nftables.TableFamilyINet, Name: vtepTable(bridge)},
	} {
		c.DelTable(t)
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove nftables table %s: %w", t.Name, err)
		}
	}
	return nil
}

// vtepTable is the nftables table (family inet) that admits VXLAN packets
// from members only.
func vtepTable(bridge string) string { return "shoal_vx_" + bridge }

// ensureVTEPFilter (re)installs, atomically:
//
//	table inet shoal_vx_<br> {
//	  set vteps { type ipv4_addr; elements = { <every member's VTEP> } }
//	  chain input { type filter hook input priority filter;
//	    meta nfproto ipv4 udp dport <port> ip saddr != @vteps drop }
//	}
//
// VXLAN carries no authentication: without this, anyone who can reach the
// port could put frames on the network.
func ensureVTEPFilter(ctx context.Context, bridge string, port int, vteps []net.IP) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: vtepTable(bridge)}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	set := &nftables.Set{Table: t, Name: "vteps", KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, v := range vteps {
		elems = append(elems, nftables.SetElement{Key: v.To4()})
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("nftables set of VTEPs for %s: %w", bridge, err)
	}
	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: rule(
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		},
		matchUDPDport(uint16(port)),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", t.Name, err)
	}
	return nil
}
