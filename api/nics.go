package api

import (
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/network"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// nicKeys are the keys AddNIC accepts, with what each takes.
var nicKeys = map[string]string{
	"network":      "the name of a managed network (shoal network list)",
	"ipv4.address": "a static IPv4 address of the network (default: the cluster allocates one)",
	"hwaddr":       "a unicast MAC address (default: a random 00:16:3e:xx:xx:xx)",
}

// nicNameRE is an interface name a container can hold.
var nicNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,14}$`)

// AddNIC records a new network interface for a container; the cluster
// allocates its address in the same entry, and the owner plugs it in (at
// once if the container runs).
func (s *Server) AddNIC(ctx context.Context, req *shoalv1.AddNICRequest) (*shoalv1.AddNICResponse, error) {
	if !nicNameRE.MatchString(req.GetName()) {
		return nil, invalid("name", fmt.Sprintf("%q: want 1 to 15 lower-case letters, digits, '_', '.', '-', starting with a letter", req.GetName()))
	}
	for k, v := range req.GetConfig() {
		if _, ok := nicKeys[k]; !ok {
			return nil, invalid(k, fmt.Sprintf("unknown nic key: want one of %s", strings.Join(slices.Sorted(maps.Keys(nicKeys)), ", ")))
		}
		switch k {
		case "ipv4.address":
			if ip := net.ParseIP(v); ip == nil || ip.To4() == nil {
				return nil, invalid(k, fmt.Sprintf("%q: want %s", v, nicKeys[k]))
			}
		case "hwaddr":
			if hw, err := net.ParseMAC(v); err != nil || len(hw) != 6 || hw[0]&1 == 1 {
				return nil, invalid(k, fmt.Sprintf("%q: want %s", v, nicKeys[k]))
			}
		}
	}
	if req.GetConfig()["network"] == "" {
		return nil, invalid("network", "required: "+nicKeys["network"])
	}
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	nic := &shoalv1.NIC{Name: req.GetName(), Network: req.GetConfig()["network"],
		Hwaddr: req.GetConfig()["hwaddr"], Ipv4: req.GetConfig()["ipv4.address"]}
	if nic.Hwaddr == "" {
		nic.Hwaddr = network.RandomMAC()
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
