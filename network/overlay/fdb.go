package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var errNoDevice = unix.ENODEV

// Endpoint is one container NIC on the network, as the cluster records it.
type Endpoint struct {
	// MAC is the NIC's hardware address (unicast).
	MAC net.HardwareAddr
	// IP is its IPv4 address; nil when it has none yet (no ARP entry).
	IP net.IP
	// VTEP is the VTEP address of the member that runs it.
	VTEP net.IP
}

// State is the desired forwarding state of one network, the same on every
// member: the VTEPs of the members that carry the network and the
// endpoints on it.
type State struct {
	VTEPs     []net.IP
	Endpoints []Endpoint
}

// Stats counts what a Sync changed.
type Stats struct {
	Added, Replaced, Removed int
	// Skipped counts endpoints whose VTEP is not among State.VTEPs (a
	// member that left): they get no entries.
	Skipped int
}

// Changed reports whether the Sync touched the kernel.
func (s Stats) Changed() bool { return s.Added+s.Replaced+s.Removed > 0 }

// table is a network's forwarding state in comparable form.
type table struct {
	flood   map[string]bool   // remote VTEPs for head-end replication
	unicast map[string]string // remote MAC → VTEP (VXLAN entries)
	port    map[string]bool   // remote MACs with a bridge entry on the VXLAN port
	arp     map[string]string // IPv4 → MAC (ARP entries on the bridge)
}

func newTable() table {
	return table{flood: map[string]bool{}, unicast: map[string]string{}, port: map[string]bool{}, arp: map[string]string{}}
}

// plan computes the table a member whose VTEP is local must have for st.
// It validates st: a bad endpoint fails the whole plan, so a Sync never
// programs half of a state.
func plan(local net.IP, st State) (table, int, error) {
	t := newTable()
	members := map[string]bool{}
	for _, v := range st.VTEPs {
		if v.To4() == nil {
			return t, 0, fmt.Errorf("%w: vtep %q: want an IPv4 address", ErrInvalidConfig, v)
		}
		members[v.To4().String()] = true
		if !v.Equal(local) {
			t.flood[v.To4().String()] = true
		}
	}
	skipped := 0
	for _, e := range st.Endpoints {
		if len(e.MAC) != 6 || e.MAC[0]&1 == 1 || isZero(e.MAC) {
			return t, 0, fmt.Errorf("%w: endpoint mac %q: want a unicast Ethernet address", ErrInvalidConfig, e.MAC)
		}
		if e.VTEP.To4() == nil {
			return t, 0, fmt.Errorf("%w: endpoint %s: vtep %q: want an IPv4 address", ErrInvalidConfig, e.MAC, e.VTEP)
		}
		if e.IP != nil && e.IP.To4() == nil {
			return t, 0, fmt.Errorf("%w: endpoint %s: ip %q: want an IPv4 address", ErrInvalidConfig, e.MAC, e.IP)
		}
		vtep := e.VTEP.To4().String()
		if !members[vtep] {
			skipped++
			continue
		}
		mac := e.MAC.String()
		if e.IP != nil {
			ip := e.IP.To4().String()
			if other, dup := t.arp[ip]; dup && other != mac {
				return t, 0, fmt.Errorf("%w: ip %s is on both %s and %s", ErrInvalidConfig, ip, other, mac)
			}
			t.arp[ip] = mac
		}
		if e.VTEP.Equal(local) {
			continue // local: the bridge learns it on the container's port
		}
		if other, dup := t.unicast[mac]; dup && other != vtep {
			return t, 0, fmt.Errorf("%w: mac %s is on both %s and %s", ErrInvalidConfig, mac, other, vtep)
		}
		t.unicast[mac] = vtep
		t.port[mac] = true
	}
	return t, skipped, nil
}

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}

// op is one kernel change.
type op struct {
	kind  opKind
	neigh netlink.Neigh
}

type opKind int

const (
	opAdd     opKind = iota // NeighSet: a new entry
	opAppend                // NeighAppend: one more head-end replication target
	opReplace               // NeighSet over an existing entry
	opDel                   // NeighDel
)

// diff lists the kernel changes that turn have into want, in an order that
// never leaves a moving MAC pointing nowhere: VXLAN entries before bridge
// entries when a MAC becomes remote, bridge entries before VXLAN entries
// when it becomes local.
func diff(have, want table, vx, br int) []op {
	var ops []op
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, v := range sortedKeys(want.flood) {
		if !have.flood[v] {
			ops = append(ops, op{opAppend, floodEntry(vx, zero, v)})
		}
	}
	for _, mac := range sortedKeys(want.unicast) {
		v := want.unicast[mac]
		switch cur, ok := have.unicast[mac]; {
		case !ok:
			ops = append(ops, op{opAdd, vxlanEntry(vx, mac, v)})
		case cur != v:
			ops = append(ops, op{opReplace, vxlanEntry(vx, mac, v)})
		}
	}
	for _, mac := range sortedKeys(want.port) {
		if !have.port[mac] {
			ops = append(ops, op{opAdd, portEntry(vx, mac)})
		}
	}
	for _, ip := range sortedKeys(want.arp) {
		mac := want.arp[ip]
		switch cur, ok := have.arp[ip]; {
		case !ok:
			ops = append(ops, op{opAdd, arpEntry(br, ip, mac)})
		case cur != mac:
			ops = append(ops, op{opReplace, arpEntry(br, ip, mac)})
		}
	}
	for _, ip := range sortedKeys(have.arp) {
		if _, ok := want.arp[ip]; !ok {
			ops = append(ops, op{opDel, arpEntry(br, ip, have.arp[ip])})
		}
	}
	for _, mac := range sortedKeys(have.port) {
		if !want.port[mac] {
			ops = append(ops, op{opDel, portEntry(vx, mac)})
		}
	}
	for _, mac := range sortedKeys(have.unicast) {
		if _, ok := want.unicast[mac]; !ok {
			ops = append(ops, op{opDel, vxlanEntry(vx, mac, have.unicast[mac])})
		}
	}
	for _, v := range sortedKeys(have.flood) {
		if !want.flood[v] {
			ops = append(ops, op{opDel, floodEntry(vx, zero, v)})
		}
	}
	return ops
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func mustMAC(s string) net.HardwareAddr {
	mac, _ := net.ParseMAC(s)
	return mac
}

// floodEntry is "bridge fdb append 00:00:00:00:00:00 dev VX dst VTEP self permanent".
func floodEntry(vx int, zero net.HardwareAddr, vtep string) netlink.Neigh {
	return netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: zero, IP: net.ParseIP(vtep).To4()}
}

// vxlanEntry is "bridge fdb replace MAC dev VX dst VTEP self permanent".
func vxlanEntry(vx int, mac, vtep string) netlink.Neigh {
	return netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: mustMAC(mac), IP: net.ParseIP(vtep).To4()}
}

// portEntry is "bridge fdb replace MAC dev VX master static".
func portEntry(vx int, mac string) netlink.Neigh {
	return netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
		State: netlink.NUD_NOARP, HardwareAddr: mustMAC(mac)}
}

// arpEntry is "ip neigh replace IP lladdr MAC dev BR nud permanent".
func arpEntry(br int, ip, mac string) netlink.Neigh {
	return netlink.Neigh{LinkIndex: br, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP(ip).To4(), HardwareAddr: mustMAC(mac)}
}

// read returns the forwarding state the kernel has for this overlay, only
// the kinds of entries Sync manages: the bridge's own (permanent) entries
// and learned ones on the containers' ports are not ours.
func (o *Overlay) read() (table, error) {
	t := newTable()
	vx, br := o.vxlan.Attrs().Index, o.bridge.Attrs().Index
	fdb, err := netlink.NeighList(vx, unix.AF_BRIDGE)
	if err != nil {
		return t, fmt.Errorf("list forwarding entries of %s: %w", o.Device(), err)
	}
	for _, n := range fdb {
		if n.LinkIndex != vx {
			continue
		}
		mac := n.HardwareAddr.String()
		switch {
		case n.Flags&netlink.NTF_SELF != 0 && n.IP.To4() != nil:
			if isZero(n.HardwareAddr) {
				t.flood[n.IP.To4().String()] = true
			} else {
				t.unicast[mac] = n.IP.To4().String()
			}
		case n.Flags&netlink.NTF_SELF == 0 && n.MasterIndex == br && n.State&netlink.NUD_PERMANENT == 0:
			// The bridge's entries come without NTF_SELF and with NDA_MASTER;
			// permanent ones are the port's own address.
			t.port[mac] = true
		}
	}
	arp, err := netlink.NeighList(br, unix.AF_INET)
	if err != nil {
		return t, fmt.Errorf("list ARP entries of %s: %w", o.cfg.Bridge, err)
	}
	for _, n := range arp {
		if n.LinkIndex == br && n.State&netlink.NUD_PERMANENT != 0 && n.IP.To4() != nil {
			t.arp[n.IP.To4().String()] = n.HardwareAddr.String()
		}
	}
	return t, nil
}

// Sync makes this member's forwarding state for the network match st: it
// reads what the kernel has, and adds, replaces and removes entries until
// the two agree. Entries are derived from st alone; nothing is learned from
// the wire. An invalid st changes nothing.
func (o *Overlay) Sync(ctx context.Context, st State) (Stats, error) {
	var s Stats
	want, skipped, err := plan(o.local, st)
	if err != nil {
		return s, fmt.Errorf("sync overlay %s: %w", o.cfg.Bridge, err)
	}
	s.Skipped = skipped
	if key := fmt.Sprint(sortedKeys(want.flood)); key != o.admitted {
		vteps := []net.IP{o.local}
		for _, v := range sortedKeys(want.flood) {
			vteps = append(vteps, net.ParseIP(v))
		}
		if err := ensureVTEPFilter(ctx, o.cfg.Bridge, o.cfg.port(), vteps); err != nil {
			return s, fmt.Errorf("sync overlay %s: %w", o.cfg.Bridge, err)
		}
		o.admitted = key
	}
	have, err := o.read()
	if err != nil {
		return s, fmt.Errorf("sync overlay %s: %w", o.cfg.Bridge, err)
	}
	for _, op := range diff(have, want, o.vxlan.Attrs().Index, o.bridge.Attrs().Index) {
		if err := ctx.Err(); err != nil {
			return s, fmt.Errorf("sync overlay %s: %w", o.cfg.Bridge, err)
		}
		n := op.neigh
		switch op.kind {
		case opAppend:
			err = netlink.NeighAppend(&n)
			s.Added++
		case opAdd:
			err = netlink.NeighSet(&n)
			s.Added++
		case opReplace:
			err = netlink.NeighSet(&n)
			s.Replaced++
		case opDel:
			err = netlink.NeighDel(&n)
			if errors.Is(err, unix.ENOENT) {
				err = nil // gone already (a port that went away took it)
			}
			s.Removed++
		}
		if err != nil {
			return s, fmt.Errorf("sync overlay %s: %s %s: %w", o.cfg.Bridge, op.kind, describe(n), err)
		}
	}
	if s.Changed() {
		o.log.Debug("overlay synced", "added", s.Added, "replaced", s.Replaced, "removed", s.Removed, "skipped", s.Skipped)
	}
	return s, nil
}

func (k opKind) String() string {
	return [...]string{"add", "append", "replace", "remove"}[k]
}

// describe names an entry the way `bridge fdb` / `ip neigh` would.
func describe(n netlink.Neigh) string {
	switch {
	case n.Family == unix.AF_INET:
		return fmt.Sprintf("ARP entry %s → %s", n.IP, n.HardwareAddr)
	case n.Flags&netlink.NTF_MASTER != 0:
		return fmt.Sprintf("bridge entry %s → VXLAN port", n.HardwareAddr)
	default:
		return fmt.Sprintf("VXLAN entry %s → %s", n.HardwareAddr, n.IP)
	}
}
