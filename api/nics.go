package api

import (
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/network"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// nicKeys are the keys AddNIC accepts, with what each takes.
var nicKeys = map[string]string{
	"network":      "the name of a managed network (shoal network list)",
	"nictype":      "macvlan (with parent=; instead of network=)",
	"parent":       "the host interface a nictype=macvlan NIC sits on",
	"ipv4.address": "a static IPv4 address of the network (default: the cluster allocates one)",
	"hwaddr":       "a unicast MAC address (default: a random 00:16:3e:xx:xx:xx)",
	"mtu":          "576 to 9000, at most the network's (default: the network's)",
	"name":         "the interface name inside the container (default: the device name)",
}

// nicNameRE is an interface name a container can hold.
var nicNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,14}$`)

const nicNameWant = "want 1 to 15 lower-case letters, digits, '_', '.', '-', starting with a letter"

// nicFromConfig validates a nic device's keys and builds its record.
func nicFromConfig(name string, cfg map[string]string) (*shoalv1.NIC, error) {
	if !nicNameRE.MatchString(name) {
		return nil, invalid("name", fmt.Sprintf("%q: %s", name, nicNameWant))
	}
	nic := &shoalv1.NIC{Name: name}
	for k, v := range cfg {
		if _, ok := nicKeys[k]; !ok {
			return nil, invalid(k, fmt.Sprintf("unknown nic key: want one of %s", strings.Join(slices.Sorted(maps.Keys(nicKeys)), ", ")))
		}
		bad := func() error { return invalid(k, fmt.Sprintf("%q: want %s", v, nicKeys[k])) }
		switch k {
		case "network":
			nic.Network = v
		case "nictype":
			if v != "macvlan" {
				return nil, bad()
			}
			nic.Nictype = v
		case "parent":
			if err := network.ValidateName(v); err != nil {
				return nil, invalid(k, err.Error())
			}
			nic.Parent = v
		case "ipv4.address":
			if ip := net.ParseIP(v); ip == nil || ip.To4() == nil {
				return nil, bad()
			}
			nic.Ipv4 = v
		case "hwaddr":
			if hw, err := net.ParseMAC(v); err != nil || len(hw) != 6 || hw[0]&1 == 1 {
				return nil, bad()
			}
			nic.Hwaddr = v
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 576 || n > 9000 {
				return nil, bad()
			}
			nic.Mtu = int32(n)
		case "name":
			if !nicNameRE.MatchString(v) {
				return nil, invalid(k, fmt.Sprintf("%q: %s", v, nicNameWant))
			}
			nic.Ifname = v
		}
	}
	switch {
	case nic.Nictype == "" && nic.Network == "":
		return nil, invalid("network", "required: "+nicKeys["network"]+" (or nictype=macvlan parent=IFACE)")
	case nic.Nictype != "" && nic.Network != "":
		return nil, invalid("nictype", "give either network= or nictype=, not both")
	case nic.Nictype == "" && nic.Parent != "":
		return nil, invalid("parent", "only a nictype=macvlan NIC has one (a macvlan network has its own)")
	case nic.Nictype != "" && nic.Parent == "":
		return nil, invalid("parent", "required with nictype=macvlan: "+nicKeys["parent"])
	case nic.Nictype != "" && nic.Ipv4 != "":
		return nil, invalid("ipv4.address", "a nictype=macvlan NIC gets its address from the LAN, not the cluster")
	}
	if nic.Hwaddr == "" {
		nic.Hwaddr = network.RandomMAC()
	}
	return nic, nil
}

// AddNIC records a new network interface for a container; the cluster
// allocates its address in the same entry, and the owner plugs it in (at
// once if the container runs). The call runs on the owner (forwarded), so
// the parent interface and the MTU are checked against the host the NIC
// will be on.
func (s *Server) AddNIC(ctx context.Context, req *shoalv1.AddNICRequest) (*shoalv1.AddNICResponse, error) {
	nic, err := nicFromConfig(req.GetName(), req.GetConfig())
	if err != nil {
		return nil, err
	}
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if ct.GetNode() == s.node.Name() {
		if err := s.node.CheckNIC(nic); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := s.propose(ctx, &shoalv1.ContainerNicAddCommand{Container: ct.GetName(), Nic: nic}); err != nil {
		return nil, err
	}
	rec, err := s.container(ct.GetName())
	if err != nil {
		return nil, err
	}
	for _, n := range rec.GetNics() {
		if n.GetName() == nic.GetName() {
			return &shoalv1.AddNICResponse{Nic: n}, nil
		}
	}
	return nil, toStatus(fmt.Errorf("container %q: nic %s vanished after it was added", ct.GetName(), nic.GetName()))
}

// RemoveNIC removes a network interface (not eth0); its address is free
// again and the owner unplugs it.
func (s *Server) RemoveNIC(ctx context.Context, req *shoalv1.RemoveNICRequest) (*shoalv1.RemoveNICResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if err := s.propose(ctx, &shoalv1.ContainerNicRemoveCommand{Container: ct.GetName(), Name: req.GetName()}); err != nil {
		return nil, err
	}
	return &shoalv1.RemoveNICResponse{}, nil
}
