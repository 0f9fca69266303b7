package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/vishvananda/netlink"
)

// DefaultPort is the IANA VXLAN port, used when Config.Port is zero.
const DefaultPort = 4789

// Overhead is what VXLAN over IPv4 adds to each frame: outer IPv4 (20),
// UDP (8), VXLAN (8) and the inner Ethernet header (14).
const Overhead = 50

// MaxVNI is the largest VXLAN network identifier (24 bits).
const MaxVNI = 1<<24 - 1

// Sentinel errors callers branch on.
var (
	// ErrInvalidConfig reports a configuration that cannot work; the error
	// text names the key.
	ErrInvalidConfig = errors.New("invalid overlay configuration")
	// ErrNoBridge reports that the network's bridge does not exist.
	ErrNoBridge = errors.New("bridge does not exist")
	// ErrNoUnderlay reports that no interface carries the local VTEP address.
	ErrNoUnderlay = errors.New("no interface has the local VTEP address")
	// ErrMTUTooLarge reports an MTU the underlay cannot carry once
	// encapsulated.
	ErrMTUTooLarge = errors.New("mtu too large for the underlay")
)

// Config describes one overlay network on this member.
type Config struct {
	// Bridge is the network's bridge; it must exist (package network
	// creates it with the gateway address, NAT and DHCP).
	Bridge string
	// VNI is the network's VXLAN identifier, 1..MaxVNI, the same on
	// every member and unique among networks.
	VNI uint32
	// Port is the UDP destination port; 0 means DefaultPort.
	Port int
	// Local is this member's VTEP address on the underlay. The interface
	// that carries it is the underlay device.
	Local net.IP
	// MTU is the MTU of the bridge and the VXLAN device; 0 means the
	// largest the underlay allows (its MTU minus Overhead).
	MTU int
}

// Device is the name of the network's VXLAN device.
func (c Config) Device() string { return fmt.Sprintf("shvx%d", c.VNI) }

func (c Config) port() int {
	if c.Port == 0 {
		return DefaultPort
	}
	return c.Port
}

// Validate checks the fields that need no host state.
func (c Config) Validate() error {
	switch {
	case c.Bridge == "" || len(c.Bridge) > 15:
		return fmt.Errorf("%w: bridge %q: want a name of 1 to 15 characters", ErrInvalidConfig, c.Bridge)
	case c.VNI == 0 || c.VNI > MaxVNI:
		return fmt.Errorf("%w: vni %d: want 1 to %d", ErrInvalidConfig, c.VNI, MaxVNI)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("%w: port %d: want 1 to 65535 (0 for %d)", ErrInvalidConfig, c.Port, DefaultPort)
	case c.Local.To4() == nil:
		return fmt.Errorf("%w: local %q: want this member's IPv4 underlay address", ErrInvalidConfig, c.Local)
	case c.MTU < 0 || (c.MTU > 0 && c.MTU < 576):
		return fmt.Errorf("%w: mtu %d: want 576 or more (0 for the largest the underlay allows)", ErrInvalidConfig, c.MTU)
	}
	return nil
}

// Overlay is one overlay network's data plane on this member. Its methods
// are not safe for concurrent use: one reconciler owns it.
type Overlay struct {
	cfg    Config
	mtu    int
	local  net.IP
	bridge netlink.Link
	vxlan  netlink.Link
	gwMAC  net.HardwareAddr
	log    *slog.Logger
	// admitted is the VTEP set the input filter last admitted ("" before
	// the first Sync: then only this member's own address is let in).
	admitted string
}

// Ensure makes the overlay's VXLAN port exist on the bridge with cfg's
// settings and returns it. It is idempotent: a matching device is adopted,
// one with other settings is replaced (its forwarding entries then come
// back with the next Sync). The bridge's MTU is set to the overlay's.
func Ensure(ctx context.Context, cfg Config, log *slog.Logger) (*Overlay, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	log = log.With("component", "overlay", "bridge", cfg.Bridge, "vni", cfg.VNI)
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w: %v", cfg.Bridge, ErrNoBridge, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("ensure overlay %s: %w (it is a %s)", cfg.Bridge, ErrNoBridge, br.Type())
	}
	under, err := underlayOf(cfg.Local)
	if err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	most := under.Attrs().MTU - Overhead
	mtu := cfg.MTU
	switch {
	case mtu == 0:
		mtu = most
	case mtu > most:
		return nil, fmt.Errorf("ensure overlay %s: %w: mtu %d: the underlay %s (mtu %d) carries %d at most",
			cfg.Bridge, ErrMTUTooLarge, mtu, under.Attrs().Name, under.Attrs().MTU, most)
	}
	o := &Overlay{cfg: cfg, mtu: mtu, local: cfg.Local.To4(), bridge: br, gwMAC: br.Attrs().HardwareAddr, log: log}
	if err := o.ensureDevice(under); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	if err := netlink.LinkSetMTU(br, mtu); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: set bridge mtu %d: %w", cfg.Bridge, mtu, err)
	}
	if err := ensureFilter(ctx, cfg.Bridge, o.vxlan.Attrs().Name, o.gwMAC); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	// Until the first Sync names the members, no VXLAN packet is admitted.
	if err := ensureVTEPFilter(ctx, cfg.Bridge, cfg.port(), []net.IP{o.local}); err != nil {
		return nil, fmt.Errorf("ensure overlay %s: %w", cfg.Bridge, err)
	}
	log.Info("overlay ready", "device", o.vxlan.Attrs().Name, "local", o.local, "port", cfg.port(), "mtu", mtu, "underlay", under.Attrs().Name)
	return o, nil
}

// underlayOf finds the interface that carries ip.
func underlayOf(ip net.IP) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("look up the interface of %s: %w", ip, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w: local %s", ErrNoUnderlay, ip)
}

// ensureDevice creates or adopts the VXLAN device and sets its port flags.
func (o *Overlay) ensureDevice(under netlink.Link) error {
	name := o.cfg.Device()
	if l, err := netlink.LinkByName(name); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if ok && uint32(vx.VxlanId) == o.cfg.VNI && vx.Port == o.cfg.port() && vx.SrcAddr.Equal(o.local) &&
			!vx.Learning && vx.Group == nil && vx.VtepDevIndex == under.Attrs().Index {
			o.vxlan = l
		} else {
			o.log.Info("replacing a VXLAN device with other settings", "device", name)
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
		}
	}
	if o.vxlan == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = o.mtu
		vx := &netlink.Vxlan{
			LinkAttrs: attrs, VxlanId: int(o.cfg.VNI), VtepDevIndex: under.Attrs().Index,
			SrcAddr: o.local, Port: o.cfg.port(), Learning: false,
		}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("create %s (vni %d, port %d): %w", name, o.cfg.VNI, o.cfg.port(), err)
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("look up new %s: %w", name, err)
		}
		o.vxlan = l
		o.log.Info("created VXLAN device", "device", name)
	}
	vx := o.vxlan
	if err := netlink.LinkSetMTU(vx, o.mtu); err != nil {
		return fmt.Errorf("set %s mtu %d: %w", name, o.mtu, err)
	}
	if vx.Attrs().MasterIndex != o.bridge.Attrs().Index {
		if err := netlink.LinkSetMaster(vx, o.bridge); err != nil {
			return fmt.Errorf("attach %s to %s: %w", name, o.cfg.Bridge, err)
		}
	}
	if err := netlink.LinkSetLearning(vx, false); err != nil {
		return fmt.Errorf("turn learning off on %s: %w", name, err)
	}
	if err := netlink.LinkSetBrNeighSuppress(vx, true); err != nil {
		return fmt.Errorf("turn neigh_suppress on for %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(vx); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// MTU is the overlay's MTU; containers' NICs on the network must use it.
func (o *Overlay) MTU() int { return o.mtu }

// Device is the VXLAN device's name.
func (o *Overlay) Device() string { return o.vxlan.Attrs().Name }

// Delete removes the VXLAN device (and with it every forwarding entry) and
// the filter table. The bridge is left to package network.
func (o *Overlay) Delete(ctx context.Context) error {
	var errs []error
	if err := netlink.LinkDel(o.vxlan); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("remove %s: %w", o.Device(), err))
	}
	if err := deleteFilter(ctx, o.cfg.Bridge); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete overlay %s: %w", o.cfg.Bridge, err)
	}
	o.log.Info("overlay deleted")
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, errNoDevice)
}
