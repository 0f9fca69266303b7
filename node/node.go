package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/overlay"
	"github.com/shoal-dev/shoal/node/idmap"
	"github.com/shoal-dev/shoal/node/images"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Config configures the host side of a node.
type Config struct {
	// Name is the node's name in the cluster.
	Name string
	// StateDir holds everything the node keeps: LXC configs and logs, images,
	// pool loop files, network state.
	StateDir string
	// DefaultPool is the pool created at first start when the cluster has none.
	DefaultPool PoolConfig
	// Bridge is the default managed network created at first start.
	Bridge string
	// BridgeCIDR is the bridge's address ("auto" picks a free /24).
	BridgeCIDR string
	// ImageCacheDir caches slow image builds (debootstrap) across runs.
	ImageCacheDir string
	// Address, RaftAddress and GossipAddress are where other members reach
	// this node (empty for a node without --listen).
	Address, RaftAddress, GossipAddress string
	// Labels are matched by scheduler constraints.
	Labels map[string]string
	// FetchImage copies an image tarball this node lacks from a member that
	// holds it (nil: images are only local).
	FetchImage func(ctx context.Context, fingerprint string, w io.Writer) error
	Logger     *slog.Logger
}

// PoolConfig describes a storage pool to create.
type PoolConfig struct {
	Name   string
	Driver string // "btrfs" or "dir"
	// Source is an existing btrfs mount or directory; empty means a loop
	// file (btrfs) or a directory (dir) under the state dir.
	Source string
	Size   int64
}

// Events receives the lifecycle events the node's work causes
// ("container-started"); the API's event bus is one.
type Events interface {
	Lifecycle(node, action, resource string)
}

// Node is the local host's side of the cluster.
type Node struct {
	// fenced: cut off from a Raft quorum past the fence lease (SetFenced).
	fenced atomic.Bool
	// replicaMu guards unneededCustom: custom volume replicas the last
	// sweep found no record needing (sweepCustomReplicas).
	replicaMu      sync.Mutex
	unneededCustom map[string]bool
	cfg            Config
	log            *slog.Logger
	baseLog        *slog.Logger
	cl             *cluster.Cluster
	fsm            *cluster.FSM
	rt             *runtime.Runtime
	images         *images.Store
	idmap          idmap.Map
	bus            Events

	poolsMu sync.RWMutex
	pools   map[string]storage.Driver

	netMu sync.RWMutex
	nets  map[string]*network.Network
	ovls  map[string]*overlay.Overlay // the overlay networks' data planes
	// macvlans are the macvlan networks available here, with this
	// member's parent interface.
	macvlans map[string]string
	// netKick asks the network reconciler to run (capacity 1: kicks that
	// arrive while it runs fold into one more pass).
	netKick chan struct{}
	// cpuKick asks the CPU balancer to run (cpuset.go; capacity 1).
	cpuKick chan struct{}

	locks keyedMutex
	// hints carries per-container stop options from an API call to whichever
	// reconcile acts on the change first.
	hintMu sync.Mutex
	hints  map[string]time.Duration
	// applied remembers the config last applied to each running container.
	applied sync.Map
	// appliedNICs remembers the NICs last plugged into each running
	// container.
	appliedNICs sync.Map
	// appliedDevices remembers the disk and unix devices last applied to
	// each running container (their fmt.Sprint).
	appliedDevices sync.Map
	// proxies are the proxy devices this member runs (proxy.go).
	proxies proxies
	// incoming marks containers restored here by a live move not yet
	// committed (name → true): resync leaves them alone.
	incoming sync.Map
	// outgoing marks containers a live move holds frozen on this node
	// (name → true): reconciles leave them alone.
	outgoing sync.Map
	// criuOnce probes CRIU once; criuErr is the verdict.
	criuOnce   sync.Once
	criuErr    error
	uffd       bool // userfaultfd non-cooperative mode (lazy pages)
	dirtyTrack bool // memory dirty tracking (pre-copy)

	// claimed are the names this daemon cleared for an operation of its
	// own (RemoveStale): not leftovers, whatever the start found.
	claimed sync.Map
	// staleSeen are the volumes of containers other members own that the
	// last resync found here without a definition (sweepStaleVolumes;
	// only the reconciler's goroutine touches it).
	staleSeen map[string]bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// New prepares the node: it opens or creates its pools, networks, image store
// and LXC runtime, records the node and defaults in the cluster, and
// re-attaches to containers that kept running while the daemon was down.
func New(ctx context.Context, cfg Config, cl *cluster.Cluster, bus Events) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{
		cfg: cfg, log: log.With("component", "node"), baseLog: log, cl: cl, fsm: cl.FSM(), bus: bus,
		pools: map[string]storage.Driver{}, nets: map[string]*network.Network{},
		ovls: map[string]*overlay.Overlay{}, macvlans: map[string]string{}, netKick: make(chan struct{}, 1), cpuKick: make(chan struct{}, 1),
		hints: map[string]time.Duration{}, stop: make(chan struct{}),
	}
	// HA containers start only once this member knows it still owns them
	// (cluster/ha's Fencer lifts this when the leader's state is here).
	n.fenced.Store(true)
	for _, d := range []string{"lxc", "lxc-config", "images", "networks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o711); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	var err error
	if n.idmap, err = idmap.FromSubID("root"); err != nil {
		return nil, fmt.Errorf("read root's subordinate ids: %w", err)
	}
	if n.rt, err = runtime.New(filepath.Join(cfg.StateDir, "lxc"), filepath.Join(cfg.StateDir, "lxc-config"), log); err != nil {
		return nil, err
	}
	if n.images, err = images.Open(filepath.Join(cfg.StateDir, "images")); err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	if err := n.recordNode(ctx); err != nil {
		return nil, err
	}
	if err := n.openPools(ctx); err != nil {
		return nil, err
	}
	if err := n.openNetworks(ctx); err != nil {
		n.closePools()
		return nil, err
	}
	return n, nil
}

// recordNode records this node's addresses, capacity, labels and the config
// keys its host cannot enforce in the cluster; an evacuated node stays
// evacuated.
func (n *Node) recordNode(ctx context.Context) error {
	rec := &shoalv1.Node{
		Name: n.cfg.Name, Address: n.cfg.Address, RaftAddress: n.cfg.RaftAddress, GossipAddress: n.cfg.GossipAddress,
		CpuMillis: int64(goruntime.NumCPU()) * 1000, MemoryBytes: config.HostMemory(), Labels: n.cfg.Labels, Status: "online",
		UnenforceableKeys: n.rt.Host().Unenforceable(),
	}
	// This member's FSM may not have caught up with its evacuation yet:
	// the entry keeps the cluster's status then.
	if err := n.cl.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: rec, KeepEvacuated: true}); err != nil {
		return fmt.Errorf("record node: %w", err)
	}
	return nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Address is where other members reach this node's gRPC API (host:port;
// empty without --listen).
func (n *Node) Address() string { return n.cfg.Address }

// Run starts the reconciler: it resyncs every container this node owns now
// and every interval, and reacts to FSM changes as they are applied.
func (n *Node) Run(ctx context.Context) {
	changes := n.fsm.Subscribe()
	n.sweepCheckpoints()
	left := n.findLeftovers(ctx)
	n.resync(ctx)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.runLeftovers(ctx, left)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.runNetworks(ctx)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.runCPUs(ctx)
	}()
	n.kickCPUs()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				n.resync(ctx)
				n.kickNetworks()
				n.kickCPUs()
			case c := <-changes:
				switch c.Kind {
				case "container", "node", "network", "resync":
					n.kickNetworks()
				}
				switch c.Kind {
				case "container":
					name := c.Name
					// The owner acts on every change, whichever member took
					// the call (API calls on the owner also reconcile
					// synchronously; the per-container lock serialises both).
					time.AfterFunc(20*time.Millisecond, func() {
						if err := n.Reconcile(ctx, name); err != nil {
							n.log.Warn("reconcile", "container", name, "err", err)
						}
					})
				case "profile":
					// Its users follow the change (live where the key allows).
					for _, ct := range n.fsm.Containers() {
						if ct.GetNode() == n.cfg.Name && slices.Contains(ct.GetProfiles(), c.Name) {
							name := ct.GetName()
							time.AfterFunc(20*time.Millisecond, func() {
								if err := n.Reconcile(ctx, name); err != nil {
									n.log.Warn("reconcile", "container", name, "err", err)
								}
							})
						}
					}
				case "resync":
					n.resync(ctx)
				}
			}
		}
	}()
}

// Close stops the reconciler and supervisors. Containers keep running.
func (n *Node) Close() {
	close(n.stop)
	n.wg.Wait()
	n.netMu.Lock()
	for _, nw := range n.nets {
		nw.Close()
	}
	n.netMu.Unlock()
	// Pools stay mounted: running containers' rootfs live on them.
}

func (n *Node) closePools() {
	n.poolsMu.Lock()
	defer n.poolsMu.Unlock()
	for _, d := range n.pools {
		d.Close()
	}
}

// Pool returns the driver of a pool ("" means the default pool).
func (n *Node) Pool(name string) (storage.Driver, error) { return n.pool(name) }

// pool returns the driver of a pool ("" means the default pool).
func (n *Node) pool(name string) (storage.Driver, error) {
	if name == "" {
		name = n.cfg.DefaultPool.Name
	}
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	d, ok := n.pools[name]
	if !ok {
		return nil, fmt.Errorf("storage pool %q: %w", name, storage.ErrNotFound)
	}
	return d, nil
}

// keyedMutex serialises work per key (per container, per image).
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (k *keyedMutex) get(key string) *sync.Mutex {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]*sync.Mutex{}
	}
	l, ok := k.m[key]
	if !ok {
		l = &sync.Mutex{}
		k.m[key] = l
	}
	return l
}

func (k *keyedMutex) lock(key string) func() {
	l := k.get(key)
	l.Lock()
	return l.Unlock
}

// tryLock takes the lock only if nobody holds it.
func (k *keyedMutex) tryLock(key string) (func(), bool) {
	l := k.get(key)
	if !l.TryLock() {
		return nil, false
	}
	return l.Unlock, true
}

// Errors callers branch on.
var (
	// ErrNotFound marks a missing host object (network, container on this host).
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a request that the object's current state forbids.
	ErrConflict = errors.New("conflict")
	// ErrInvalidDevice marks a device this host cannot give a container
	// (a parent interface it lacks, an MTU above its network's).
	ErrInvalidDevice = errors.New("invalid device")
)
