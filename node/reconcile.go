package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/failpoint"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// DefaultStopTimeout is how long a clean shutdown may take before the
// container is killed.
const DefaultStopTimeout = 30 * time.Second

func volumeName(container string) string { return "containers/" + container }

// VolumeName is the storage volume holding a container's rootfs.
func VolumeName(container string) string { return volumeName(container) }

// DropLocal removes this host's copy of a container another member owns
// now (after a move); it refuses while this node is still the owner.
func (n *Node) DropLocal(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if ct, err := n.fsm.Container(name); err == nil && ct.GetNode() == n.cfg.Name {
		return fmt.Errorf("container %q is owned by this node: %w", name, ErrConflict)
	}
	// This copy is not the container: it must not say goodbye on the
	// container's connections as it dies.
	if err := n.rt.Disconnect(ctx, name); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		n.log.Warn("disconnect a stale copy before removing it", "container", name, "err", err)
	}
	return n.removeLocal(ctx, name)
}

// resync reconciles every container this node owns and reports local
// containers the cluster does not know (orphans are never deleted silently).
func (n *Node) resync(ctx context.Context) {
	defer n.sweepCustomReplicas(ctx)
	known := map[string]bool{}
	for _, ct := range n.fsm.Containers() {
		known[ct.GetName()] = true
		if ct.GetNode() != n.cfg.Name {
			continue
		}
		if err := n.Reconcile(ctx, ct.GetName()); err != nil {
			n.log.Warn("reconcile", "container", ct.GetName(), "err", err)
		}
	}
	local, err := n.rt.List(ctx)
	if err != nil {
		n.log.Warn("list local containers", "err", err)
		return
	}
	n.sweepStaleVolumes(ctx, local)
	for _, name := range local {
		if !known[name] {
			n.log.Warn("orphaned container: defined on this host but unknown to the cluster; left alone", "container", name)
			continue
		}
		if _, in := n.incoming.Load(name); in {
			continue
		}
		if _, out := n.outgoing.Load(name); out {
			continue
		}
		// A copy of a container another member owns: the source side of a
		// move that committed while this daemon was down or cut off.
		if ct, err := n.fsm.Container(name); err == nil && ct.GetNode() != n.cfg.Name {
			// Healed elsewhere while this member was away, its copy
			// recorded as a replica to be?
			if kept, err := n.keepAsReplica(ctx, name); err != nil || kept {
				if err != nil {
					n.log.Warn("keep a stale copy as a replica", "container", name, "err", err)
				}
				continue
			}
			n.log.Warn("removing the copy a committed move left here", "container", name, "owner", ct.GetNode())
			if err := n.DropLocal(ctx, name); err != nil {
				n.log.Warn("remove stale copy", "container", name, "err", err)
			}
		}
	}
}

// SetStopTimeout makes the next stop of a container that a reconcile performs
// use this timeout (0 kills at once).
func (n *Node) SetStopTimeout(name string, d time.Duration) {
	n.hintMu.Lock()
	n.hints[name] = d
	n.hintMu.Unlock()
}

func (n *Node) stopTimeout(name string) time.Duration {
	n.hintMu.Lock()
	defer n.hintMu.Unlock()
	d, ok := n.hints[name]
	if !ok {
		return DefaultStopTimeout
	}
	delete(n.hints, name)
	return d
}

// Reconcile makes one container's host state match the FSM: it creates the
// volume and LXC definition, starts, stops or freezes it, applies changed
// limits, and removes it from the host when the cluster deleted it.
func (n *Node) Reconcile(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	ct, err := n.fsm.Container(name)
	if errors.Is(err, cluster.ErrNotFound) {
		return n.removeLocal(ctx, name)
	}
	if err != nil {
		return err
	}
	if ct.GetNode() != n.cfg.Name {
		n.stopProxies(name) // moved or healed away: the owner listens now
		return nil
	}
	if _, held := n.outgoing.Load(name); held {
		return nil // a live move holds it frozen; the move decides
	}
	if _, ok := ctx.Value(progressKey{}).(ProgressFunc); !ok {
		ctx = WithProgress(ctx, n.statusProgress(ct))
	}
	err = n.reconcile(ctx, ct)
	n.reportStatus(ct, err)
	return err
}

func (n *Node) reconcile(ctx context.Context, ct *shoalv1.Container) error {
	ct, err := n.finishRestore(ctx, ct)
	if err != nil {
		return err
	}
	if err := n.ensureVolume(ctx, ct); err != nil {
		return err
	}
	st, err := n.rt.State(ctx, ct.GetName())
	defined := err == nil
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	status := runtime.StatusStopped
	if defined {
		status = st.Status
	}
	switch ct.GetDesiredState() {
	case shoalv1.DesiredState_DESIRED_STATE_RUNNING, shoalv1.DesiredState_DESIRED_STATE_FROZEN:
		switch status {
		case runtime.StatusStopped:
			if n.Fenced() && ha.PolicyOf(cluster.ExpandedConfig(ct)).Enabled {
				return fmt.Errorf("start %s: this member is fenced (no Raft quorum): an HA container waits until it is back: %w", ct.GetName(), ErrConflict)
			}
			if err := n.define(ctx, ct); err != nil {
				return err
			}
			if err := failpoint.Hit("start-after-define"); err != nil {
				return err
			}
			if err := n.rt.Start(ctx, ct.GetName()); err != nil {
				return fmt.Errorf("start %s: %w", ct.GetName(), err)
			}
			n.applied.Store(ct.GetName(), configKey(cluster.ExpandedConfig(ct)))
			n.appliedNICs.Delete(ct.GetName())
			n.appliedDevices.Store(ct.GetName(), fmt.Sprint(n.runtimeDevices(cluster.ExpandedDevices(ct))))
			n.bus.Lifecycle(n.cfg.Name, "container-started", ct.GetName())
			n.kickCPUs()
			status = runtime.StatusRunning
		default:
			if err := n.applyLimits(ctx, ct); err != nil {
				return err
			}
			if err := n.applyNICs(ctx, ct); err != nil {
				return err
			}
			if err := n.applyDevices(ctx, ct); err != nil {
				return err
			}
		}
		if err := n.applyProxies(ct); err != nil {
			return err
		}
		if ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_FROZEN && status == runtime.StatusRunning {
			if err := n.rt.Freeze(ctx, ct.GetName()); err != nil {
				return fmt.Errorf("freeze %s: %w", ct.GetName(), err)
			}
			n.bus.Lifecycle(n.cfg.Name, "container-paused", ct.GetName())
		}
		if ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_RUNNING && status == runtime.StatusFrozen {
			if err := n.rt.Unfreeze(ctx, ct.GetName()); err != nil {
				return fmt.Errorf("unfreeze %s: %w", ct.GetName(), err)
			}
			n.bus.Lifecycle(n.cfg.Name, "container-resumed", ct.GetName())
		}
	default: // STOPPED
		n.stopProxies(ct.GetName())
		if status != runtime.StatusStopped {
			if err := failpoint.Hit("stop-before-stop"); err != nil {
				return err
			}
			if err := n.rt.Stop(ctx, ct.GetName(), n.stopTimeout(ct.GetName())); err != nil {
				return fmt.Errorf("stop %s: %w", ct.GetName(), err)
			}
			n.applied.Delete(ct.GetName())
			n.bus.Lifecycle(n.cfg.Name, "container-stopped", ct.GetName())
			n.kickCPUs()
		} else if !defined {
			return n.define(ctx, ct)
		}
	}
	return nil
}

// ensureVolume creates the container's volume from its image when missing.
func (n *Node) ensureVolume(ctx context.Context, ct *shoalv1.Container) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	vol := volumeName(ct.GetName())
	ok, err := d.VolumeExists(ctx, vol)
	if err != nil || ok {
		return err
	}
	if renamed, err := n.resumeRename(ctx, ct); err != nil || renamed {
		return err
	}
	if promoted, err := n.promoteReplica(ctx, d, ct); err != nil || promoted {
		return err
	}
	src, err := n.imageVolume(ctx, d, ct.GetImageFingerprint(), config.Bool(cluster.ExpandedConfig(ct), "security.privileged"))
	if err != nil {
		return err
	}
	if err := d.CloneVolume(ctx, src, vol); err != nil {
		return fmt.Errorf("create volume of %s: %w", ct.GetName(), err)
	}
	if err := failpoint.Hit("create-after-volume"); err != nil {
		return err
	}
	n.bus.Lifecycle(n.cfg.Name, "container-created", ct.GetName())
	return nil
}

// define writes the container's LXC definition from its config.
func (n *Node) define(ctx context.Context, ct *shoalv1.Container) error {
	spec, err := n.spec(ctx, ct)
	if err != nil {
		return err
	}
	if err := n.rt.Define(ctx, spec); err != nil {
		return fmt.Errorf("define %s: %w", ct.GetName(), err)
	}
	hostname := strings.NewReader(ct.GetName() + "\n")
	if err := n.rt.PushFile(ctx, ct.GetName(), "/etc/hostname", hostname, 0o644, 0, 0); err != nil {
		return fmt.Errorf("write hostname of %s: %w", ct.GetName(), err)
	}
	return nil
}

func (n *Node) spec(ctx context.Context, ct *shoalv1.Container) (runtime.Spec, error) {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return runtime.Spec{}, err
	}
	lim, err := n.limits(ctx, ct)
	if err != nil {
		return runtime.Spec{}, err
	}
	nics, err := n.nics(ct)
	if err != nil {
		return runtime.Spec{}, err
	}
	cfg := cluster.ExpandedConfig(ct)
	return runtime.Spec{
		Name:       ct.GetName(),
		Hostname:   ct.GetName(),
		Rootfs:     d.Path(volumeName(ct.GetName())),
		Privileged: config.Bool(cfg, "security.privileged"),
		IDMap:      n.idmap,
		Nesting:    config.Bool(cfg, "security.nesting"),
		Limits:     lim,
		NICs:       nics,
		Autostart:  config.Bool(cfg, "boot.autostart"),
		Devices:    n.runtimeDevices(cluster.ExpandedDevices(ct)),
	}, nil
}

// nics are the container's network devices: its recorded NICs, each on its
// network's bridge with that network's MTU, or for a container recorded
// before NICs were, eth0 on the default network.
func (n *Node) nics(ct *shoalv1.Container) ([]runtime.NIC, error) {
	if len(ct.GetNics()) == 0 {
		nw, err := n.defaultNetwork()
		if err != nil {
			return nil, err
		}
		return []runtime.NIC{{Name: "eth0", Bridge: nw.Name(), HWAddr: ct.GetHwaddr(), HostName: hostVeth(ct.GetName(), 0)}}, nil
	}
	out := make([]runtime.NIC, 0, len(ct.GetNics()))
	for i, nic := range ct.GetNics() {
		if err := n.CheckNIC(nic); err != nil {
			return nil, fmt.Errorf("container %s: nic %s: %w", ct.GetName(), nic.GetName(), err)
		}
		ifname := cmp.Or(nic.GetIfname(), nic.GetName())
		if nic.GetNictype() == "macvlan" {
			out = append(out, runtime.NIC{Name: ifname, Macvlan: true, Bridge: nic.GetParent(), HWAddr: nic.GetHwaddr(), MTU: int(nic.GetMtu())})
			continue
		}
		mtu, err := n.nicMTU(nic.GetNetwork())
		if err != nil {
			return nil, fmt.Errorf("container %s: nic %s: %w", ct.GetName(), nic.GetName(), err)
		}
		if nic.GetMtu() > 0 {
			mtu = int(nic.GetMtu())
		}
		n.netMu.RLock()
		parent, macvlan := n.macvlans[nic.GetNetwork()]
		n.netMu.RUnlock()
		if macvlan {
			out = append(out, runtime.NIC{Name: ifname, Macvlan: true, Bridge: parent, HWAddr: nic.GetHwaddr(), MTU: int(nic.GetMtu())})
			continue
		}
		host := hostVeth(ct.GetName(), 0)
		if i > 0 || nic.GetName() != "eth0" {
			host = hostVethNamed(ct.GetName(), nic.GetName())
		}
		out = append(out, runtime.NIC{Name: ifname, Bridge: nic.GetNetwork(), HWAddr: nic.GetHwaddr(),
			HostName: host, MTU: mtu})
	}
	return out, nil
}

// hostVeth names the host end of a container's NIC i: fixed per container,
// so a restore (which must create it under the name LXC hands CRIU) knows
// it, and short enough for a link name (15 bytes).
func hostVeth(container string, i int) string {
	h := fnv.New32a()
	h.Write([]byte(container))
	return fmt.Sprintf("vsh%08x%d", h.Sum32(), i)
}

// hostVethNamed names the host end of a NIC other than eth0 by the NIC's
// name, so removing one NIC never renames another's.
func hostVethNamed(container, nic string) string {
	h := fnv.New32a()
	h.Write([]byte(container + "/" + nic))
	return fmt.Sprintf("vsn%08x", h.Sum32())
}

// applyNICs makes a running container's NICs match its record: a NIC
// added since it started is plugged in, one removed is unplugged, and the
// definition is rewritten so a restart or a live move's restore has them.
func (n *Node) applyNICs(ctx context.Context, ct *shoalv1.Container) error {
	if len(ct.GetNics()) == 0 {
		return nil
	}
	want, err := n.nics(ct)
	if err != nil {
		return err
	}
	key := fmt.Sprint(want)
	if prev, ok := n.appliedNICs.Load(ct.GetName()); ok && prev == key {
		return nil
	}
	wanted, wantedInside := map[string]bool{}, map[string]bool{}
	for _, nic := range want {
		if nic.Macvlan {
			wantedInside[nic.Name] = true
		} else {
			wanted[nic.HostName] = true
		}
	}
	old, oldInside := n.rt.HostNICs(ct.GetName()), n.rt.MacvlanNICs(ct.GetName())
	if err := n.define(ctx, ct); err != nil {
		return err
	}
	for _, host := range old {
		if !wanted[host] {
			if err := n.rt.UnplugNIC(ctx, ct.GetName(), host); err != nil {
				return err
			}
		}
	}
	for _, ifname := range oldInside {
		if !wantedInside[ifname] {
			if err := n.rt.UnplugNICInside(ctx, ct.GetName(), ifname); err != nil {
				return err
			}
		}
	}
	for _, nic := range want {
		if nic.Macvlan {
			if !n.rt.HasNICInside(ct.GetName(), nic.Name) {
				if err := n.rt.PlugNIC(ctx, ct.GetName(), nic); err != nil {
					return err
				}
			}
			continue
		}
		if !n.rt.HasNIC(nic.HostName) {
			if err := n.rt.PlugNIC(ctx, ct.GetName(), nic); err != nil {
				return err
			}
			n.kickNetworks()
		}
	}
	n.appliedNICs.Store(ct.GetName(), key)
	return nil
}

// runtimeLimits converts parsed limits; LXD's disk priority 0..10 becomes
// the runtime's 1..10 (0 there means "leave the weight alone").
func runtimeLimits(l config.Limits) runtime.Limits {
	prio := 0
	if l.DiskPriority >= 0 {
		prio = max(l.DiskPriority, 1)
	}
	return runtime.Limits{
		CPUSet: l.CPUSet, CPUQuotaUs: l.CPUQuotaUs, CPUPeriodUs: l.CPUPeriodUs,
		MemoryBytes: l.MemoryBytes, Processes: l.Processes, DiskPriority: prio,
	}
}

// applyLimits applies changed limits to a running container.
func (n *Node) applyLimits(ctx context.Context, ct *shoalv1.Container) error {
	key := configKey(cluster.ExpandedConfig(ct))
	if prev, ok := n.applied.Load(ct.GetName()); ok && prev == key {
		return nil
	}
	lim, err := n.limits(ctx, ct)
	if err != nil {
		return err
	}
	if err := n.rt.SetLimits(ctx, ct.GetName(), lim); err != nil {
		return fmt.Errorf("apply limits to %s: %w", ct.GetName(), err)
	}
	n.applied.Store(ct.GetName(), key)
	n.kickCPUs()
	return nil
}

func configKey(cfg map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(cfg) {
		b.WriteString(strconv.Quote(k) + "=" + strconv.Quote(cfg[k]) + ";")
	}
	return b.String()
}

// RemoveStale removes what an interrupted operation left on this host under
// a container name the cluster has no record of (a volume from a copy that
// never committed, or from a delete cut short), so a new container of that
// name starts clean. It does nothing when the cluster knows the name.
func (n *Node) RemoveStale(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if _, err := n.fsm.Container(name); err == nil || !errors.Is(err, cluster.ErrNotFound) {
		return err
	}
	// What comes under the name now is an operation's of this daemon:
	// no sweep of leftovers takes it for one (leftovers.go).
	n.claimed.Store(name, true)
	if n.HasVolume(ctx, name) {
		n.log.Warn("removing leftovers of an interrupted operation", "container", name)
	}
	return n.removeLocal(ctx, name)
}

// removeLocal deletes a container the cluster no longer has from this host.
func (n *Node) removeLocal(ctx context.Context, name string) error {
	if n.renaming(name) {
		// A rename whose host part is unfinished: these objects are the
		// new name's (rename.go).
		n.log.Info("left for an unfinished rename", "container", name)
		return nil
	}
	n.stopProxies(name)
	// An address pinned when it moved here live is released with it.
	if mac := n.rt.HWAddr(name); mac != "" {
		if nw, err := n.defaultNetwork(); err == nil {
			if err := nw.RemoveStaticLease(ctx, mac); err != nil && !errors.Is(err, network.ErrNotFound) {
				n.log.Warn("unpin address", "container", name, "err", err)
			}
		}
	}
	if err := n.rt.Undefine(ctx, name); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := failpoint.Hit("delete-after-undefine"); err != nil {
		return err
	}
	n.applied.Delete(name)
	n.kickCPUs()
	if err := os.Remove(filepath.Join(n.restoresDir(), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: restore journal: %w", name, err)
	}
	if err := os.RemoveAll(filepath.Join(n.cfg.StateDir, "snapshot-state", name)); err != nil {
		return fmt.Errorf("remove %s: snapshot state: %w", name, err)
	}
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	for _, d := range n.pools {
		if err := d.DeleteVolume(ctx, volumeName(name)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("delete volume of %s: %w", name, err)
		}
	}
	return nil
}

// reportStatus records the observed status in the cluster when it changed,
// off the caller's path.
func (n *Node) reportStatus(ct *shoalv1.Container, rerr error) {
	status, msg := "", ""
	if rerr != nil {
		status, msg = "Error", rerr.Error()
	} else {
		st, err := n.rt.State(context.Background(), ct.GetName())
		if err != nil {
			return
		}
		status = statusName(st.Status)
	}
	// Compared with the record as it is now: progress reports ("Pulling")
	// may have changed it since the reconcile began.
	if cur, err := n.fsm.Container(ct.GetName()); err == nil && status == cur.GetStatus() && msg == cur.GetStatusMessage() {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := n.cl.Propose(ctx, &shoalv1.ContainerStatusCommand{Name: ct.GetName(), Node: n.cfg.Name, Status: status, Message: msg})
		if err != nil && !errors.Is(err, cluster.ErrNotFound) {
			n.log.Warn("report status", "container", ct.GetName(), "err", err)
		}
	}()
}

// statusName turns LXC's state names into LXD's (runtime.StatusRunning → "Running").
func statusName(s string) string {
	if s == "" {
		return ""
	}
	return s[:1] + strings.ToLower(s[1:])
}
