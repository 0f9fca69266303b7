package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Paths of LXC's shipped configuration.
const (
	lxcConfigDir   = "/usr/share/lxc/config"
	commonConf     = lxcConfigDir + "/common.conf"
	usernsConf     = lxcConfigDir + "/userns.conf"
	nestingConf    = lxcConfigDir + "/nesting.conf"
	commonSeccomp  = lxcConfigDir + "/common.seccomp"
	cgroupV1Root   = "/sys/fs/cgroup"
	apparmorSysDir = "/sys/kernel/security/apparmor"
)

// Host describes what the host offers; it decides which keys the generated
// configuration uses. DetectHost fills it at start-up.
type Host struct {
	// CgroupV2 is true on a pure cgroup v2 host (lxc.cgroup2.* keys).
	CgroupV2 bool
	// Memsw is true when the v1 memory controller accounts swap
	// (memory.memsw.limit_in_bytes exists).
	Memsw bool
	// BFQWeight is true when blkio.bfq.weight (v1) or io.bfq.weight (v2)
	// is available to container cgroups.
	BFQWeight bool
	// IOSchedulers lists, space-separated in the order first seen, the
	// I/O schedulers the host's block devices offer ("none mq-deadline
	// kyber"); it explains a missing BFQWeight.
	IOSchedulers string
	// AppArmor is true when the kernel has AppArmor enabled.
	AppArmor bool
	// NestingConf is true when LXC's nesting.conf exists.
	NestingConf bool
}

// DetectHost inspects /sys and LXC's config directory.
func DetectHost() Host {
	var h Host
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory")); err != nil {
		if _, err := os.Stat(filepath.Join(cgroupV1Root, "cgroup.controllers")); err == nil {
			h.CgroupV2 = true
		}
	}
	if h.CgroupV2 {
		h.BFQWeight = fileExists(filepath.Join(cgroupV1Root, "io.bfq.weight")) ||
			fileExists(filepath.Join(cgroupV1Root, "io.stat")) && bfqLoaded()
	} else {
		h.Memsw = fileExists(filepath.Join(cgroupV1Root, "memory", "memory.memsw.limit_in_bytes"))
		// The root blkio cgroup has no weight file; the bfq statistics
		// files show that the bfq policy (and thus child weights) exist.
		h.BFQWeight = fileExists(filepath.Join(cgroupV1Root, "blkio", "blkio.bfq.weight")) ||
			fileExists(filepath.Join(cgroupV1Root, "blkio", "blkio.bfq.io_service_bytes"))
	}
	h.AppArmor = fileExists(apparmorSysDir)
	h.NestingConf = fileExists(nestingConf)
	h.IOSchedulers = ioSchedulers()
	return h
}

// bfqLoaded reports whether any block device offers the bfq scheduler.
func bfqLoaded() bool { return hasWord(ioSchedulers(), "bfq") }

// ioSchedulers returns the I/O schedulers the block devices offer
// (/sys/block/*/queue/scheduler, the active one's brackets removed), each
// once, space-separated in the order first seen.
func ioSchedulers() string {
	m, _ := filepath.Glob("/sys/block/*/queue/scheduler")
	var out []string
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			f = strings.Trim(f, "[]")
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return strings.Join(out, " ")
}

func hasWord(list, w string) bool { return slices.Contains(strings.Fields(list), w) }

// hostKeys are the container config keys whose enforcement depends on the
// host; every other key works wherever the runtime does.
var hostKeys = []string{"limits.disk.priority"}

// CanEnforce says whether this host can enforce the container config key
// (as users write it: limits.disk.priority). It returns nil when it can,
// or for a key whose enforcement does not depend on the host, and
// otherwise an *UnenforceableError (wrapping ErrUnenforceable) whose
// message is one line naming the key and why.
func (h Host) CanEnforce(key string) error {
	var why string
	switch key {
	case "limits.disk.priority":
		why = h.ioWeightGap()
	}
	if why == "" {
		return nil
	}
	return &UnenforceableError{Key: key, Reason: why}
}

// Unenforceable lists the config keys this host cannot enforce, each with
// its reason (CanEnforce's, without the key), for the cluster to record.
func (h Host) Unenforceable() map[string]string {
	out := map[string]string{}
	for _, k := range hostKeys {
		var ue *UnenforceableError
		if errors.As(h.CanEnforce(k), &ue) {
			out[k] = ue.Reason
		}
	}
	return out
}

// ioWeightGap says why the host cannot weigh containers' I/O ("" when it
// can). Weights need the BFQ scheduler (CFQ, the other weighted one, left
// the kernel in 5.0) and its cgroup files.
func (h Host) ioWeightGap() string {
	const cannot = "this host cannot enforce I/O weights "
	switch {
	case h.BFQWeight:
		return ""
	case h.IOSchedulers == "":
		return cannot + "(no BFQ scheduler: no block device offers an I/O scheduler)"
	case !hasWord(h.IOSchedulers, "bfq"):
		return cannot + "(no BFQ scheduler on its block devices; offered: " + h.IOSchedulers + ")"
	case h.CgroupV2:
		return cannot + "(BFQ is offered, but the cgroup v2 io controller gives containers no io.bfq.weight)"
	default:
		return cannot + "(BFQ is offered, but the blkio controller has no bfq weight files)"
	}
}

// UnenforceableError reports a config key this host cannot enforce.
type UnenforceableError struct {
	Key    string // the config key, as users write it
	Reason string // one line, starting "this host cannot"
}

// Error returns "key: reason".
func (e *UnenforceableError) Error() string { return e.Key + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrUnenforceable) true.
func (e *UnenforceableError) Unwrap() error { return ErrUnenforceable }

// checkLimits refuses limits this host would have to ignore.
func (h Host) checkLimits(l Limits) error {
	if l.DiskPriority > 0 {
		return h.CanEnforce("limits.disk.priority")
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$`)

// ValidName reports whether name is usable as a container name (and so as a
// file name and hostname): letters, digits and '-', at most 63 characters.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks a Spec for things that would render a broken config.
func (s Spec) Validate() error {
	if !ValidName(s.Name) {
		return fmt.Errorf("%w: name %q", ErrInvalid, s.Name)
	}
	if s.Hostname != "" && !ValidName(s.Hostname) {
		return fmt.Errorf("%w: hostname %q", ErrInvalid, s.Hostname)
	}
	if !filepath.IsAbs(s.Rootfs) {
		return fmt.Errorf("%w: rootfs %q is not absolute", ErrInvalid, s.Rootfs)
	}
	if !s.Privileged && s.IDMap.IsZero() {
		return fmt.Errorf("%w: unprivileged container needs an idmap", ErrInvalid)
	}
	if s.Limits.DiskPriority < 0 || s.Limits.DiskPriority > 10 {
		return fmt.Errorf("%w: disk priority %d not in 0..10", ErrInvalid, s.Limits.DiskPriority)
	}
	for _, v := range []string{s.Rootfs, s.Limits.CPUSet} {
		if strings.ContainsAny(v, "\n\r") {
			return fmt.Errorf("%w: newline in value %q", ErrInvalid, v)
		}
	}
	for i, n := range s.NICs {
		for _, v := range []string{n.Name, n.Bridge, n.HWAddr, n.HostName} {
			if strings.ContainsAny(v, "\n\r \t") {
				return fmt.Errorf("%w: nic %d: bad value %q", ErrInvalid, i, v)
			}
		}
		if n.Name == "" || n.Bridge == "" {
			return fmt.Errorf("%w: nic %d needs a name and a bridge (or a macvlan parent)", ErrInvalid, i)
		}
	}
	return nil
}

// GenerateConfig renders the LXC configuration of spec for a host h, with
// LXC state under lxcPath. The output is deterministic.
//
// Choices: LXC's common.conf is included (plus userns.conf when
// unprivileged), then lxcfs's hooks are cleared (their post-stop hook makes
// every stop slow) and the automatic mounts are reset to
// proc:mixed sys:mixed cgroup:mixed (userns.conf's sys:rw breaks
// systemd-networkd). No lxc.apparmor.* key is written unless the host has
// AppArmor; there the profile is "generated" (LXC's own generated profile)
// with nesting allowed when asked. The container has no ttys and no console
// (checkpointable by CRIU): lxc.console.path = none, so the console log file
// stays empty for now; init's output is not captured.
func GenerateConfig(spec Spec, h Host, lxcPath string) string {
	var b strings.Builder
	w := func(key, val string) { fmt.Fprintf(&b, "%s = %s\n", key, val) }
	line := func(s string) { b.WriteString(s + "\n") }
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.Name
	}
	line("# Generated by Shoal; do not edit.")
	w("lxc.include", commonConf)
	if !spec.Privileged {
		w("lxc.include", usernsConf)
		for _, l := range spec.IDMap.LXCConfig() {
			line(l)
		}
	}
	line("lxc.hook.mount =")
	line("lxc.hook.post-stop =")
	line("lxc.mount.auto =")
	w("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed")
	if spec.Nesting {
		if h.AppArmor && h.NestingConf {
			w("lxc.include", nestingConf)
		} else {
			// nesting.conf's mounts without its AppArmor profile.
			w("lxc.mount.entry", "proc dev/.lxc/proc proc create=dir,optional 0 0")
			w("lxc.mount.entry", "sys dev/.lxc/sys sysfs create=dir,optional 0 0")
		}
	}
	if h.AppArmor {
		// After nesting.conf, whose fixed profile this overrides.
		w("lxc.apparmor.profile", "generated")
		if spec.Nesting {
			w("lxc.apparmor.allow_nesting", "1")
		}
	}
	w("lxc.seccomp.profile", commonSeccomp)
	w("lxc.tty.max", "0")
	w("lxc.pty.max", "1024")
	w("lxc.console.path", "none")
	w("lxc.console.logfile", filepath.Join(lxcPath, spec.Name, "console.log"))
	w("lxc.log.file", filepath.Join(lxcPath, spec.Name, "lxc.log"))
	w("lxc.log.level", "WARN")
	w("lxc.rootfs.path", "dir:"+spec.Rootfs)
	w("lxc.uts.name", hostname)
	if spec.App != nil {
		for _, kv := range appItems(spec.App) {
			w(kv[0], kv[1])
		}
	}
	for i, n := range spec.NICs {
		p := fmt.Sprintf("lxc.net.%d.", i)
		if n.Macvlan {
			w(p+"type", "macvlan")
			w(p+"macvlan.mode", "bridge")
			w(p+"link", n.Bridge)
			w(p+"flags", "up")
			w(p+"name", n.Name)
			if n.HWAddr != "" {
				w(p+"hwaddr", n.HWAddr)
			}
			if n.MTU > 0 {
				w(p+"mtu", strconv.Itoa(n.MTU))
			}
			continue
		}
		w(p+"type", "veth")
		w(p+"link", n.Bridge)
		w(p+"flags", "up")
		w(p+"name", n.Name)
		if n.HWAddr != "" {
			w(p+"hwaddr", n.HWAddr)
		}
		if n.HostName != "" {
			w(p+"veth.pair", n.HostName)
		}
		if n.MTU > 0 {
			w(p+"mtu", strconv.Itoa(n.MTU))
		}
	}
	for _, kv := range limitItems(spec.Limits, h) {
		w(h.cgroupPrefix()+kv[0], kv[1])
	}
	autostart := "0"
	if spec.Autostart {
		autostart = "1"
	}
	w("lxc.start.auto", autostart)
	return b.String()
}

// cgroupPrefix is the config key prefix of cgroup items on h.
func (h Host) cgroupPrefix() string {
	if h.CgroupV2 {
		return "lxc.cgroup2."
	}
	return "lxc.cgroup."
}

// limitItems returns the cgroup (file, value) pairs of l on h, in the order
// they may be applied to a fresh cgroup. Zero fields are left out.
func limitItems(l Limits, h Host) [][2]string {
	var out [][2]string
	add := func(k string, v int64) { out = append(out, [2]string{k, strconv.FormatInt(v, 10)}) }
	if h.CgroupV2 {
		if l.CPUSet != "" {
			out = append(out, [2]string{"cpuset.cpus", l.CPUSet})
		}
		if l.CPUQuotaUs > 0 {
			period := l.CPUPeriodUs
			if period <= 0 {
				period = 100000
			}
			out = append(out, [2]string{"cpu.max", fmt.Sprintf("%d %d", l.CPUQuotaUs, period)})
		}
		if l.MemoryBytes > 0 {
			add("memory.max", l.MemoryBytes)
			add("memory.swap.max", 0)
		}
		if l.Processes > 0 {
			add("pids.max", l.Processes)
		}
		if l.DiskPriority > 0 && h.BFQWeight {
			add("io.bfq.weight", bfqWeight(l.DiskPriority))
		}
		return out
	}
	if l.CPUSet != "" {
		out = append(out, [2]string{"cpuset.cpus", l.CPUSet})
	}
	if l.CPUQuotaUs > 0 {
		if l.CPUPeriodUs > 0 {
			add("cpu.cfs_period_us", l.CPUPeriodUs)
		}
		add("cpu.cfs_quota_us", l.CPUQuotaUs)
	}
	if l.MemoryBytes > 0 {
		add("memory.limit_in_bytes", l.MemoryBytes)
		if h.Memsw {
			add("memory.memsw.limit_in_bytes", l.MemoryBytes)
		}
	}
	if l.Processes > 0 {
		add("pids.max", l.Processes)
	}
	if l.DiskPriority > 0 && h.BFQWeight {
		add("blkio.bfq.weight", bfqWeight(l.DiskPriority))
	}
	return out
}

// bfqWeight maps LXD's disk priority 1..10 to a bfq weight 100..1000.
func bfqWeight(p int) int64 { return int64(p) * 100 }
