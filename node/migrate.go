package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// A live move, seen from the node: the source freezes the container and
// checkpoints it with CRIU (it stays frozen), the target restores it from
// the checkpoint, frozen, while the source still owns it; once the cluster
// has made the target the owner, the target thaws its copy and the source
// drops its own. If the move is not committed the target removes its copy
// and the source thaws: never two copies running.

// ErrNoCRIU: this host cannot checkpoint containers (CRIU missing or broken).
var ErrNoCRIU = errors.New("CRIU is not available on this host")

// NewCheckpointDir returns a fresh directory path (not yet created) for a
// container's checkpoint, under a state directory the container's mapped
// root can traverse.
func (n *Node) NewCheckpointDir(name string) (string, error) {
	base := filepath.Join(n.cfg.StateDir, "checkpoints")
	if err := os.MkdirAll(base, 0o711); err != nil {
		return "", fmt.Errorf("checkpoint dir: %w", err)
	}
	if err := os.Chmod(base, 0o711); err != nil {
		return "", fmt.Errorf("checkpoint dir: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("checkpoint dir: %w", err)
	}
	// Unguessable: the directory is traversable by all (see
	// runtime.ChownCheckpoint), not listable.
	return filepath.Join(base, name+"."+hex.EncodeToString(b[:])), nil
}

// HoldForMove marks a local container as being moved live: reconciles
// leave it alone (they would thaw it) until release is called.
func (n *Node) HoldForMove(name string) (release func()) {
	n.outgoing.Store(name, true)
	return func() { n.outgoing.Delete(name) }
}

// StopHeld stops a container a move holds (HoldForMove) with its stop
// timeout, leaving its record as it is: the cold move's source stops it
// that way, so that a daemon that dies before the commit finds it still
// desired running and starts it again.
func (n *Node) StopHeld(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if _, held := n.outgoing.Load(name); !held {
		return fmt.Errorf("stop %s for a move: no move holds it: %w", name, ErrConflict)
	}
	n.stopProxies(name)
	st, err := n.rt.State(ctx, name)
	if err != nil || st.Status == runtime.StatusStopped {
		return nil
	}
	if err := n.rt.Stop(ctx, name, n.stopTimeout(name)); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	n.applied.Delete(name)
	n.bus.Lifecycle(n.cfg.Name, "container-stopped", name)
	n.kickCPUs()
	return nil
}

// sweepCheckpoints ends what a killed daemon left of live moves and
// checkpoints: CRIU dumps still serving pages (they hold their container
// frozen; killing them lets the resync thaw it), lazy-pages daemons, and
// checkpoint directories.
func (n *Node) sweepCheckpoints() {
	base := filepath.Join(n.cfg.StateDir, "checkpoints") + "/"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), base) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		prog := filepath.Base(args[0])
		if len(args) > 1 && prog == "ld-linux-x86-64.so.2" {
			prog = "criu" // the bundle's loader runs criu
		}
		if prog != "criu" && prog != "lxc-checkpoint" {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		n.log.Warn("killing a checkpoint process a previous run left", "pid", pid, "cmd", prog)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(base, e.Name()))
	}
}

// Freeze freezes a local container (the start of a live move's downtime).
func (n *Node) Freeze(ctx context.Context, name string) error { return n.rt.Freeze(ctx, name) }

// Thaw thaws a local container (a live move given up on the source).
func (n *Node) Thaw(ctx context.Context, name string) error { return n.rt.Unfreeze(ctx, name) }

// CanCheckpoint reports whether this host's CRIU works (`criu check`),
// probing once.
func (n *Node) CanCheckpoint(ctx context.Context) error {
	n.probeCRIU()
	return n.criuErr
}

// probeCRIU asks CRIU, once, what this host can do.
func (n *Node) probeCRIU() {
	n.criuOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if mounted, err := runtime.CacheKernelFeatures(ctx); err != nil {
			n.log.Warn("CRIU will probe the kernel on every dump and restore", "err", err)
		} else if mounted {
			n.log.Info("cached CRIU's kernel features for this boot (/run is not a tmpfs)")
		}
		out, err := exec.Command("criu", "check").CombinedOutput()
		if err != nil {
			n.criuErr = fmt.Errorf("%w: criu check: %v: %s", ErrNoCRIU, err, strings.TrimSpace(string(out)))
			return
		}
		n.uffd = exec.Command("criu", "check", "--feature", "uffd-noncoop").Run() == nil
		n.dirtyTrack = exec.Command("criu", "check", "--feature", "mem_dirty_track").Run() == nil
		n.log.Info("CRIU probed", "lazy_pages", n.uffd, "dirty_tracking", n.dirtyTrack, "network_lock", runtime.NetworkLock())
	})
}

// CanPostCopy reports whether this host can restore the container with
// lazy pages (post-copy): userfaultfd's non-cooperative mode, and for an
// unprivileged container vm.unprivileged_userfaultfd = 1.
func (n *Node) CanPostCopy(ct *shoalv1.Container) bool {
	n.probeCRIU()
	if n.criuErr != nil || !n.uffd {
		return false
	}
	if config.Bool(cluster.ExpandedConfig(ct), "security.privileged") {
		return true
	}
	b, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// CanPreCopy reports whether this host tracks dirty memory (pre-dump).
func (n *Node) CanPreCopy() bool {
	n.probeCRIU()
	return n.criuErr == nil && n.dirtyTrack
}

// pageServerValidity bounds a post-copy session's certificates: a move
// that has not pulled its pages by then has failed anyway.
const pageServerValidity = time.Hour

// StartLazyCheckpoint dumps a frozen container without its memory and
// serves the pages on addr:port (post-copy); see runtime.LazyDump. The
// page server speaks TLS with a session made for this move alone: it
// accepts only the keys returned, which the caller hands to the target
// over the member-only restore stream. The session's files live beside
// dir until the dump ends.
func (n *Node) StartLazyCheckpoint(ctx context.Context, name, dir, addr string, port int) (*runtime.LazyDump, *shoalv1.PageServerKeys, error) {
	s, err := pki.NewSession("post-copy "+name, time.Now(), pageServerValidity)
	if err != nil {
		return nil, nil, fmt.Errorf("post-copy %s: %w", name, err)
	}
	tlsDir := dir + ".tls"
	files, err := runtime.WriteTLSFiles(tlsDir, s.CAPEM, s.Server.CertPEM, s.Server.KeyPEM)
	if err != nil {
		os.RemoveAll(tlsDir)
		return nil, nil, fmt.Errorf("post-copy %s: %w", name, err)
	}
	d, err := n.rt.StartLazyCheckpoint(ctx, name, dir, addr, port, files)
	if err != nil {
		os.RemoveAll(tlsDir)
		return nil, nil, err
	}
	go func() { <-d.Done(); os.RemoveAll(tlsDir) }()
	return d, &shoalv1.PageServerKeys{CaPem: s.CAPEM, CertPem: s.Client.CertPEM, KeyPem: s.Client.KeyPEM}, nil
}

// StartLazyPages starts the daemon that feeds an incoming post-copy
// restore from the source's page server, presenting keys (the move's
// session, from the source).
func (n *Node) StartLazyPages(ctx context.Context, dir, addr string, port int, keys *shoalv1.PageServerKeys) (*runtime.LazyPages, error) {
	tlsDir := dir + ".tls"
	files, err := runtime.WriteTLSFiles(tlsDir, keys.GetCaPem(), keys.GetCertPem(), keys.GetKeyPem())
	if err != nil {
		os.RemoveAll(tlsDir)
		return nil, fmt.Errorf("post-copy: page server keys: %w", err)
	}
	l, err := runtime.StartLazyPages(ctx, dir, addr, port, files)
	if err != nil {
		os.RemoveAll(tlsDir)
		return nil, err
	}
	go func() { <-l.Done(); os.RemoveAll(tlsDir) }()
	return l, nil
}

// RebootFresh stops a container this node owns and starts it again from
// its volume: what is left when a post-copy move lost the source before
// every memory page arrived.
func (n *Node) RebootFresh(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	if err := n.rt.Stop(ctx, name, 0); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
		unlock()
		return err
	}
	n.applied.Delete(name)
	unlock()
	n.bus.Lifecycle(n.cfg.Name, "container-restarted", name)
	return n.Reconcile(ctx, name)
}

// Checkpoint dumps a local, frozen container into dir with CRIU; it stays
// frozen.
func (n *Node) Checkpoint(ctx context.Context, name, dir string) error {
	return n.rt.Checkpoint(ctx, name, dir, runtime.CheckpointOptions{})
}

// RestoreIncoming restores a container another member still owns from a
// checkpoint that member sent, and leaves it frozen. Until CommitIncoming
// or AbortIncoming the copy is marked incoming, so no resync touches it.
func (n *Node) RestoreIncoming(ctx context.Context, ct *shoalv1.Container, dir string, lazy bool) error {
	name := ct.GetName()
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if cur, err := n.fsm.Container(name); err == nil && cur.GetNode() == n.cfg.Name {
		return fmt.Errorf("container %q is owned by this node: %w", name, ErrConflict)
	}
	n.incoming.Store(name, true)
	if err := n.define(ctx, ct); err != nil {
		return err
	}
	if !config.Bool(cluster.ExpandedConfig(ct), "security.privileged") && !n.idmap.IsZero() {
		if err := runtime.ChownCheckpoint(dir, int(n.idmap.HostUID), int(n.idmap.HostGID)); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
	}
	if err := n.rt.Restore(ctx, name, dir, runtime.RestoreOptions{KeepFrozen: true, LazyPages: lazy}); err != nil {
		return err
	}
	// CRIU does not carry every limit (the blkio weight): apply them again.
	n.applied.Delete(name)
	if err := n.applyLimits(ctx, ct); err != nil {
		n.log.Warn("re-apply limits after restore", "container", name, "err", err)
	}
	return nil
}

// CommitIncoming thaws a restored incoming container once this node's
// view of the cluster shows it as the owner (waiting up to wait for the
// commit to arrive here). It returns ErrConflict when the node did not
// become the owner.
func (n *Node) CommitIncoming(ctx context.Context, name string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		ct, err := n.fsm.Container(name)
		if err == nil && ct.GetNode() == n.cfg.Name {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("container %q: the move to %s was not committed: %w", name, n.cfg.Name, ErrConflict)
		}
		time.Sleep(2 * time.Millisecond) // the commit usually lands within one Raft round
	}
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	defer n.incoming.Delete(name)
	if err := n.rt.Unfreeze(ctx, name); err != nil {
		return err
	}
	// Tell the switches of the container's networks (a macvlan's LAN)
	// that it is here now.
	if err := n.rt.Announce(ctx, name); err != nil {
		n.log.Warn("gratuitous ARP after the move", "container", name, "err", err)
	}
	n.bus.Lifecycle(n.cfg.Name, "container-started", name)
	if ct, err := n.fsm.Container(name); err == nil && len(ct.GetNics()) == 0 {
		// Recorded before NICs: its address was leased, not allocated.
		go n.claimAddress(name, ct.GetHwaddr())
	}
	n.kickNetworks()
	return nil
}

// claimAddress pins, in this member's DHCP server, the address a container
// that moved here live brought along (the default network has the same
// subnet on every member), so that the server never leases it to another
// container here. If a local container already holds it, the moved one
// keeps it (its connections depend on it) and the clash is logged.
func (n *Node) claimAddress(name, mac string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nw, err := n.defaultNetwork()
	if err != nil || mac == "" {
		return
	}
	addrs, err := n.rt.Addresses(ctx, name)
	if err != nil {
		return
	}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil || !nw.Subnet().Contains(ip) {
			continue
		}
		leases, _ := nw.Leases()
		for _, l := range leases {
			if l.IP.Equal(ip) && !strings.EqualFold(l.MAC, mac) {
				n.log.Warn("a moved container's address is leased to another container here", "container", name, "ip", ip, "other_mac", l.MAC)
				return
			}
		}
		if err := nw.SetStaticLease(ctx, mac, ip, name); err != nil {
			n.log.Warn("pin a moved container's address", "container", name, "ip", ip, "err", err)
			return
		}
		n.log.Info("pinned the address the container brought along", "container", name, "ip", ip)
		return
	}
}

// AbortIncoming removes what an uncommitted incoming move left here (the
// frozen copy, its definition and volume), unless this node owns the
// container after all.
func (n *Node) AbortIncoming(ctx context.Context, name string) error {
	defer n.incoming.Delete(name)
	return n.DropLocal(ctx, name)
}
