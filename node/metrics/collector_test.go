package metrics

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type fakeSource struct {
	cts    []Container
	err    error
	member Member
}

func (f *fakeSource) Containers(context.Context) ([]Container, error) { return f.cts, f.err }
func (f *fakeSource) Member(context.Context) Member                   { return f.member }

// write creates files under root: path → content.
func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const fakeNetDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:   5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
`

// fakeHost lays out a host with a v1 container (pid 100, in hybrid
// hierarchies), a v2 one (pid 200, unified), 8 GiB of memory and loop0.
func fakeHost(t *testing.T) Paths {
	root := t.TempDir()
	p := Paths{Proc: filepath.Join(root, "proc"), Cgroup: filepath.Join(root, "cgroup"), Sys: filepath.Join(root, "sys")}
	v1 := "cgroup/%s/lxc.payload.c1/"
	f := func(ctrl, file string) string { return strings.Replace(v1, "%s", ctrl, 1) + file }
	write(t, root, map[string]string{
		"proc/meminfo":                                          "MemTotal:        8388608 kB\nMemFree:         1000 kB\n",
		"proc/100/cgroup":                                       "9:name=systemd:/lxc.payload.c1\n8:pids:/lxc.payload.c1\n7:blkio:/lxc.payload.c1\n6:freezer:/lxc.payload.c1\n4:memory:/lxc.payload.c1\n3:cpuset:/lxc.payload.c1\n2:cpuacct:/lxc.payload.c1\n1:cpu:/lxc.payload.c1\n0::/\n",
		"proc/100/net/dev":                                      fakeNetDev,
		f("cpuacct", "cpuacct.usage_all"):                       "cpu user system\n0 1000000000 200000000\n1 500000000 50000000\n",
		f("cpuacct", "cpuacct.usage_user"):                      "1\n", // usage_all is read first
		f("cpuacct", "cpuacct.usage_sys"):                       "1\n",
		f("cpuset", "cpuset.effective_cpus"):                    "0-1,3\n",
		f("memory", "memory.usage_in_bytes"):                    "104857600\n",
		f("memory", "memory.limit_in_bytes"):                    "268435456\n",
		f("memory", "memory.memsw.usage_in_bytes"):              "106954752\n",
		f("memory", "memory.oom_control"):                       "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		f("memory", "memory.stat"):                              "cache 1\nrss 2\ntotal_cache 20971520\ntotal_rss 73400320\ntotal_active_anon 60000000\ntotal_inactive_anon 10000000\ntotal_active_file 5000000\ntotal_inactive_file 15000000\ntotal_shmem 4096\ntotal_dirty 8192\ntotal_writeback 0\ntotal_mapped_file 1048576\ntotal_unevictable 0\n",
		f("pids", "pids.current"):                               "7\n",
		f("freezer", "freezer.state"):                           "THAWED\n",
		f("blkio", "blkio.throttle.io_service_bytes_recursive"): "7:0 Read 4096\n7:0 Write 8192\n7:0 Sync 0\n7:0 Total 12288\nTotal 12288\n",
		f("blkio", "blkio.throttle.io_serviced_recursive"):      "7:0 Read 1\n7:0 Write 2\n7:0 Total 3\nTotal 3\n",

		"proc/200/cgroup":                                     "0::/lxc.payload.c2\n",
		"proc/200/net/dev":                                    fakeNetDev,
		"cgroup/unified/lxc.payload.c2/cpu.stat":              "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
		"cgroup/unified/lxc.payload.c2/cpuset.cpus.effective": "0-1\n",
		"cgroup/unified/lxc.payload.c2/memory.current":        "52428800\n",
		"cgroup/unified/lxc.payload.c2/memory.max":            "max\n",
		"cgroup/unified/lxc.payload.c2/memory.swap.current":   "0\n",
		"cgroup/unified/lxc.payload.c2/memory.events":         "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
		"cgroup/unified/lxc.payload.c2/memory.stat":           "anon 41943040\nfile 10485760\nactive_anon 40000000\ninactive_anon 1943040\nactive_file 485760\ninactive_file 10000000\nshmem 0\nfile_dirty 0\nfile_writeback 0\nfile_mapped 0\nunevictable 0\n",
		"cgroup/unified/lxc.payload.c2/pids.current":          "3\n",
		"cgroup/unified/lxc.payload.c2/cgroup.freeze":         "1\n",
		"cgroup/unified/lxc.payload.c2/io.stat":               "7:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n",
	})
	if err := os.MkdirAll(filepath.Join(p.Sys, "dev", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/virtual/block/loop0", filepath.Join(p.Sys, "dev", "block", "7:0")); err != nil {
		t.Fatal(err)
	}
	return p
}

// value finds one sample by name and labels (nil when absent).
func value(t *testing.T, mfs []*dto.MetricFamily, name string, labels map[string]string) *float64 {
	t.Helper()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			}
			return &v
		}
	}
	return nil
}

func gather(t *testing.T, c prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func TestCollectorReadsV1AndV2(t *testing.T) {
	src := &fakeSource{
		cts: []Container{{Name: "c1", PID: 100}, {Name: "c2", PID: 200}, {Name: "off", PID: 0}, {Name: "gone", PID: 999}},
		member: Member{Leader: true, AppliedIndex: 42, Raft: map[string]string{"term": "3", "commit_index": "41", "last_log_index": "42"},
			LastContact: 0, Gossip: true, GossipMembers: 3, GossipAlive: 2, OperationsRunning: 1},
	}
	mfs := gather(t, NewAt(src, fakeHost(t)))
	c1 := map[string]string{"name": "c1", "type": "container"}
	c2 := map[string]string{"name": "c2", "type": "container"}
	with := func(base map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range base {
			out[a] = b
		}
		return out
	}
	const gib = 1 << 30
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"shoal_cpu_seconds_total", with(c1, "mode", "user"), 1.5},
		{"shoal_cpu_seconds_total", with(c1, "mode", "system"), 0.25},
		{"shoal_cpu_effective_total", c1, 3},
		{"shoal_procs_total", c1, 7},
		{"shoal_memory_MemTotal_bytes", c1, 256 << 20},
		{"shoal_memory_MemFree_bytes", c1, 156 << 20},
		{"shoal_memory_MemAvailable_bytes", c1, 156<<20 + 15000000},
		{"shoal_memory_RSS_bytes", c1, 73400320},
		{"shoal_memory_Cached_bytes", c1, 20971520},
		{"shoal_memory_Active_bytes", c1, 65000000},
		{"shoal_memory_Inactive_bytes", c1, 25000000},
		{"shoal_memory_Swap_bytes", c1, 2 << 20},
		{"shoal_memory_Shmem_bytes", c1, 4096},
		{"shoal_memory_OOM_kills_total", c1, 2},
		{"shoal_network_receive_bytes_total", with(c1, "device", "eth0"), 5000},
		{"shoal_network_transmit_bytes_total", with(c1, "device", "eth0"), 3000},
		{"shoal_network_receive_drop_total", with(c1, "device", "eth0"), 2},
		{"shoal_network_transmit_errs_total", with(c1, "device", "eth0"), 3},
		{"shoal_network_receive_packets_total", with(c1, "device", "lo"), 2},
		{"shoal_disk_read_bytes_total", with(c1, "device", "loop0"), 4096},
		{"shoal_disk_written_bytes_total", with(c1, "device", "loop0"), 8192},
		{"shoal_disk_reads_completed_total", with(c1, "device", "loop0"), 1},
		{"shoal_disk_writes_completed_total", with(c1, "device", "loop0"), 2},

		{"shoal_cpu_seconds_total", with(c2, "mode", "user"), 2},
		{"shoal_cpu_seconds_total", with(c2, "mode", "system"), 1},
		{"shoal_cpu_effective_total", c2, 2},
		{"shoal_memory_MemTotal_bytes", c2, 8 * gib}, // no limit: the host's
		{"shoal_memory_MemFree_bytes", c2, 8*gib - 52428800},
		{"shoal_memory_RSS_bytes", c2, 41943040},
		{"shoal_memory_Swap_bytes", c2, 0},
		{"shoal_procs_total", c2, 3},
		{"shoal_disk_written_bytes_total", with(c2, "device", "loop0"), 200},
		{"shoal_disk_writes_completed_total", with(c2, "device", "loop0"), 4},

		{"shoal_containers", map[string]string{"state": "running"}, 2}, // c1, and gone (unreadable)
		{"shoal_containers", map[string]string{"state": "frozen"}, 1},  // c2
		{"shoal_containers", map[string]string{"state": "stopped"}, 1},
		{"shoal_scrape_errors", nil, 1},
		{"shoal_raft_leader", nil, 1},
		{"shoal_raft_applied_index", nil, 42},
		{"shoal_raft_term", nil, 3},
		{"shoal_raft_commit_index", nil, 41},
		{"shoal_raft_last_log_index", nil, 42},
		{"shoal_gossip_members", nil, 3},
		{"shoal_gossip_members_alive", nil, 2},
		{"shoal_operations_running", nil, 1},
	} {
		got := value(t, mfs, tc.name, tc.labels)
		if got == nil {
			t.Errorf("%s%v: missing", tc.name, tc.labels)
		} else if *got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, *got, tc.want)
		}
	}
	for _, name := range []string{"off", "gone"} {
		if v := value(t, mfs, "shoal_cpu_seconds_total", map[string]string{"name": name}); v != nil {
			t.Errorf("%s (not running / unreadable) has a CPU sample: %v", name, *v)
		}
	}
}

// A member without gossip or Raft stats says nothing it does not know;
// a failed list still gives the member's figures.
func TestCollectorOmitsWhatItCannotKnow(t *testing.T) {
	src := &fakeSource{err: errors.New("list failed"), member: Member{AppliedIndex: 7, LastContact: 2 * time.Second}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewAt(src, fakeHost(t)))
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "list failed") {
		t.Fatalf("Gather: %v, want the list's error", err)
	}
	for _, name := range []string{"shoal_raft_term", "shoal_raft_commit_index", "shoal_gossip_members"} {
		if v := value(t, mfs, name, nil); v != nil {
			t.Errorf("%s = %v without a source for it", name, *v)
		}
	}
	if v := value(t, mfs, "shoal_raft_last_contact_seconds", nil); v == nil || *v != 2 {
		t.Errorf("last contact: %v", v)
	}
	if v := value(t, mfs, "shoal_raft_applied_index", nil); v == nil || *v != 7 {
		t.Errorf("applied index: %v", v)
	}
}

func TestRaftSinkKeepsApplyAndCommit(t *testing.T) {
	s := NewRaftSink()
	s.AddSample([]string{"raft", "fsm", "apply"}, 2)         // 2 ms
	s.AddSample([]string{"raft", "fsm", "applyBatch"}, 0.5)  // 0.5 ms: a BatchingFSM's batch
	s.AddSample([]string{"raft", "fsm", "applyBatchNum"}, 7) // a count, not a time
	s.AddSampleWithLabels([]string{"raft", "commitTime"}, 4, nil)
	s.AddSample([]string{"memberlist", "gossip"}, 1)
	s.AddSample([]string{"raft", "rpc", "appendEntries"}, 1)
	mfs := gather(t, s)
	if len(mfs) != 2 {
		t.Fatalf("%d metric families, want the 2 histograms", len(mfs))
	}
	for _, mf := range mfs {
		h := mf.GetMetric()[0].GetHistogram()
		switch mf.GetName() {
		case "shoal_raft_apply_duration_seconds":
			if h.GetSampleCount() != 2 || math.Abs(h.GetSampleSum()-0.0025) > 1e-12 {
				t.Errorf("apply: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
			}
		case "shoal_raft_commit_duration_seconds":
			if h.GetSampleCount() != 1 || math.Abs(h.GetSampleSum()-0.004) > 1e-12 {
				t.Errorf("commit: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
}

func TestCountCPUs(t *testing.T) {
	for in, want := range map[string]int{"0": 1, "0-3": 4, "0-1,3,5-6": 5, "": 0, "x": 0} {
		if got := countCPUs(in); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", in, got, want)
		}
	}
}
