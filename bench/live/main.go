// Command live measures Shoal's live moves between two members (simulated
// hosts: network and mount namespaces on this machine, tests/netns): for an
// idle busybox container and one holding 256 MiB of touched memory, the
// median total time and downtime of N moves there and back, the downtime
// seen from inside the container (the longest gap of a 10 ms ticker), the
// freeze+dump and restore parts, and the bytes moved; and the floor: CRIU's
// checkpoint (stop) and restore of the same container on one host through
// lxc-checkpoint. It prints figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

func main() {
	n := flag.Int("n", 10, "moves per container (alternating directions)")
	mem := flag.Int("mem", 256, "MiB of touched memory in the second container")
	mode := flag.String("mode", "auto", "migration.mode of the containers (auto, postcopy, stop-and-copy)")
	volume := flag.Bool("volume", true, "also move an idle container with a custom storage volume attached (1 MiB written on it)")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	_, ms := harness.StartCluster(t, bin, 2)
	ms[0].MustShoal("image", "build", "busybox")
	fmt.Printf("# Shoal live moves: 2 members, each in its own network and mount namespace on this machine; median of %d moves there and back\n", *n)
	cases := []struct {
		name string
		mem  int
		vol  bool
	}{{"idle", 0, false}, {fmt.Sprintf("mem%d", *mem), *mem, false}}
	if *volume {
		cases = append(cases, struct {
			name string
			mem  int
			vol  bool
		}{"idle+vol", 0, true})
	}
	for _, c := range cases {
		name := strings.ReplaceAll(c.name, "+", "-")
		ms[0].MustShoal("launch", "busybox", name, "--target", "n1", "-c", "migration.mode="+*mode)
		if c.vol {
			ms[0].MustShoal("storage", "volume", "create", "default", "benchvol", "--target", "n1")
			ms[0].MustShoal("storage", "volume", "attach", "default", "benchvol", name, "/data")
			ms[0].MustShoal("exec", name, "--", "dd", "if=/dev/urandom", "of=/data/blob", "bs=1M", "count=1")
		}
		c.name = name
		ms[0].MustShoal("file", "push", filepath.Join(bin, "workload"), c.name+"/usr/bin/workload", "--mode", "0755")
		ms[0].MustShoal("exec", c.name, "--", "setsid", "sh", "-c",
			fmt.Sprintf("workload -mem %d </dev/null >/dev/null 2>&1 &", c.mem))
		netns.WaitFor(t, "the workload", 30*time.Second, func() bool {
			_, _, code := ms[0].Shoal("file", "pull", c.name+"/root/ticks", "-")
			return code == 0
		})
		time.Sleep(500 * time.Millisecond)
		var total, down, gap, dump, restore []float64
		var bytes int64
		var pages [3]float64
		used := ""
		ok := 0
		at := 0
		for i := 0; i < *n; i++ {
			from, to := ms[at], ms[1-at]
			control(from, c.name, "reset")
			out, stderr, code := from.Shoal("move", c.name, "--target", to.Opts.Name, "--live")
			if code != 0 {
				fmt.Printf("  move %d of %s failed: %s\n", i+1, c.name, strings.TrimSpace(stderr))
				// It stays where it was (or the member that owns it now).
				if to.List()[c.name].Container.Node == to.Opts.Name {
					at = 1 - at
				}
				continue
			}
			ok++
			at = 1 - at
			f := parse(out)
			total, down = append(total, f["took"]), append(down, f["downtime"])
			dump, restore = append(dump, f["dump"]), append(restore, f["restore"])
			bytes = int64(f["bytes"])
			pages = [3]float64{f["before"], f["during"], f["after"]}
			if m := tookRE.FindStringSubmatch(out); m != nil {
				used = m[3]
			}
			if g, err := maxGap(to, c.name); err == nil {
				gap = append(gap, g)
			}
		}
		fmt.Printf("%-8s %s  %2d/%d moves ok  total %6.0f ms  downtime %6.0f ms  (inside: longest tick gap %6.0f ms)  freeze+dump %5.0f ms  restore %5.0f ms  pages before/during/after the freeze %.0f/%.0f/%.0f  moved %.1f MB\n",
			c.name, used, ok, *n, median(total), median(down), median(gap), median(dump), median(restore), pages[0], pages[1], pages[2], float64(bytes)/1e6)
		floor(t, ms[at], c.name)
	}
}

// control writes a command for the workload (see tests/workload).
func control(m *harness.Member, name, cmd string) {
	m.Shoal("exec", name, "--", "sh", "-c", "rm -f /root/status; echo "+cmd+" > /root/control")
	time.Sleep(250 * time.Millisecond) // it reads the control file every 100 ms
}

var gapRE = regexp.MustCompile(`maxgap_ms=(\d+)`)

// maxGap asks the workload for the longest tick gap since the last reset.
func maxGap(m *harness.Member, name string) (float64, error) {
	control(m, name, "report")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _, code := m.Shoal("file", "pull", name+"/root/status", "-")
		if mt := gapRE.FindStringSubmatch(out); code == 0 && mt != nil {
			v, _ := strconv.ParseFloat(mt[1], 64)
			return v, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("no report")
}

var (
	tookRE  = regexp.MustCompile(`in ([0-9.]+m?s), downtime ([0-9.]+m?s) \(([a-z-]+): freeze\+dump (\d+)ms, restore (\d+)ms`)
	pagesRE = regexp.MustCompile(`memory pages: (\d+) before the freeze, (\d+) during, (\d+) after; ([0-9.]+[KMG]?i?B) sent`)
)

// parse reads a `shoal move --live` summary: durations in ms, sizes in bytes.
func parse(out string) map[string]float64 {
	f := map[string]float64{}
	if m := tookRE.FindStringSubmatch(out); m != nil {
		for i, k := range []string{"took", "downtime"} {
			d, _ := time.ParseDuration(m[i+1])
			f[k] = float64(d.Microseconds()) / 1000
		}
		f["dump"], _ = strconv.ParseFloat(m[4], 64)
		f["restore"], _ = strconv.ParseFloat(m[5], 64)
	}
	if m := pagesRE.FindStringSubmatch(out); m != nil {
		for i, k := range []string{"before", "during", "after"} {
			f[k], _ = strconv.ParseFloat(m[i+1], 64)
		}
		f["bytes"] = size(m[4])
	}
	return f
}

// size parses "12.3MiB".
func size(s string) float64 {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	v, _ := strconv.ParseFloat(s[:i], 64)
	mult := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[s[i:]]
	return v * mult
}

// floor checkpoints (stopping it) and restores the container on the member
// that holds it with lxc-checkpoint directly, median of 5: CRIU's own cost
// on one host, the floor a move's downtime is compared with.
func floor(t *harness.Program, m *harness.Member, name string) {
	ctx := context.Background()
	lxcpath := filepath.Join(m.StateDir, "lxc")
	conf := filepath.Join(m.StateDir, "lxc-config", name+".conf")
	var dumps, restores []float64
	for i := 0; i < 5; i++ {
		dir := filepath.Join(m.StateDir, "checkpoints", fmt.Sprintf("floor-%s-%d", name, i))
		t0 := time.Now()
		if out, err := m.Host.Command(ctx, "lxc-checkpoint", "-n", name, "-P", lxcpath, "--rcfile", conf, "-D", dir, "-s").CombinedOutput(); err != nil {
			fmt.Printf("  floor: checkpoint failed: %v %s\n", err, out)
			return
		}
		dumps = append(dumps, float64(time.Since(t0).Microseconds())/1000)
		// The same workarounds Shoal's restore uses: the mapped root reads
		// the images (and the directory is traversable: see
		// runtime.ChownCheckpoint), and CRIU moves a precreated veth in
		// (see node/runtime.Restore).
		peer := fmt.Sprintf("vspfloor%d", i)
		host := pairName(conf)
		script := fmt.Sprintf("chown -R 1000000:1000000 %[1]s && chmod 0711 %[1]s && { ip link del %[2]s 2>/dev/null; ip link del %[3]s 2>/dev/null; true; } && ip link add %[2]s type veth peer name %[3]s && ip link set %[2]s up && printf 'restore: --external\\nrestore: netdev[eth0]:%[3]s\\n' > %[1]s/shoal-criu.args",
			dir, host, peer)
		if out, err := m.Host.Command(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
			fmt.Printf("  floor: prepare restore: %v %s\n", err, out)
			return
		}
		t0 = time.Now()
		cmd := m.Host.Command(ctx, "lxc-checkpoint", "-r", "-n", name, "-P", lxcpath, "--rcfile", conf, "-D", dir)
		logf, _ := os.Create(filepath.Join(dir, "restore.out"))
		cmd.Stdout, cmd.Stderr = logf, logf
		err := cmd.Run()
		logf.Close()
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "restore.out"))
			fmt.Printf("  floor: restore failed: %v %s\n", err, b)
			return
		}
		restores = append(restores, float64(time.Since(t0).Microseconds())/1000)
		// Restored frozen if it was dumped frozen; this one was running.
		os.RemoveAll(dir)
	}
	fmt.Printf("%-8s floor (lxc-checkpoint on one host, median of 5): checkpoint -s %5.0f ms + restore -r %5.0f ms = %5.0f ms\n",
		name, median(dumps), median(restores), median(dumps)+median(restores))
}

// pairName reads lxc.net.0.veth.pair from a container config.
func pairName(conf string) string {
	b, _ := os.ReadFile(conf)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "lxc.net.0.veth.pair = "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "vshfloor"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
