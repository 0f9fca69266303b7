package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Resources describes this member's hardware as `shoal info --resources`
// shows it: CPUs (/proc/cpuinfo, /sys), memory (/proc/meminfo), each pool's
// filesystem, and the network interfaces but containers' veth ends.
func (n *Node) Resources(ctx context.Context) (*shoalv1.GetResourcesResponse, error) {
	out := &shoalv1.GetResourcesResponse{Member: n.cfg.Name}
	cpu, err := cpuResources("/proc/cpuinfo", "/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	out.Cpu = cpu
	mem, err := memoryResources("/proc/meminfo")
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	out.Memory = mem
	n.poolsMu.RLock()
	for name, d := range n.pools {
		// The directory every volume of the pool sits in.
		dir := filepath.Dir(d.Path("containers/x"))
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			n.log.Warn("resources: pool", "pool", name, "err", err)
			continue
		}
		out.Pools = append(out.Pools, &shoalv1.PoolResources{Name: name, Driver: d.Info().Name,
			Total: int64(st.Blocks) * st.Bsize, Used: int64(st.Blocks-st.Bfree) * st.Bsize})
	}
	n.poolsMu.RUnlock()
	sort.Slice(out.Pools, func(i, j int) bool { return out.Pools[i].GetName() < out.Pools[j].GetName() })
	ifs, err := interfaceResources("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	out.Interfaces = ifs
	return out, nil
}

// cpuResources reads the CPUs' model and topology.
func cpuResources(cpuinfo, online string) (*shoalv1.CPUResources, error) {
	out := &shoalv1.CPUResources{Architecture: arch(), Count: int32(goruntime.NumCPU())}
	if b, err := os.ReadFile(online); err == nil {
		if n := countCPUList(strings.TrimSpace(string(b))); n > 0 {
			out.Count = int32(n)
		}
	}
	f, err := os.Open(cpuinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sockets := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "model name", "Model", "cpu model":
			if out.Model == "" {
				out.Model = v
			}
		case "physical id":
			sockets[v] = true
		case "cpu cores":
			if n, err := strconv.Atoi(v); err == nil && out.Cores == 0 {
				out.Cores = int32(n)
			}
		}
	}
	out.Sockets = int32(len(sockets))
	return out, sc.Err()
}

// countCPUList counts the CPUs of a list such as "0-3,6".
func countCPUList(s string) int {
	total := 0
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		lo, err := strconv.Atoi(a)
		if err != nil {
			return 0
		}
		hi := lo
		if isRange {
			if hi, err = strconv.Atoi(b); err != nil || hi < lo {
				return 0
			}
		}
		total += hi - lo + 1
	}
	return total
}

func arch() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return goruntime.GOARCH
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// memoryResources reads MemTotal and MemAvailable; used is the rest.
func memoryResources(meminfo string) (*shoalv1.MemoryResources, error) {
	b, err := os.ReadFile(meminfo)
	if err != nil {
		return nil, err
	}
	kb := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				kb[strings.TrimSuffix(f[0], ":")] = n * 1024
			}
		}
	}
	total, ok := kb["MemTotal"]
	if !ok {
		return nil, errors.New(meminfo + ": no MemTotal")
	}
	avail, ok := kb["MemAvailable"]
	if !ok {
		avail = kb["MemFree"] + kb["Cached"] + kb["Buffers"]
	}
	return &shoalv1.MemoryResources{Total: total, Available: avail, Used: total - avail}, nil
}

// interfaceResources lists the network interfaces but veth ends.
func interfaceResources(sysNet string) ([]*shoalv1.InterfaceResources, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	read := func(dev, file string) string {
		b, _ := os.ReadFile(filepath.Join(sysNet, dev, file))
		return strings.TrimSpace(string(b))
	}
	var out []*shoalv1.InterfaceResources
	for _, ifc := range ifs {
		typ := ""
		for _, line := range strings.Split(read(ifc.Name, "uevent"), "\n") {
			if v, ok := strings.CutPrefix(line, "DEVTYPE="); ok {
				typ = v
			}
		}
		switch {
		case ifc.Flags&net.FlagLoopback != 0:
			typ = "loopback"
		case typ == "":
			if _, err := os.Stat(filepath.Join(sysNet, ifc.Name, "device")); err == nil {
				typ = "physical"
			} else {
				typ = "virtual"
			}
		}
		if typ == "veth" {
			continue
		}
		r := &shoalv1.InterfaceResources{Name: ifc.Name, Type: typ, Hwaddr: ifc.HardwareAddr.String(), Mtu: int32(ifc.MTU), State: "down"}
		if ifc.Flags&net.FlagUp != 0 {
			r.State = "up"
		}
		if speed, err := strconv.ParseInt(read(ifc.Name, "speed"), 10, 64); err == nil && speed > 0 {
			r.SpeedMbps = speed
		}
		if addrs, err := ifc.Addrs(); err == nil {
			for _, a := range addrs {
				r.Addresses = append(r.Addresses, a.String())
			}
		}
		out = append(out, r)
	}
	return out, nil
}
