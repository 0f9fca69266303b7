package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// State returns what this host observes of a container right now; detail
// adds what costs more to find out (addresses without a DHCP lease).
func (n *Node) State(ctx context.Context, ct *shoalv1.Container, detail bool) *shoalv1.ContainerState {
	return n.state(ctx, ct, detail, n.leaseMap())
}

// States returns the observed state of many containers, reading the DHCP
// leases once and the runtime in parallel.
func (n *Node) States(ctx context.Context, cts []*shoalv1.Container) []*shoalv1.ContainerState {
	leases := n.leaseMap()
	out := make([]*shoalv1.ContainerState, len(cts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, ct := range cts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = n.state(ctx, ct, false, leases)
		}()
	}
	wg.Wait()
	return out
}

func (n *Node) state(ctx context.Context, ct *shoalv1.Container, detail bool, leases map[string]string) *shoalv1.ContainerState {
	out := &shoalv1.ContainerState{Status: "Stopped"}
	st, err := n.rt.State(ctx, ct.GetName())
	if err != nil {
		if !errors.Is(err, runtime.ErrNotFound) {
			out.Status = "Error"
		}
		return out
	}
	out.Status = statusName(st.Status)
	out.Pid = int64(st.PID)
	out.MemoryBytes = st.MemoryBytes
	out.CpuNanoseconds = st.CPUNanos
	out.Processes = st.Processes
	if st.Status == runtime.StatusStopped {
		return out
	}
	// The cluster allocated the NICs' addresses (DHCP hands out exactly
	// those); a container recorded before NICs has its DHCP lease; with
	// detail and no lease, read the addresses in its network namespace.
	for _, nic := range ct.GetNics() {
		if nic.GetIpv4() != "" {
			out.Ipv4 = append(out.Ipv4, nic.GetIpv4())
		}
	}
	if len(out.Ipv4) > 0 {
		return out
	}
	if ip, ok := leases[strings.ToLower(ct.GetHwaddr())]; ok {
		out.Ipv4 = []string{ip}
	} else if detail {
		out.Ipv4, _ = n.rt.Addresses(ctx, ct.GetName())
	}
	return out
}

// leaseMap maps MAC addresses to leased IPv4 addresses on this member's
// networks.
func (n *Node) leaseMap() map[string]string {
	out := map[string]string{}
	n.netMu.RLock()
	nets := make([]*network.Network, 0, len(n.nets))
	for _, nw := range n.nets {
		nets = append(nets, nw)
	}
	n.netMu.RUnlock()
	for _, nw := range nets {
		ls, err := nw.Leases()
		if err != nil {
			continue
		}
		for _, l := range ls {
			out[strings.ToLower(l.MAC)] = l.IP.String()
		}
	}
	return out
}

// DiskUsage returns the bytes a container's volume uses.
func (n *Node) DiskUsage(ctx context.Context, ct *shoalv1.Container) int64 {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return 0
	}
	u, _ := d.Usage(ctx, volumeName(ct.GetName()))
	return u
}

// Restart stops and starts a running container without changing its desired
// state.
func (n *Node) Restart(ctx context.Context, name string, timeout time.Duration) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	ct, err := n.fsm.Container(name)
	if err != nil {
		return err
	}
	if err := n.rt.Stop(ctx, name, timeout); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	if err := n.define(ctx, ct); err != nil {
		return err
	}
	if err := n.rt.Start(ctx, name); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	n.applied.Store(name, configKey(cluster.ExpandedConfig(ct)))
	n.bus.Lifecycle(n.cfg.Name, "container-restarted", name)
	return nil
}

// ErrInvalidExec marks an exec request this container cannot run: a user
// or group id outside the ids mapped into it.
var ErrInvalidExec = errors.New("invalid exec request")

// Exec runs a command in a running container, as req.UID and req.GID,
// which must be ids the container has: below its id map's size unless it
// is privileged, and never 4294967295 (-1, "unchanged", to the kernel).
func (n *Node) Exec(ctx context.Context, name string, req runtime.ExecRequest) (int, error) {
	ct, err := n.fsm.Container(name)
	if err != nil {
		return -1, err
	}
	limit := uint64(math.MaxUint32) // exclusive
	if !config.Bool(cluster.ExpandedConfig(ct), "security.privileged") && !n.idmap.IsZero() {
		limit = uint64(n.idmap.Size)
	}
	for _, id := range []struct {
		flag string
		v    uint32
	}{{"--user", req.UID}, {"--group", req.GID}} {
		if uint64(id.v) >= limit {
			return -1, fmt.Errorf("%w: %s %d is outside the ids of %s (0-%d)", ErrInvalidExec, id.flag, id.v, name, limit-1)
		}
	}
	for k, v := range cluster.ExpandedConfig(ct) {
		if len(k) > len("environment.") && k[:len("environment.")] == "environment." {
			req.Env = append([]string{k[len("environment."):] + "=" + v}, req.Env...)
		}
	}
	t0 := time.Now()
	code, err := n.rt.Exec(ctx, name, req)
	n.log.Debug("exec", "container", name, "cmd", req.Cmd[0], "took", time.Since(t0))
	return code, err
}

// PushFile writes a file into a container.
func (n *Node) PushFile(ctx context.Context, name, path string, r io.Reader, mode os.FileMode, uid, gid int) error {
	if _, err := n.fsm.Container(name); err != nil {
		return err
	}
	return n.rt.PushFile(ctx, name, path, r, mode, uid, gid)
}

// PullFile reads a file from a container.
func (n *Node) PullFile(ctx context.Context, name, path string) (io.ReadCloser, os.FileInfo, error) {
	if _, err := n.fsm.Container(name); err != nil {
		return nil, nil, err
	}
	return n.rt.PullFile(ctx, name, path)
}

// ConsoleLog returns a container's console log.
func (n *Node) ConsoleLog(ctx context.Context, name string) ([]byte, error) {
	if _, err := n.fsm.Container(name); err != nil {
		return nil, err
	}
	return n.rt.ConsoleLog(ctx, name)
}

// FileOwner returns a host file's owner as the container sees it.
func (n *Node) FileOwner(name string, fi os.FileInfo) (int, int) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0
	}
	uid, gid := st.Uid, st.Gid
	if ct, err := n.fsm.Container(name); err == nil && !config.Bool(cluster.ExpandedConfig(ct), "security.privileged") {
		uid, gid = n.idmap.ToContainer(uid, gid)
	}
	return int(uid), int(gid)
}

// HasVolume reports whether a container's volume exists on this host.
func (n *Node) HasVolume(ctx context.Context, name string) bool {
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	for _, d := range n.pools {
		if ok, _ := d.VolumeExists(ctx, volumeName(name)); ok {
			return true
		}
	}
	return false
}
