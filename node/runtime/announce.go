package runtime

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Announce sends, from inside a running container, one gratuitous ARP for
// each IPv4 address on each of its interfaces, so switches on its networks
// learn at once where it now is (a live move's target calls it when the
// container thaws: on a macvlan network the LAN's switches would otherwise
// keep sending its frames to the old host until it next speaks).
func (r *Runtime) Announce(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := r.container(name)
	if err != nil {
		return err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return fmt.Errorf("runtime: announce %s: %w", name, ErrNotRunning)
	}
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("runtime: announce %s: %w", name, err)
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target)
	if err != nil {
		return fmt.Errorf("runtime: announce %s: %w", name, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("runtime: announce %s: %w", name, err)
	}
	// The packet socket must be opened inside the container's namespace;
	// once open it stays bound to it.
	fd, err := socketIn(target)
	if err != nil {
		return fmt.Errorf("runtime: announce %s: %w", name, err)
	}
	defer unix.Close(fd)
	sent := 0
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Flags&net.FlagUp == 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			frame := garp(a.HardwareAddr, ad.IP.To4())
			to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: a.Index, Halen: 6,
				Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return fmt.Errorf("runtime: announce %s on %s: %w", ad.IP, a.Name, err)
			}
			sent++
		}
	}
	r.log.Debug("announced addresses", "container", name, "garps", sent)
	return nil
}

// socketIn opens a raw packet socket inside ns.
func socketIn(ns netns.NsHandle) (int, error) {
	goruntime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		goruntime.UnlockOSThread()
		return -1, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		goruntime.UnlockOSThread()
		return -1, err
	}
	fd, serr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the container's namespace: let it die
		// with the goroutine rather than serve others (never unlocked).
		if serr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("return to the host's network namespace: %w", err)
	}
	goruntime.UnlockOSThread()
	if serr != nil {
		return -1, fmt.Errorf("packet socket: %w", serr)
	}
	return fd, nil
}

// garp is a gratuitous ARP request: who-has ip, tell ip, from mac, to all.
func garp(mac net.HardwareAddr, ip net.IP) []byte {
	b := make([]byte, 42)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(b[14:16], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[16:18], 0x0800) // IPv4
	b[18], b[19] = 6, 4
	binary.BigEndian.PutUint16(b[20:22], 1) // request
	copy(b[22:28], mac)
	copy(b[28:32], ip)
	// target MAC stays zero
	copy(b[38:42], ip)
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
