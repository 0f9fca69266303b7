package runtime

import (
	"context"
	"errors"
	"fmt"
	"github.com/vishvananda/netlink"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	lxc "github.com/lxc/go-lxc"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/node/idmap"
	"github.com/shoal-dev/shoal/node/images"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound: no such container, or no such file in its rootfs.
	ErrNotFound = errors.New("runtime: not found")
	// ErrNotRunning: the operation needs a running container.
	ErrNotRunning = errors.New("runtime: container not running")
	// ErrPathEscape: a file path, as written, climbs above the container's
	// "/" (symlinks never escape: they resolve inside the rootfs).
	ErrPathEscape = errors.New("runtime: path escapes the container rootfs")
	// ErrInvalid: a malformed spec, name or request.
	ErrInvalid = errors.New("runtime: invalid argument")
	// ErrRunning: the operation needs a stopped container.
	ErrRunning = errors.New("runtime: container is running")
	// ErrUnenforceable: the host cannot enforce a setting asked for (the
	// error is an *UnenforceableError naming the config key).
	ErrUnenforceable = errors.New("runtime: cannot be enforced on this host")
)

// Container status values reported by State.
const (
	StatusRunning = "RUNNING"
	StatusStopped = "STOPPED"
	StatusFrozen  = "FROZEN"
)

// Limits are a container's resource limits. A zero field means "no limit".
type Limits struct {
	// CPUSet pins the container to CPUs, in cpuset syntax ("0-1").
	CPUSet string
	// CPUQuotaUs and CPUPeriodUs are the CFS bandwidth (quota per period).
	CPUQuotaUs, CPUPeriodUs int64
	// MemoryBytes limits memory; swap is limited to the same (no swap).
	MemoryBytes int64
	// Processes limits the number of tasks (pids.max).
	Processes int64
	// DiskPriority is LXD's 1..10 scale, mapped to bfq weight 100..1000;
	// 0 leaves the weight alone. Where the host has no BFQ weights, Define
	// and SetLimits refuse it (ErrUnenforceable) rather than ignore it.
	DiskPriority int
}

// NIC is a network device of a container: a veth attached to a host
// bridge, or a macvlan on a host interface.
type NIC struct {
	// Name is the device name inside the container (eth0).
	Name string
	// Macvlan makes the NIC a macvlan (mode bridge) on the host interface
	// Bridge names, instead of a veth on the bridge Bridge names.
	Macvlan bool
	// Bridge is the host bridge the host end joins (for a macvlan, the
	// parent interface).
	Bridge string
	// HWAddr is the MAC address inside the container; empty lets LXC pick.
	HWAddr string
	// HostName is the host-side veth name; empty lets LXC pick.
	HostName string
	// MTU of both ends; 0 keeps the kernel's default (an overlay's bridge
	// needs its smaller MTU on every port).
	MTU int
}

// Spec is everything needed to render a container's LXC configuration.
type Spec struct {
	// Name identifies the container (letters, digits, '-', ≤ 63).
	Name string
	// Hostname defaults to Name.
	Hostname string
	// Rootfs is the host path of the root filesystem directory.
	Rootfs string
	// Privileged containers run without a user namespace.
	Privileged bool
	// IDMap maps container ids to host ids; ignored when Privileged.
	IDMap idmap.Map
	// Nesting allows containers inside the container.
	Nesting bool
	// Limits are the resource limits.
	Limits Limits
	// NICs are the network devices, in order (lxc.net.0, 1, ...).
	NICs []NIC
	// Autostart marks the container to start with the host.
	Autostart bool
	// Devices are its disk and unix devices.
	Devices Devices
	// App, for a container made from an OCI image, is the command it runs
	// under LXC's minimal init instead of /sbin/init (app.go). Define
	// reads it from the root filesystem (images.AppConfigPath) when nil.
	App *images.AppConfig
}

// State is a container's observed state.
type State struct {
	// Status is StatusRunning, StatusStopped or StatusFrozen (or another
	// LXC state name during transitions).
	Status string
	// PID is the host pid of the container's init (0 when stopped).
	PID int
	// MemoryBytes is the cgroup's memory usage.
	MemoryBytes int64
	// CPUNanos is the cgroup's consumed CPU time.
	CPUNanos int64
	// Processes is the number of tasks in the container.
	Processes int64
}

// Runtime manages the LXC containers of one lxcpath. It is safe for
// concurrent use.
type Runtime struct {
	lxcPath   string
	configDir string
	host      Host
	log       *slog.Logger

	mu    sync.Mutex
	cache map[string]*entry
}

// entry caches a go-lxc container handle with its configuration loaded.
type entry struct {
	c *lxc.Container
}

// New returns a Runtime keeping LXC state under lxcPath and container
// configurations under configDir (both are created). configDir must not be
// lxcPath.
func New(lxcPath, configDir string, log *slog.Logger) (*Runtime, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lxcPath, err := filepath.Abs(lxcPath)
	if err != nil {
		return nil, fmt.Errorf("runtime: lxcpath: %w", err)
	}
	configDir, err = filepath.Abs(configDir)
	if err != nil {
		return nil, fmt.Errorf("runtime: config dir: %w", err)
	}
	if lxcPath == configDir {
		return nil, fmt.Errorf("%w: config dir must differ from lxcpath", ErrInvalid)
	}
	for _, d := range []string{lxcPath, configDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime: create %s: %w", d, err)
		}
	}
	markInheritedCloexec()
	// Become a child subreaper so that the "[lxc monitor]" processes
	// liblxc double-forks from us are reparented to us, and reap them
	// (see reapMonitor): a pid 1 that reaps late (as on these VMs) leaves
	// each exited monitor a zombie holding its lxc.monitor.<name> cgroups.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become child subreaper", "component", "runtime", "err", err)
	}
	r := &Runtime{
		lxcPath:   lxcPath,
		configDir: configDir,
		host:      DetectHost(),
		log:       log.With("component", "runtime"),
		cache:     map[string]*entry{},
	}
	r.log.Debug("host detected", "cgroup_v2", r.host.CgroupV2, "memsw", r.host.Memsw,
		"bfq", r.host.BFQWeight, "io_schedulers", r.host.IOSchedulers, "apparmor", r.host.AppArmor)
	for k, why := range r.host.Unenforceable() {
		r.log.Info("config key refused on this host", "key", k, "reason", why)
	}
	return r, nil
}

// Host returns what the runtime detected about the host.
func (r *Runtime) Host() Host { return r.host }

// LXCPath returns the lxcpath.
func (r *Runtime) LXCPath() string { return r.lxcPath }

// ConfigPath returns the path of name's LXC configuration file.
func (r *Runtime) ConfigPath(name string) string {
	return filepath.Join(r.configDir, name+".conf")
}

// Define writes the container's LXC configuration (atomically) and creates
// its state directory. Redefining a running container changes its
// configuration for the next start only.
func (r *Runtime) Define(ctx context.Context, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := r.host.checkLimits(spec.Limits); err != nil {
		return fmt.Errorf("runtime: define %s: %w", spec.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(r.lxcPath, spec.Name), 0o711); err != nil {
		return fmt.Errorf("runtime: define %s: %w", spec.Name, err)
	}
	if err := spec.Devices.validate(); err != nil {
		return err
	}
	if err := loadApp(&spec); err != nil {
		return err
	}
	devs, err := r.deviceConfig(spec, r.devicesDir(spec.Name))
	if err != nil {
		return fmt.Errorf("runtime: define %s: %w", spec.Name, err)
	}
	conf := GenerateConfig(spec, r.host, r.lxcPath)
	if len(devs) > 0 {
		conf += "# devices\n" + strings.Join(devs, "\n") + "\n"
	}
	if err := writeDevices(r.definedPath(spec.Name), spec.Devices); err != nil {
		return fmt.Errorf("runtime: define %s: %w", spec.Name, err)
	}
	if err := writeFileAtomic(r.ConfigPath(spec.Name), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("runtime: define %s: %w", spec.Name, err)
	}
	// Later calls load the new file. The old handle is dropped, not
	// released: a concurrent call may still use it, and go-lxc handles
	// have no finalizer, so redefining a loaded container leaks one small
	// C struct (rare: the config of a running container seldom changes).
	r.mu.Lock()
	delete(r.cache, spec.Name)
	r.mu.Unlock()
	r.log.Info("defined", "container", spec.Name, "privileged", spec.Privileged, "application", spec.App != nil)
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Undefine force-stops the container if it runs, then removes its
// configuration and state directory. Undefining an unknown container
// returns ErrNotFound. It releases the container's liblxc handle, so it
// must not run concurrently with other calls on the same container.
func (r *Runtime) Undefine(ctx context.Context, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	}
	c, err := r.container(name)
	if err != nil {
		return err
	}
	// This container's own monitor cgroups (another container of the
	// same name, on another simulated host sharing this cgroupfs, has
	// its own: never wait for those).
	var monitor []string
	if c.State() != lxc.STOPPED {
		if !r.host.CgroupV2 {
			monitor = monitorCgroupsOf(c.InitPid())
		}
		if err := r.Stop(ctx, name, 0); err != nil && !errors.Is(err, ErrNotRunning) {
			return fmt.Errorf("runtime: undefine %s: %w", name, err)
		}
	}
	// Staged disk sources are unmounted first: removing the directory
	// through a mount would delete the host's files.
	if err := r.unstageMounts(name); err != nil {
		return fmt.Errorf("runtime: undefine %s: %w", name, err)
	}
	r.mu.Lock()
	delete(r.cache, name)
	r.mu.Unlock()
	lxc.Release(c)
	if err := os.Remove(r.ConfigPath(name)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("runtime: undefine %s: %w", name, err)
	}
	if err := os.RemoveAll(filepath.Join(r.lxcPath, name)); err != nil {
		return fmt.Errorf("runtime: undefine %s: %w", name, err)
	}
	if !r.host.CgroupV2 {
		if err := removeCgroupDirs(monitor, 2*time.Second); err != nil {
			return fmt.Errorf("runtime: undefine %s: %w", name, err)
		}
		if err := removeMonitorCgroups(name); err != nil {
			r.log.Debug("monitor cgroups of that name still in use", "container", name, "err", err)
		}
	}
	r.log.Info("undefined", "container", name)
	return nil
}

// HWAddr returns the MAC address of the container's first NIC as its
// configuration sets it ("" when undefined or unset).
func (r *Runtime) HWAddr(name string) string {
	c, err := r.container(name)
	if err != nil {
		return ""
	}
	if v := c.ConfigItem("lxc.net.0.hwaddr"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Disconnect deletes the host ends of a container's veth NICs, so that
// nothing its network stack still sends — a FIN or RST as its sockets
// close when it is killed — reaches anyone. A copy that is not the
// container any more (the source of a live move, whose sockets CRIU left
// live again after the dump) is disconnected before it is destroyed.
func (r *Runtime) Disconnect(ctx context.Context, name string) error {
	c, err := r.container(name)
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		p := fmt.Sprintf("lxc.net.%d.", i)
		typ := c.ConfigItem(p + "type")
		if len(typ) == 0 || typ[0] == "" {
			return nil
		}
		pair := c.ConfigItem(p + "veth.pair")
		if typ[0] != "veth" || len(pair) == 0 || pair[0] == "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if l, err := netlink.LinkByName(pair[0]); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("runtime: disconnect %s: remove %s: %w", name, pair[0], err)
			}
		}
	}
}

// List returns the names of defined containers, sorted.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(r.configDir)
	if err != nil {
		return nil, fmt.Errorf("runtime: list: %w", err)
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".conf")
		if ok && e.Type().IsRegular() && ValidName(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// container returns the cached go-lxc handle of name, loading its config
// on first use; ErrNotFound when it is not defined.
func (r *Runtime) container(name string) (*lxc.Container, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: name %q", ErrInvalid, name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.cache[name]; ok {
		return e.c, nil
	}
	path := r.ConfigPath(name)
	if _, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: container %s", ErrNotFound, name)
		}
		return nil, fmt.Errorf("runtime: %s: %w", name, err)
	}
	c, err := lxc.NewContainer(name, r.lxcPath)
	if err != nil {
		return nil, fmt.Errorf("runtime: open %s: %w", name, err)
	}
	if err := c.LoadConfigFile(path); err != nil {
		return nil, fmt.Errorf("runtime: load config of %s: %w", name, err)
	}
	r.cache[name] = &entry{c: c}
	return c, nil
}

// waitState polls until c reaches one of states or ctx/timeout ends.
func waitState(ctx context.Context, c *lxc.Container, timeout time.Duration, states ...lxc.State) bool {
	deadline := time.Now().Add(timeout)
	delay := 200 * time.Microsecond
	for {
		s := c.State()
		for _, want := range states {
			if s == want {
				return true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(delay)
		if delay < 2*time.Millisecond {
			delay *= 2
		}
	}
}
