package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Paths are the roots the collector reads under; tests point them at a
// fake tree.
type Paths struct {
	// Proc is procfs (/proc): PID/cgroup, PID/net/dev, meminfo.
	Proc string
	// Cgroup is where cgroups are mounted (/sys/fs/cgroup): the v1
	// controllers' hierarchies, or the unified one (also at unified/ on a
	// hybrid host).
	Cgroup string
	// Sys is sysfs (/sys): dev/block/MAJ:MIN names a block device.
	Sys string
}

// HostPaths are the host's own.
var HostPaths = Paths{Proc: "/proc", Cgroup: "/sys/fs/cgroup", Sys: "/sys"}

// usage is what one container's cgroup and network namespace say at one
// moment.
type usage struct {
	cpuUser, cpuSystem float64 // seconds
	effectiveCPUs      int
	// memory maps LXD's names (MemTotal, RSS, Active_anon, ...) to bytes.
	memory   map[string]float64
	oomKills float64
	hasOOM   bool
	procs    float64
	frozen   bool
	net      []netDev
	disk     map[string]*diskDev // by device name
}

type netDev struct {
	name string
	// rx/tx: bytes, packets, errs, drop
	rx, tx [4]float64
}

type diskDev struct {
	readBytes, writtenBytes, reads, writes float64
}

// cgroupsOf parses /proc/PID/cgroup: the v1 directories by controller,
// and the unified path ("" when none).
func (p Paths) cgroupsOf(pid int) (v1 map[string]string, unified string, err error) {
	b, err := os.ReadFile(filepath.Join(p.Proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return nil, "", err
	}
	v1 = map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" && !strings.HasPrefix(c, "name=") {
				// A co-mounted hierarchy ("cpu,cpuacct") is mounted under
				// its joined name.
				v1[c] = filepath.Join(p.Cgroup, parts[1], parts[2])
			}
		}
	}
	return v1, unified, nil
}

// unifiedRoot is where the v2 hierarchy is mounted: the cgroup root on a
// unified host, its unified/ on a hybrid one.
func (p Paths) unifiedRoot() string {
	if _, err := os.Stat(filepath.Join(p.Cgroup, "cgroup.controllers")); err == nil {
		return p.Cgroup
	}
	return filepath.Join(p.Cgroup, "unified")
}

// read gathers a container's usage from its init's cgroups: v1 where its
// memory controller is a v1 hierarchy (cgroup v1 or hybrid), else v2.
// hostMem is the host's MemTotal (the MemTotal of an unlimited container).
func (p Paths) read(pid int, hostMem float64, disks *diskNames) (*usage, error) {
	v1, unified, err := p.cgroupsOf(pid)
	if err != nil {
		return nil, err
	}
	var u *usage
	if _, ok := v1["memory"]; ok {
		u = readV1(v1, hostMem, disks)
	} else {
		if unified == "" {
			return nil, fmt.Errorf("pid %d: no memory cgroup", pid)
		}
		u = readV2(filepath.Join(p.unifiedRoot(), unified), hostMem, disks)
	}
	u.net, _ = readNetDev(filepath.Join(p.Proc, strconv.Itoa(pid), "net", "dev"))
	return u, nil
}

func readV1(dirs map[string]string, hostMem float64, disks *diskNames) *usage {
	u := &usage{memory: map[string]float64{}, disk: map[string]*diskDev{}}
	cpu := dirs["cpuacct"]
	if user, sys, ok := readUsageAll(cpu); ok {
		// One file for both modes (per CPU, summed): each read costs.
		u.cpuUser, u.cpuSystem = user/1e9, sys/1e9
	} else if us, ok := readInt(cpu, "cpuacct.usage_user"); ok {
		sys, _ := readInt(cpu, "cpuacct.usage_sys")
		u.cpuUser, u.cpuSystem = float64(us)/1e9, float64(sys)/1e9
	} else {
		// Older kernels: clock ticks (USER_HZ, 100 on Linux).
		st := readKeyed(cpu, "cpuacct.stat")
		u.cpuUser, u.cpuSystem = st["user"]/100, st["system"]/100
	}
	u.effectiveCPUs = countCPUs(readString(dirs["cpuset"], "cpuset.effective_cpus"))

	mem := dirs["memory"]
	st := readKeyed(mem, "memory.stat")
	for k, name := range v1MemoryNames {
		if v, ok := st[k]; ok {
			u.memory[name] = v
		}
	}
	used, _ := readInt(mem, "memory.usage_in_bytes")
	limit, ok := readInt(mem, "memory.limit_in_bytes")
	if !ok {
		limit = -1
	}
	if sw, ok := readInt(mem, "memory.memsw.usage_in_bytes"); ok {
		u.memory["Swap"] = float64(max(0, sw-used))
	}
	memoryTotals(u, float64(used), float64(limit), hostMem)
	if oc := readKeyed(mem, "memory.oom_control"); oc != nil {
		if v, ok := oc["oom_kill"]; ok {
			u.oomKills, u.hasOOM = v, true
		}
	}
	if n, ok := readInt(dirs["pids"], "pids.current"); ok {
		u.procs = float64(n)
	}
	u.frozen = readString(dirs["freezer"], "freezer.state") == "FROZEN"

	blk := dirs["blkio"]
	readBlkioV1(u, blk, "blkio.throttle.io_service_bytes_recursive", disks, func(d *diskDev, op string, v float64) {
		switch op {
		case "Read":
			d.readBytes += v
		case "Write":
			d.writtenBytes += v
		}
	})
	readBlkioV1(u, blk, "blkio.throttle.io_serviced_recursive", disks, func(d *diskDev, op string, v float64) {
		switch op {
		case "Read":
			d.reads += v
		case "Write":
			d.writes += v
		}
	})
	return u
}

// v1MemoryNames maps memory.stat keys (hierarchical totals) to LXD's names.
var v1MemoryNames = map[string]string{
	"total_active_anon":   "Active_anon",
	"total_active_file":   "Active_file",
	"total_inactive_anon": "Inactive_anon",
	"total_inactive_file": "Inactive_file",
	"total_cache":         "Cached",
	"total_rss":           "RSS",
	"total_shmem":         "Shmem",
	"total_dirty":         "Dirty",
	"total_writeback":     "Writeback",
	"total_mapped_file":   "Mapped",
	"total_unevictable":   "Unevictable",
}

// v2MemoryNames maps v2 memory.stat keys to LXD's names.
var v2MemoryNames = map[string]string{
	"active_anon":    "Active_anon",
	"active_file":    "Active_file",
	"inactive_anon":  "Inactive_anon",
	"inactive_file":  "Inactive_file",
	"file":           "Cached",
	"anon":           "RSS",
	"shmem":          "Shmem",
	"file_dirty":     "Dirty",
	"file_writeback": "Writeback",
	"file_mapped":    "Mapped",
	"unevictable":    "Unevictable",
}

// memoryTotals derives LXD's totals: MemTotal is the limit (the host's
// memory when there is none or it is larger), MemFree what the container
// has left of it, MemAvailable that plus its inactive file cache (what the
// kernel would reclaim first), Active and Inactive the LRU lists' sums.
func memoryTotals(u *usage, used, limit, hostMem float64) {
	total := hostMem
	if limit > 0 && (total <= 0 || limit < total) {
		total = limit
	}
	u.memory["MemTotal"] = total
	free := max(0, total-used)
	u.memory["MemFree"] = free
	u.memory["MemAvailable"] = min(total, free+u.memory["Inactive_file"])
	u.memory["Active"] = u.memory["Active_anon"] + u.memory["Active_file"]
	u.memory["Inactive"] = u.memory["Inactive_anon"] + u.memory["Inactive_file"]
}

func readV2(dir string, hostMem float64, disks *diskNames) *usage {
	u := &usage{memory: map[string]float64{}, disk: map[string]*diskDev{}}
	cpu := readKeyed(dir, "cpu.stat")
	u.cpuUser, u.cpuSystem = cpu["user_usec"]/1e6, cpu["system_usec"]/1e6
	u.effectiveCPUs = countCPUs(readString(dir, "cpuset.cpus.effective"))
	st := readKeyed(dir, "memory.stat")
	for k, name := range v2MemoryNames {
		if v, ok := st[k]; ok {
			u.memory[name] = v
		}
	}
	used, _ := readInt(dir, "memory.current")
	limit, ok := readInt(dir, "memory.max") // "max" does not parse: no limit
	if !ok {
		limit = -1
	}
	if sw, ok := readInt(dir, "memory.swap.current"); ok {
		u.memory["Swap"] = float64(sw)
	}
	memoryTotals(u, float64(used), float64(limit), hostMem)
	if ev := readKeyed(dir, "memory.events"); ev != nil {
		if v, ok := ev["oom_kill"]; ok {
			u.oomKills, u.hasOOM = v, true
		}
	}
	if n, ok := readInt(dir, "pids.current"); ok {
		u.procs = float64(n)
	}
	u.frozen = readString(dir, "cgroup.freeze") == "1"
	// io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"
	b, _ := os.ReadFile(filepath.Join(dir, "io.stat"))
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		d := u.device(disks.name(f[0]))
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "rbytes":
				d.readBytes += n
			case "wbytes":
				d.writtenBytes += n
			case "rios":
				d.reads += n
			case "wios":
				d.writes += n
			}
		}
	}
	return u
}

func (u *usage) device(name string) *diskDev {
	d, ok := u.disk[name]
	if !ok {
		d = &diskDev{}
		u.disk[name] = d
	}
	return d
}

// readUsageAll sums cpuacct.usage_all ("cpu user system" then one line of
// nanoseconds per CPU).
func readUsageAll(dir string) (user, sys float64, ok bool) {
	if dir == "" {
		return 0, 0, false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage_all"))
	if err != nil {
		return 0, 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "cpu user system" {
		return 0, 0, false
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		u, err1 := strconv.ParseFloat(f[1], 64)
		s, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false
		}
		user, sys = user+u, sys+s
	}
	return user, sys, true
}

// readBlkioV1 reads a v1 blkio file of "MAJ:MIN Op N" lines.
func readBlkioV1(u *usage, dir, file string, disks *diskNames, add func(*diskDev, string, float64)) {
	if dir == "" {
		return
	}
	b, _ := os.ReadFile(filepath.Join(dir, file))
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // "Total N"
		}
		n, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		add(u.device(disks.name(f[0])), f[1], n)
	}
}

// diskNames names block devices by MAJ:MIN through sysfs, once per scrape.
type diskNames struct {
	sys   string
	names map[string]string
}

func (d *diskNames) name(majmin string) string {
	if n, ok := d.names[majmin]; ok {
		return n
	}
	n := majmin
	if target, err := os.Readlink(filepath.Join(d.sys, "dev", "block", majmin)); err == nil {
		n = filepath.Base(target)
	}
	d.names[majmin] = n
	return n
}

// readNetDev parses /proc/PID/net/dev: the container's network namespace
// as its init sees it.
func readNetDev(path string) ([]netDev, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []netDev
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		f := strings.Fields(rest)
		if len(f) < 12 {
			continue
		}
		d := netDev{name: strings.TrimSpace(name)}
		for i := 0; i < 4; i++ {
			d.rx[i], _ = strconv.ParseFloat(f[i], 64)
			d.tx[i], _ = strconv.ParseFloat(f[8+i], 64)
		}
		out = append(out, d)
	}
	return out, nil
}

// hostMemTotal reads MemTotal from meminfo, in bytes (0 when unreadable).
func hostMemTotal(proc string) float64 {
	b, _ := os.ReadFile(filepath.Join(proc, "meminfo"))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

// countCPUs counts the CPUs of a cpuset list ("0-3,6").
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				continue
			}
		}
		n += b - a + 1
	}
	return n
}

func readString(dir, file string) string {
	if dir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(dir, file string) (int64, bool) {
	s := readString(dir, file)
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// readKeyed reads a "key value" per line file (memory.stat, cpu.stat);
// nil when unreadable.
func readKeyed(dir, file string) map[string]float64 {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[k] = n
		}
	}
	return out
}
