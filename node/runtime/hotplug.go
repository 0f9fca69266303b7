package runtime

import (
	"context"
	"fmt"
	"net"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// HasNIC reports whether the host end of a NIC exists (the container runs
// with it plugged in).
func (r *Runtime) HasNIC(hostName string) bool {
	_, err := netlink.LinkByName(hostName)
	return err == nil
}

// HasNICInside reports whether a running container has an interface named
// ifname in its network namespace.
func (r *Runtime) HasNICInside(name, ifname string) bool {
	h, done, err := r.netHandle(name)
	if err != nil {
		return false
	}
	defer done()
	_, err = h.LinkByName(ifname)
	return err == nil
}

// netHandle is a netlink handle inside a running container's network
// namespace; done releases it.
func (r *Runtime) netHandle(name string) (*netlink.Handle, func(), error) {
	c, err := r.container(name)
	if err != nil {
		return nil, nil, err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return nil, nil, ErrNotRunning
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return h, func() { h.Close(); ns.Close() }, nil
}

// PlugNIC adds a NIC to a running container, as LXD's hot-plug does: a veth
// pair whose host end joins the bridge and whose other end moves into the
// container under the NIC's name, with its MAC and MTU, set up (for a
// macvlan NIC, a macvlan in mode bridge on the parent, moved in the same
// way). The container's own network tools configure addresses on it.
func (r *Runtime) PlugNIC(ctx context.Context, name string, nic NIC) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := r.container(name)
	if err != nil {
		return err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return fmt.Errorf("runtime: plug %s into %s: %w", nic.Name, name, ErrNotRunning)
	}
	br, err := netlink.LinkByName(nic.Bridge)
	if err != nil {
		return fmt.Errorf("runtime: plug %s into %s: bridge %s: %w", nic.Name, name, nic.Bridge, err)
	}
	hw, err := net.ParseMAC(nic.HWAddr)
	if err != nil {
		return fmt.Errorf("runtime: plug %s into %s: hwaddr %q: %w", nic.Name, name, nic.HWAddr, ErrInvalid)
	}
	peer := "vsp" + randHex(4)
	var v netlink.Link
	if nic.Macvlan {
		v = &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: peer, ParentIndex: br.Attrs().Index, HardwareAddr: hw, MTU: nic.MTU},
			Mode: netlink.MACVLAN_MODE_BRIDGE}
	} else {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nic.HostName, MasterIndex: br.Attrs().Index}, PeerName: peer, PeerHardwareAddr: hw}
		if nic.MTU > 0 {
			veth.MTU, veth.PeerMTU = nic.MTU, uint32(nic.MTU)
		}
		v = veth
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("runtime: plug %s into %s: create %s %s: %w", nic.Name, name, v.Type(), v.Attrs().Name, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = netlink.LinkDel(v)
		}
	}()
	if !nic.Macvlan {
		if err := netlink.LinkSetUp(v); err != nil {
			return fmt.Errorf("runtime: plug %s into %s: %w", nic.Name, name, err)
		}
	}
	if err := c.AttachInterface(peer, nic.Name); err != nil {
		return fmt.Errorf("runtime: plug %s into %s: move it in: %w", nic.Name, name, err)
	}
	h, done, err := r.netHandle(name)
	if err != nil {
		return fmt.Errorf("runtime: plug %s into %s: %w", nic.Name, name, err)
	}
	defer done()
	link, err := h.LinkByName(nic.Name)
	if err == nil {
		err = h.LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("runtime: plug %s into %s: set it up: %w", nic.Name, name, err)
	}
	ok = true
	r.log.Info("plugged a NIC in", "container", name, "nic", nic.Name, "bridge", nic.Bridge, "host", nic.HostName)
	return nil
}

// UnplugNIC removes a NIC from a running container by deleting its host
// end (the container's end goes with it). A missing one is not an error.
func (r *Runtime) UnplugNIC(ctx context.Context, name, hostName string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("runtime: unplug %s from %s: %w", hostName, name, err)
	}
	r.log.Info("unplugged a NIC", "container", name, "host", hostName)
	return nil
}

// UnplugNICInside removes a NIC that has no host end (a macvlan) from a
// running container by deleting it inside the container's namespace. A
// missing one, or a container that is not running, is not an error.
func (r *Runtime) UnplugNICInside(ctx context.Context, name, ifname string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, done, err := r.netHandle(name)
	if err != nil {
		return nil
	}
	defer done()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("runtime: unplug %s from %s: %w", ifname, name, err)
	}
	r.log.Info("unplugged a NIC", "container", name, "nic", ifname)
	return nil
}

// MacvlanNICs lists the in-container names of the macvlan NICs the
// container's definition names.
func (r *Runtime) MacvlanNICs(name string) []string {
	return r.definedNICs(name, func(item func(string) string) string {
		if item("type") == "macvlan" {
			return item("name")
		}
		return ""
	})
}

// HostNICs lists the host-side veth names the container's definition
// names (lxc.net.N.veth.pair).
func (r *Runtime) HostNICs(name string) []string {
	return r.definedNICs(name, func(item func(string) string) string { return item("veth.pair") })
}

// definedNICs walks the lxc.net.N entries of a container's definition and
// collects what pick returns for each (nothing for ""); pick reads the
// entry's items by key (type, name, veth.pair...).
func (r *Runtime) definedNICs(name string, pick func(item func(string) string) string) []string {
	c, err := r.container(name)
	if err != nil {
		return nil
	}
	var out []string
	for i := 0; ; i++ {
		p := fmt.Sprintf("lxc.net.%d.", i)
		item := func(key string) string {
			if v := c.ConfigItem(p + key); len(v) > 0 {
				return v[0]
			}
			return ""
		}
		if item("type") == "" {
			return out
		}
		if v := pick(item); v != "" {
			out = append(out, v)
		}
	}
}

// DialInside connects to addr from inside a running container's network
// namespace (a proxy device's connect side): the socket is made on a
// thread that joined the namespace, and that thread is never handed back
// to other goroutines.
func (r *Runtime) DialInside(ctx context.Context, name, network, addr string) (net.Conn, error) {
	c, err := r.container(name)
	if err != nil {
		return nil, err
	}
	pid := c.InitPid()
	if pid <= 0 {
		return nil, fmt.Errorf("runtime: connect inside %s: %w", name, ErrNotRunning)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		ns, err := netns.GetFromPid(pid)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			ch <- result{nil, err}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		ch <- result{conn, err}
	}()
	res := <-ch
	if res.err != nil {
		return nil, fmt.Errorf("runtime: connect to %s inside %s: %w", addr, name, res.err)
	}
	return res.conn, nil
}
