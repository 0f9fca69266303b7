package metrics

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Container is one container of this member, as the collector needs it.
type Container struct {
	Name string
	// PID is the host pid of its init; 0 when it is not running.
	PID int
}

// Member is this member's own figures at one moment.
type Member struct {
	// Leader: this member leads the Raft cluster.
	Leader bool
	// AppliedIndex is the last Raft index the FSM applied.
	AppliedIndex uint64
	// Raft are hashicorp/raft's Stats() ("term", "commit_index",
	// "last_log_index", ...); nil when the member does not expose them.
	Raft map[string]string
	// LastContact is how long ago this member last knew a quorum stood
	// behind it (0 on the leader).
	LastContact time.Duration
	// Gossip is false without gossip (a one-node member without --listen).
	Gossip                     bool
	GossipMembers, GossipAlive int
	// OperationsRunning counts this member's running operations.
	OperationsRunning int
}

// Source is what the collector needs of the member.
type Source interface {
	// Containers lists the containers this member owns, with their init
	// pids (0 for those not running).
	Containers(ctx context.Context) ([]Container, error)
	// Member returns the member's own figures.
	Member(ctx context.Context) Member
}

// Collector is a prometheus.Collector reading everything at scrape time.
type Collector struct {
	src   Source
	paths Paths
	// Timeout bounds one scrape's call to Source.Containers.
	timeout time.Duration

	cpu, cpuEffective, procs          *prometheus.Desc
	memory                            map[string]*prometheus.Desc
	oom                               *prometheus.Desc
	netRx, netTx                      [4]*prometheus.Desc
	diskRead, diskWritten             *prometheus.Desc
	diskReads, diskWrites             *prometheus.Desc
	containers                        *prometheus.Desc
	leader, applied, term, commit     *prometheus.Desc
	lastLog, lastContact              *prometheus.Desc
	gossipMembers, gossipAlive, opsUp *prometheus.Desc
	scrapeErrors                      *prometheus.Desc
}

// memoryNames are LXD's memory metrics the collector gives.
var memoryNames = []string{"Active", "Active_anon", "Active_file", "Cached", "Dirty", "Inactive", "Inactive_anon",
	"Inactive_file", "Mapped", "MemAvailable", "MemFree", "MemTotal", "RSS", "Shmem", "Swap", "Unevictable", "Writeback"}

var netNames = [4]string{"bytes", "packets", "errs", "drop"}

// New returns a collector over src reading the host's /proc and cgroups.
func New(src Source) *Collector { return NewAt(src, HostPaths) }

// NewAt returns a collector reading under paths (tests).
func NewAt(src Source, paths Paths) *Collector {
	ct := []string{"name", "type"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("shoal_"+name, help, append(append([]string{}, ct...), labels...), nil)
	}
	m := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("shoal_"+name, help, labels, nil)
	}
	c := &Collector{src: src, paths: paths, timeout: 10 * time.Second,
		cpu:           d("cpu_seconds_total", "CPU time the container used, by mode (user, system).", "mode"),
		cpuEffective:  d("cpu_effective_total", "CPUs the container may run on (its effective cpuset)."),
		procs:         d("procs_total", "Tasks in the container's cgroup."),
		memory:        map[string]*prometheus.Desc{},
		oom:           d("memory_OOM_kills_total", "Processes the OOM killer killed in the container."),
		diskRead:      d("disk_read_bytes_total", "Bytes the container read from a block device.", "device"),
		diskWritten:   d("disk_written_bytes_total", "Bytes the container wrote to a block device.", "device"),
		diskReads:     d("disk_reads_completed_total", "Reads the container completed on a block device.", "device"),
		diskWrites:    d("disk_writes_completed_total", "Writes the container completed on a block device.", "device"),
		containers:    m("containers", "This member's containers by state.", "state"),
		leader:        m("raft_leader", "1 when this member leads the Raft cluster."),
		applied:       m("raft_applied_index", "Last Raft index this member's FSM applied."),
		term:          m("raft_term", "Current Raft term as this member sees it."),
		commit:        m("raft_commit_index", "Highest Raft index this member knows committed."),
		lastLog:       m("raft_last_log_index", "Last index in this member's Raft log."),
		lastContact:   m("raft_last_contact_seconds", "Time since this member last knew a quorum behind it (0 on the leader)."),
		gossipMembers: m("gossip_members", "Members gossip knows of, this one included, dead or alive."),
		gossipAlive:   m("gossip_members_alive", "Members gossip sees alive, this one included."),
		opsUp:         m("operations_running", "This member's operations still running."),
		scrapeErrors:  m("scrape_errors", "Containers whose usage could not be read in this scrape (they stopped meanwhile, or their cgroup is unreadable)."),
	}
	for _, n := range memoryNames {
		c.memory[n] = d("memory_"+n+"_bytes", "Memory "+n+" of the container (LXD's lxd_memory_"+n+"_bytes).")
	}
	for i, n := range netNames {
		c.netRx[i] = d("network_receive_"+n+"_total", "Network "+n+" received on a device of the container.", "device")
		c.netTx[i] = d("network_transmit_"+n+"_total", "Network "+n+" transmitted on a device of the container.", "device")
	}
	return c
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.cpuEffective, c.procs, c.oom, c.diskRead, c.diskWritten, c.diskReads,
		c.diskWrites, c.containers, c.leader, c.applied, c.term, c.commit, c.lastLog, c.lastContact,
		c.gossipMembers, c.gossipAlive, c.opsUp, c.scrapeErrors} {
		ch <- d
	}
	for _, d := range c.memory {
		ch <- d
	}
	for i := range c.netRx {
		ch <- c.netRx[i]
		ch <- c.netTx[i]
	}
}

// readers bounds the goroutines reading containers' files in one scrape.
const readers = 4

// Collect reads every running container's usage and the member's figures.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cts, err := c.src.Containers(ctx)
	failed := 0
	if err != nil {
		failed = -1 // the list itself failed
	}
	hostMem := hostMemTotal(c.paths.Proc)
	disks := make([]*diskNames, readers)
	for i := range disks {
		disks[i] = &diskNames{sys: c.paths.Sys, names: map[string]string{}}
	}
	usages := make([]*usage, len(cts))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(readers, len(cts)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if u, err := c.paths.read(cts[i].PID, hostMem, disks[w]); err == nil {
					usages[i] = u
				}
			}
		}()
	}
	for i, ct := range cts {
		if ct.PID > 0 {
			next <- i
		}
	}
	close(next)
	wg.Wait()

	states := map[string]int{"running": 0, "frozen": 0, "stopped": 0}
	for i, ct := range cts {
		u := usages[i]
		switch {
		case ct.PID <= 0:
			states["stopped"]++
			continue
		case u == nil:
			if failed >= 0 {
				failed++
			}
			// It stopped between the list and the read, or its cgroup is
			// unreadable: counted as running, no usage.
			states["running"]++
			continue
		case u.frozen:
			states["frozen"]++
		default:
			states["running"]++
		}
		c.emit(ch, ct.Name, u)
	}
	for _, s := range []string{"running", "frozen", "stopped"} {
		ch <- prometheus.MustNewConstMetric(c.containers, prometheus.GaugeValue, float64(states[s]), s)
	}
	if failed >= 0 {
		ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, float64(failed))
	} else {
		ch <- prometheus.NewInvalidMetric(c.containers, err)
	}
	c.member(ctx, ch)
}

func (c *Collector) emit(ch chan<- prometheus.Metric, name string, u *usage) {
	const typ = "container"
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{name, typ}, l...)...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{name, typ}, l...)...)
	}
	counter(c.cpu, u.cpuUser, "user")
	counter(c.cpu, u.cpuSystem, "system")
	if u.effectiveCPUs > 0 {
		gauge(c.cpuEffective, float64(u.effectiveCPUs))
	}
	gauge(c.procs, u.procs)
	for n, v := range u.memory {
		if d, ok := c.memory[n]; ok {
			gauge(d, v)
		}
	}
	if u.hasOOM {
		counter(c.oom, u.oomKills)
	}
	for _, nd := range u.net {
		for i := range netNames {
			counter(c.netRx[i], nd.rx[i], nd.name)
			counter(c.netTx[i], nd.tx[i], nd.name)
		}
	}
	devs := make([]string, 0, len(u.disk))
	for n := range u.disk {
		devs = append(devs, n)
	}
	sort.Strings(devs)
	for _, n := range devs {
		d := u.disk[n]
		counter(c.diskRead, d.readBytes, n)
		counter(c.diskWritten, d.writtenBytes, n)
		counter(c.diskReads, d.reads, n)
		counter(c.diskWrites, d.writes, n)
	}
}

func (c *Collector) member(ctx context.Context, ch chan<- prometheus.Metric) {
	m := c.src.Member(ctx)
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	leader := 0.0
	if m.Leader {
		leader = 1
	}
	gauge(c.leader, leader)
	gauge(c.applied, float64(m.AppliedIndex))
	gauge(c.lastContact, m.LastContact.Seconds())
	for key, d := range map[string]*prometheus.Desc{"term": c.term, "commit_index": c.commit, "last_log_index": c.lastLog} {
		if v, err := strconv.ParseUint(m.Raft[key], 10, 64); err == nil {
			gauge(d, float64(v))
		}
	}
	if m.Gossip {
		gauge(c.gossipMembers, float64(m.GossipMembers))
		gauge(c.gossipAlive, float64(m.GossipAlive))
	}
	gauge(c.opsUp, float64(m.OperationsRunning))
}
