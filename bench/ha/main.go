// Command ha measures Shoal's healing on three members (simulated hosts:
// network and mount namespaces on this machine, tests/netns): N times, an
// HA container whose workload appends a numbered record every 100 ms has
// its host killed outright (link cut, shoald SIGKILLed, the container's
// processes killed); it reports, per kill and as medians, the time from the
// kill until the member is marked offline (detection), until the heal entry
// (threshold), and until the container runs elsewhere (promotion + start),
// and the data lost (records written but not in the healed copy, as time).
// Then the cost of replication at steady state: bytes sent per second and
// the owner's shoald CPU for a container writing 1 MB/s, beside the same
// container without HA. It prints figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

func main() {
	n := flag.Int("n", 10, "kills")
	rpo := flag.String("rpo", "2s", "ha.rpo of the containers")
	threshold := flag.String("threshold", "", "cluster.healing_threshold (default: the cluster's)")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	_, ms := harness.StartCluster(t, bin, 3)
	ms[0].MustShoal("image", "build", "busybox")
	if *threshold != "" {
		ms[0].MustShoal("cluster", "config", "set", "cluster.healing_threshold="+*threshold)
	}
	var detect, heal, run, total, lost []time.Duration
	fmt.Printf("%-4s %-8s %10s %10s %10s %10s %12s\n", "kill", "host", "offline", "healed", "running", "total", "data lost")
	for i := 1; i <= *n; i++ {
		victim := ms[i%len(ms)]
		var other *harness.Member
		for _, m := range ms {
			if m != victim {
				other = m
				break
			}
		}
		name := fmt.Sprintf("db%d", i)
		other.MustShoal("launch", "busybox", name, "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo="+*rpo)
		other.MustShoal("exec", name, "--", "sh", "-c",
			`setsid sh -c 'i=0; while :; do i=$((i+1)); echo rec$i >> /root/log; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`)
		other.WaitFor("a replica of "+name, 60*time.Second, func() bool {
			out, _, _ := other.Shoal("info", name)
			return strings.Contains(out, "HA: replicas n")
		})
		time.Sleep(4 * time.Second)
		killed := time.Now()
		if err := victim.Host.Cut(); err != nil {
			t.Fatalf("%v", err)
		}
		victim.Kill()
		_, _ = victim.Host.Run(context.Background(), "lxc-stop", "-P", filepath.Join(victim.StateDir, "lxc"), "-n", name, "-k")
		out, _ := victim.Host.Run(context.Background(), "cat", filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "containers%2F"+name, "root", "log"))
		written := strings.Count(out, "\n")
		var offlineAt, healedAt, runningAt time.Duration
		for time.Since(killed) < 2*time.Minute && runningAt == 0 {
			if offlineAt == 0 && other.Members()[victim.Host.Name].Status == "offline" {
				offlineAt = time.Since(killed)
			}
			c := other.List()[name]
			if healedAt == 0 && c.Container.Node != "" && c.Container.Node != victim.Host.Name {
				healedAt = time.Since(killed)
			}
			if healedAt != 0 && strings.EqualFold(c.State.Status, "running") {
				runningAt = time.Since(killed)
			}
			time.Sleep(50 * time.Millisecond)
		}
		kept := 0
		if runningAt != 0 {
			got, _, _ := other.Shoal("exec", name, "--", "sh", "-c", "wc -l < /root/log")
			kept, _ = strconv.Atoi(strings.TrimSpace(got))
		}
		l := time.Duration(written-kept) * 100 * time.Millisecond
		fmt.Printf("%-4d %-8s %10s %10s %10s %10s %12s\n", i, victim.Host.Name, r(offlineAt), r(healedAt-offlineAt), r(runningAt-healedAt), r(runningAt), r(l))
		if runningAt != 0 {
			detect, heal, run, total, lost = append(detect, offlineAt), append(heal, healedAt-offlineAt), append(run, runningAt-healedAt), append(total, runningAt), append(lost, l)
		}
		if err := victim.Host.Heal(); err != nil {
			t.Fatalf("%v", err)
		}
		victim.Start()
		other.WaitFor(victim.Host.Name+" back", 60*time.Second, func() bool { return other.Members()[victim.Host.Name].Status == "online" })
		other.MustShoal("delete", "-f", name)
	}
	fmt.Printf("median of %d: offline %s, heal entry +%s, running +%s: total %s; data lost %s (RPO %s)\n",
		len(total), r(median(detect)), r(median(heal)), r(median(run)), r(median(total)), r(median(lost)), *rpo)

	// Steady state: 1 MB/s of writes, with and without HA.
	owner := ms[1]
	for _, ha := range []bool{false, true} {
		name := "steady"
		args := []string{"launch", "busybox", name, "--target", owner.Host.Name}
		if ha {
			args = append(args, "-c", "ha.enabled=true", "-c", "ha.rpo="+*rpo)
		}
		ms[0].MustShoal(args...)
		ms[0].MustShoal("exec", name, "--", "sh", "-c",
			`setsid sh -c 'while :; do dd if=/dev/urandom of=/root/blob bs=1M count=1 conv=notrunc 2>/dev/null; sleep 1; done' </dev/null >/dev/null 2>&1 &`)
		time.Sleep(5 * time.Second)
		cpu0, at := cpuSeconds(owner.Pid()), time.Now()
		sent0 := sentBytes(ms[0], name)
		for time.Since(at) < 30*time.Second {
			sentBytes(ms[0], name) // every round, as it is recorded
			time.Sleep(200 * time.Millisecond)
		}
		cpu := (cpuSeconds(owner.Pid()) - cpu0) / time.Since(at).Seconds()
		rate := float64(sentBytes(ms[0], name)-sent0) / time.Since(at).Seconds()
		fmt.Printf("steady, 1 MB/s of writes, ha=%v: owner's shoald CPU %.1f%% of a core; replication %.0f KB/s (sum of rounds' bytes / time; approximate)\n",
			ha, cpu*100, rate/1000)
		ms[0].MustShoal("delete", "-f", name)
	}
}

// sentBytes is a running total of the bytes the container's replication
// rounds sent, as its record shows them (each round's last_bytes, summed
// as they change).
var lastSeen = map[string]string{}
var totals = map[string]int64{}

func sentBytes(m *harness.Member, name string) int64 {
	out, _, _ := m.Shoal("info", name, "--format", "json")
	i := strings.Index(out, `"last_bytes":"`)
	if i < 0 {
		return totals[name]
	}
	rest := out[i+len(`"last_bytes":"`):]
	v := rest[:strings.Index(rest, `"`)]
	j := strings.Index(out, `"snapshot":"`)
	snap := ""
	if j >= 0 {
		s := out[j+len(`"snapshot":"`):]
		snap = s[:strings.Index(s, `"`)]
	}
	if snap != lastSeen[name] {
		lastSeen[name] = snap
		n, _ := strconv.ParseInt(v, 10, 64)
		totals[name] += n
	}
	return totals[name]
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func r(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
