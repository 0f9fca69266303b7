package node

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// runtimeDevices turns a container's expanded disk and unix devices into
// the runtime's, in name order. A custom volume's disk binds the volume's
// directory in this host's pool.
func (n *Node) runtimeDevices(devs map[string]*shoalv1.Device) runtime.Devices {
	var out runtime.Devices
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		d := devs[name]
		c := d.GetConfig()
		switch d.GetType() {
		case config.DeviceDisk:
			src := c["source"]
			if pool := c["pool"]; pool != "" {
				src = n.customVolumePath(pool, src)
			}
			out.Mounts = append(out.Mounts, runtime.Mount{Name: name, Source: src, Path: c["path"],
				ReadOnly: config.Bool(c, "readonly"), Optional: !required(c)})
		case config.DeviceUnixChar, config.DeviceUnixBlock:
			uid, _ := strconv.ParseUint(c["uid"], 10, 32)
			gid, _ := strconv.ParseUint(c["gid"], 10, 32)
			mode, err := strconv.ParseUint(c["mode"], 8, 32)
			if err != nil {
				mode = 0o660
			}
			out.DevNodes = append(out.DevNodes, runtime.DevNode{Name: name, Source: c["source"], Path: c["path"],
				UID: uint32(uid), GID: uint32(gid), Mode: uint32(mode)})
		}
	}
	return out
}

// checkVolumeHere says whether a custom volume a device attaches is on
// this member, in its pool.
func (n *Node) checkVolumeHere(dev, pool, name string) error {
	p := n.customVolumePath(pool, name)
	if _, err := os.Stat(p); p == "" || err != nil {
		return fmt.Errorf("device %s: storage volume %s is not on member %s: %w", dev, cluster.VolumeKey(pool, name), n.cfg.Name, runtime.ErrDeviceSource)
	}
	return nil
}

// required reports whether a disk device's source must exist (the
// default), or may be skipped (required=false).
func required(c map[string]string) bool { return c["required"] == "" || config.Bool(c, "required") }

// CheckDevices says whether this member can give a container these
// devices now: every required disk source exists, and every unix device's
// source is a node of its type. The error names the device and the member.
func (n *Node) CheckDevices(container string, devs map[string]*shoalv1.Device) error {
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		d := devs[name]
		if d.GetType() == config.DeviceProxy {
			if err := n.checkProxy(container, name, d); err != nil {
				return err
			}
			continue
		}
		src := d.GetConfig()["source"]
		if pool := d.GetConfig()["pool"]; pool != "" {
			if err := n.checkVolumeHere(name, pool, src); err != nil {
				return err
			}
			continue
		}
		st, err := os.Stat(src)
		switch d.GetType() {
		case config.DeviceDisk:
			if err != nil && required(d.GetConfig()) {
				return fmt.Errorf("device %s: source %s does not exist on member %s: %w", name, src, n.cfg.Name, runtime.ErrDeviceSource)
			}
		case config.DeviceUnixChar, config.DeviceUnixBlock:
			want := os.ModeCharDevice | os.ModeDevice
			if d.GetType() == config.DeviceUnixBlock {
				want = os.ModeDevice
			}
			if err != nil || st.Mode()&(os.ModeDevice|os.ModeCharDevice) != want {
				return fmt.Errorf("device %s: source %s is not a %s node on member %s: %w", name, src, d.GetType(), n.cfg.Name, runtime.ErrDeviceSource)
			}
		}
	}
	return nil
}

// checkProxy says whether a proxy device could listen here: one this
// member runs already can; another must find its address free.
func (n *Node) checkProxy(container, dev string, d *shoalv1.Device) error {
	if n.proxies.active(container, dev, proxyKey(d)) {
		return nil
	}
	network, addr, err := config.ParseProxyAddr(d.GetConfig()["listen"])
	if err != nil {
		return err
	}
	var ln io.Closer
	if network == "udp" {
		ln, err = net.ListenPacket(network, addr)
	} else {
		ln, err = net.Listen(network, addr)
	}
	if err != nil {
		return fmt.Errorf("device %s: cannot listen on %s on member %s: %v: %w", dev, addr, n.cfg.Name, err, runtime.ErrDeviceSource)
	}
	return ln.Close()
}

// applyDevices makes a running container's disk and unix devices match its
// record: the definition is rewritten and the difference hot-plugged.
func (n *Node) applyDevices(ctx context.Context, ct *shoalv1.Container) error {
	want := n.runtimeDevices(cluster.ExpandedDevices(ct))
	key := fmt.Sprint(want)
	if prev, ok := n.appliedDevices.Load(ct.GetName()); ok && prev == key {
		return nil
	}
	if err := n.define(ctx, ct); err != nil {
		return err
	}
	spec, err := n.spec(ctx, ct)
	if err != nil {
		return err
	}
	if err := n.rt.SetDevices(ctx, ct.GetName(), spec); err != nil {
		return err
	}
	n.appliedDevices.Store(ct.GetName(), key)
	return nil
}
