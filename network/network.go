package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Network is a running managed network: a bridge, its nftables table and a
// supervised dnsmasq. Its methods are safe for concurrent use.
type Network struct {
	cfg     Config // with defaults applied, IPv4CIDR resolved
	name    string
	gateway net.IP
	subnet  *net.IPNet
	paths   statePaths
	log     *slog.Logger

	leaseMu sync.Mutex // serialises hosts-file edits

	mu     sync.Mutex
	sup    *supervisor
	closed bool
}

// running holds the networks this process supervises, by bridge name, so a
// second Ensure never starts a second dnsmasq for the same bridge.
var (
	runningMu sync.Mutex
	running   = map[string]*Network{}
)

// Ensure makes the network described by cfg exist and run, and returns it.
//
// It is idempotent: it creates or adopts the bridge, makes cfg's address its
// only IPv4 address, sets it up, enables net.ipv4.ip_forward, atomically
// reinstalls the table "inet shoal_<name>" and runs dnsmasq under a
// supervisor. If this process already runs the network with the same
// resolved config, Ensure repairs the host state and returns that same
// *Network; with a different config it restarts dnsmasq with the new one.
// A dnsmasq left serving the bridge by an earlier daemon is stopped and
// replaced (leases are kept in StateDir). On failure Ensure undoes what it
// created and leaves adopted things as they were.
func Ensure(ctx context.Context, cfg Config, log *slog.Logger) (*Network, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "network", "network", cfg.Name)
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ensure network %s: %w", cfg.Name, err)
	}

	runningMu.Lock()
	defer runningMu.Unlock()

	gw, subnet, err := resolveCIDR(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure network %s: %w", cfg.Name, err)
	}
	ones, _ := subnet.Mask.Size()
	cfg.IPv4CIDR = fmt.Sprintf("%s/%d", gw, ones)

	prev := running[cfg.Name]
	if prev != nil && prev.cfg == cfg {
		created, err := prev.applyHost(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("ensure network %s: %w", cfg.Name, err)
		}
		if !created {
			return prev, nil
		}
		// The bridge had vanished: dnsmasq's sockets died with it, so
		// start it afresh on the new bridge below.
		log.Warn("bridge was missing and has been recreated; restarting dnsmasq")
	}
	if prev != nil {
		log.Info("restarting network services", "cidr", cfg.IPv4CIDR)
		if err := prev.stop(ctx, true); err != nil {
			return nil, fmt.Errorf("ensure network %s: stop previous: %w", cfg.Name, err)
		}
	}

	n := &Network{
		cfg: cfg, name: cfg.Name, gateway: gw, subnet: subnet,
		paths: pathsFor(cfg.StateDir), log: log,
	}
	var undo []func()
	fail := func(err error) (*Network, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, fmt.Errorf("ensure network %s: %w", cfg.Name, err)
	}
	if _, err := n.applyHost(ctx, &undo); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fail(fmt.Errorf("create state dir %s: %w", cfg.StateDir, err))
	}
	if err := checkSearchable(cfg.StateDir); err != nil {
		return fail(err)
	}
	if err := ensureStaticFile(n.paths.hosts); err != nil {
		return fail(err)
	}
	if err := ensureNamesFile(n.paths.names); err != nil {
		return fail(err)
	}
	args := dnsmasqArgs(cfg.Name, gw, subnet, cfg.Domain, cfg.StaticOnly, n.paths, upstreamServers(gw))
	sup := newSupervisor(cfg.Name, args, n.paths, log)
	if err := sup.start(ctx); err != nil {
		return fail(err)
	}
	n.sup = sup
	running[cfg.Name] = n
	log.Info("network ready", "bridge", cfg.Name, "cidr", cfg.IPv4CIDR, "nat", cfg.NAT, "dnsmasq_pid", sup.pid())
	return n, nil
}

// checkSearchable makes sure every directory from dir up to / lets others
// search it. dnsmasq drops root before it reads the hosts file (at start
// and on SIGHUP); without this it starts fine but silently ignores every
// static lease ("cannot read ...: Permission denied" in its log).
func checkSearchable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("check state dir %s: %w", dir, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%w: state dir %s: %s (mode %o) is not searchable by others, and dnsmasq, which drops root, must read files there",
				ErrInvalidConfig, dir, d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

// resolveCIDR turns cfg.IPv4CIDR into a gateway and subnet. For "auto" an
// existing bridge keeps its address; otherwise the first free 10.x.y.0/24
// from a hash of the name is taken, with .1 as the gateway.
func resolveCIDR(ctx context.Context, cfg Config) (net.IP, *net.IPNet, error) {
	if cfg.IPv4CIDR != AutoCIDR {
		return parseHostCIDR(cfg.IPv4CIDR)
	}
	if ip, subnet, ok := bridgeIPv4(cfg.Name); ok {
		return ip, subnet, nil
	}
	used, err := usedNetworks(ctx, cfg.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("pick subnet: %w", err)
	}
	subnet, err := pickSubnet(cfg.Name, used)
	if err != nil {
		return nil, nil, err
	}
	return addToIP(subnet.IP, 1), subnet, nil
}

// applyHost makes the kernel state match: bridge, address, link up,
// forwarding, nftables. It reports whether it had to create the bridge.
// With undo non-nil it records how to revert what it created.
func (n *Network) applyHost(ctx context.Context, undo *[]func()) (bool, error) {
	link, created, err := ensureBridge(ctx, n.name, n.log)
	if err != nil {
		return false, err
	}
	if created && undo != nil {
		*undo = append(*undo, func() { _ = deleteBridge(context.Background(), n.name) })
	}
	if err := configureBridge(ctx, link, n.gateway, n.subnet); err != nil {
		return created, err
	}
	if err := enableIPForward(ctx); err != nil {
		return created, err
	}
	existed, _, _ := nftState(ctx, n.name)
	if err := ensureNFT(ctx, n.name, n.subnet, n.cfg.NAT); err != nil {
		return created, err
	}
	if !existed && undo != nil {
		*undo = append(*undo, func() { _ = deleteNFT(context.Background(), n.name) })
	}
	return created, nil
}

// Name returns the bridge name.
func (n *Network) Name() string { return n.name }

// Gateway returns the bridge's address, which is the containers' gateway
// and DNS server.
func (n *Network) Gateway() net.IP { return append(net.IP(nil), n.gateway...) }

// Subnet returns the network's IPv4 subnet.
func (n *Network) Subnet() *net.IPNet {
	return &net.IPNet{IP: append(net.IP(nil), n.subnet.IP...), Mask: append(net.IPMask(nil), n.subnet.Mask...)}
}

// reload makes dnsmasq re-read the static lease file.
func (n *Network) reload() error {
	n.mu.Lock()
	sup, closed := n.sup, n.closed
	n.mu.Unlock()
	if closed || sup == nil {
		return nil // the file is read when dnsmasq next starts
	}
	return sup.hup()
}

// stop ends supervision; with kill it also stops dnsmasq. Callers hold
// runningMu.
func (n *Network) stop(ctx context.Context, kill bool) error {
	n.mu.Lock()
	sup := n.sup
	n.closed = true
	n.mu.Unlock()
	if running[n.name] == n {
		delete(running, n.name)
	}
	if sup == nil {
		return nil
	}
	return sup.shutdown(ctx, kill)
}

// Close stops supervising and stops dnsmasq, but leaves the bridge and the
// nftables table in place so running containers keep their connectivity
// across a daemon restart. Leases stay in StateDir for the next Ensure.
func (n *Network) Close() error {
	runningMu.Lock()
	defer runningMu.Unlock()
	if err := n.stop(context.Background(), true); err != nil {
		return fmt.Errorf("close network %s: %w", n.name, err)
	}
	n.log.Info("network closed")
	return nil
}

// Delete removes the network entirely: dnsmasq, the nftables table, the
// bridge (detaching any ports) and dnsmasq's files in StateDir.
func (n *Network) Delete(ctx context.Context) error {
	runningMu.Lock()
	defer runningMu.Unlock()
	var errs []error
	if err := n.stop(ctx, true); err != nil {
		errs = append(errs, err)
	}
	if err := killStrays(ctx, n.name, n.log); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNFT(ctx, n.name); err != nil {
		errs = append(errs, err)
	}
	if err := deleteBridge(ctx, n.name); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{n.paths.pid, n.paths.leases, n.paths.hosts, n.paths.names, n.paths.log} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	_ = os.Remove(n.cfg.StateDir) // only if empty: it may hold the caller's files
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete network %s: %w", n.name, err)
	}
	n.log.Info("network deleted")
	return nil
}
