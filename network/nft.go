package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// tableName is the nftables table (family inet) owned by a network.
func tableName(bridge string) string { return "shoal_" + bridge }

// ifname pads an interface name the way the kernel compares IIFNAME/OIFNAME.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// matchIIF / matchOIF load the in/out interface name and compare it.
func matchIF(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// matchIPv4Net matches "ip saddr|daddr [!=] subnet" (offset 12 saddr, 16 daddr).
func matchIPv4Net(offset uint32, op expr.CmpOp, subnet *net.IPNet) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(subnet.Mask), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: subnet.IP.To4()},
	}
}

// matchNFProtoIPv4 restricts an inet-family rule to IPv4 packets.
func matchNFProtoIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// matchL4Dport matches "meta l4proto <proto> th dport <port>".
func matchL4Dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var accept = []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}

// ensureNFT (re)installs the network's table atomically: in one netlink
// batch it adds the table (a no-op if present), deletes it and builds it
// again, so rules never pile up and there is no window without them.
//
//	table inet shoal_<br> {
//	  chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr <subnet> ip daddr != <subnet> masquerade }      # NAT only
//	  chain forward { type filter hook forward priority filter;
//	    iifname <br> accept; oifname <br> accept }
//	  chain input { type filter hook input priority filter;
//	    iifname <br> udp dport {67,53} accept; iifname <br> tcp dport 53 accept }
//	}
func ensureNFT(ctx context.Context, bridge string, subnet *net.IPNet, nat bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables for %s: %w", bridge, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName(bridge)}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	if nat {
		post := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: cat(
			matchNFProtoIPv4(),
			matchIPv4Net(12, expr.CmpOpEq, subnet),
			matchIPv4Net(16, expr.CmpOpNeq, subnet),
			[]expr.Any{&expr.Masq{}},
		)})
	}

	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: cat(matchIF(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), accept)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: cat(matchIF(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge), accept)})

	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	for _, p := range []struct {
		proto byte
		port  uint16
	}{{unix.IPPROTO_UDP, 67}, {unix.IPPROTO_UDP, 53}, {unix.IPPROTO_TCP, 53}} {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: cat(
			matchIF(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), matchL4Dport(p.proto, p.port), accept)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", t.Name, err)
	}
	return nil
}

// deleteNFT removes the network's table; a missing table is not an error.
func deleteNFT(ctx context.Context, bridge string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables for %s: %w", bridge, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName(bridge)}
	// Add-then-delete in one batch deletes the table whether or not it exists.
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete nftables table inet %s: %w", t.Name, err)
	}
	return nil
}

// nftState reports whether the network's table exists and whether it holds
// a masquerade rule. Used by tests and for diagnostics.
func nftState(ctx context.Context, bridge string) (exists, masq bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, false, fmt.Errorf("open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, false, fmt.Errorf("list nftables tables: %w", err)
	}
	var t *nftables.Table
	for _, tt := range tables {
		if tt.Name == tableName(bridge) {
			t = tt
		}
	}
	if t == nil {
		return false, false, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return true, false, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return true, false, fmt.Errorf("list rules of %s/%s: %w", t.Name, ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if _, ok := e.(*expr.Masq); ok {
					masq = true
				}
			}
		}
	}
	return true, masq, nil
}
