// Command lifecycle measures Shoal's single-node figures against a fresh
// daemon of its own (its own state dir, btrfs loop pool and bridge): launch,
// stop -f, delete -f, exec, snapshot create/restore, copy, list with 100
// running containers, daemon RSS and host memory per idle container, each
// printed beside the raw LXC/btrfs floor measured in the same run. It prints
// figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
)

func main() {
	n := flag.Int("n", 20, "samples per figure (median reported)")
	many := flag.Int("many", 100, "containers for the list and memory figures")
	withProfiles := flag.Bool("profiles", true, "the many containers apply default and two profiles (config keys, a disk device)")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := harness.Missing(); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	d := harness.StartDaemon(t, bin)
	c, err := client.Dial(d.Socket)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx := context.Background()
	d.MustShoal("image", "build", "busybox")
	fmt.Printf("# Shoal single-node figures (median of %d; API = Go client over the unix socket, CLI = the shoal binary)\n", *n)

	wait := func(op *shoalv1.Operation, err error) {
		if err != nil {
			t.Fatalf("%v", err)
		}
		if _, err := c.Wait(ctx, op, nil); err != nil {
			t.Fatalf("%v", err)
		}
	}
	launch := func(name string) {
		r, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: name, Image: "busybox"})
		wait(r.GetOperation(), err)
	}
	state := func(name string, a shoalv1.StateAction) {
		if _, err := c.Containers.ChangeContainerState(ctx, &shoalv1.ChangeContainerStateRequest{Name: name, Action: a, Force: true}); err != nil {
			t.Fatalf("%v", err)
		}
	}
	del := func(name string) {
		if _, err := c.Containers.DeleteContainer(ctx, &shoalv1.DeleteContainerRequest{Name: name, Force: true}); err != nil {
			t.Fatalf("%v", err)
		}
	}

	// launch / stop -f / delete -f through the API.
	var tLaunch, tStop, tDelete, tCLILaunch, tCLIDelete []time.Duration
	for i := 0; i < *n; i++ {
		name := fmt.Sprintf("b%d", i)
		tLaunch = append(tLaunch, timeIt(func() { launch(name) }))
		tStop = append(tStop, timeIt(func() { state(name, shoalv1.StateAction_STATE_ACTION_STOP) }))
		state(name, shoalv1.StateAction_STATE_ACTION_START)
		tDelete = append(tDelete, timeIt(func() { del(name) }))
		cli := fmt.Sprintf("cli%d", i)
		tCLILaunch = append(tCLILaunch, timeIt(func() { d.MustShoal("launch", "busybox", cli) }))
		tCLIDelete = append(tCLIDelete, timeIt(func() { d.MustShoal("delete", "-f", cli) }))
	}
	rawLaunch, rawStop := rawFloor(t, d, *n)
	report("launch busybox (API)", tLaunch)
	report("launch busybox (CLI)", tCLILaunch)
	report("raw floor: btrfs snapshot + lxc-start -d", rawLaunch)
	report("stop -f (API)", tStop)
	report("raw floor: lxc-stop -k", rawStop)
	report("delete -f of a running container (API)", tDelete)
	report("delete -f (CLI)", tCLIDelete)

	// exec, snapshots, copy on one running container.
	launch("ref")
	var tExec, tCLIExec, tSnap, tRestore, tCopy []time.Duration
	// Each figure in its own loop, so one operation's aftermath (a restarted
	// container's teardown) does not land in another's samples.
	for i := 0; i < *n; i++ {
		tExec = append(tExec, timeIt(func() {
			if code, err := c.Exec(ctx, "ref", []string{"true"}, client.ExecOptions{}); err != nil || code != 0 {
				t.Fatalf("exec: %d %v", code, err)
			}
		}))
	}
	for i := 0; i < *n; i++ {
		tCLIExec = append(tCLIExec, timeIt(func() { d.MustShoal("exec", "ref", "--", "true") }))
	}
	for i := 0; i < *n; i++ {
		snap := fmt.Sprintf("s%d", i)
		tSnap = append(tSnap, timeIt(func() {
			if _, err := c.Containers.CreateSnapshot(ctx, &shoalv1.CreateSnapshotRequest{Container: "ref", Name: snap}); err != nil {
				t.Fatalf("%v", err)
			}
		}))
	}
	for i := 0; i < *n; i++ {
		snap := fmt.Sprintf("s%d", i)
		tRestore = append(tRestore, timeIt(func() {
			if _, err := c.Containers.RestoreSnapshot(ctx, &shoalv1.RestoreSnapshotRequest{Container: "ref", Name: snap}); err != nil {
				t.Fatalf("%v", err)
			}
		}))
	}
	for i := 0; i < *n; i++ {
		cp := fmt.Sprintf("cp%d", i)
		tCopy = append(tCopy, timeIt(func() {
			r, err := c.Containers.CopyContainer(ctx, &shoalv1.CopyContainerRequest{Source: "ref", Name: cp, InstanceOnly: true})
			wait(r.GetOperation(), err)
		}))
		del(cp)
	}
	report("exec -- true (API)", tExec)
	report("exec -- true (CLI)", tCLIExec)
	report("raw floor: lxc-attach -- true", rawAttach(t, d, "ref", *n))
	report("snapshot create (API)", tSnap)
	report("snapshot restore of a running container (API)", tRestore)
	report("copy --instance-only (API)", tCopy)
	del("ref")

	// Memory and list with many running containers, each applying two
	// profiles besides default (config keys and a disk device).
	var profiles []string
	if *withProfiles {
		dataDir, err := os.MkdirTemp("", "shoal-bench-data-")
		if err != nil {
			t.Fatalf("%v", err)
		}
		defer os.RemoveAll(dataDir)
		d.MustShoal("profile", "create", "bench-limits", "limits.processes=500", "user.bench=1")
		d.MustShoal("profile", "create", "bench-data")
		d.MustShoal("profile", "device", "add", "bench-data", "data", "disk", "source="+dataDir, "path=/data", "readonly=true")
		profiles = []string{"default", "bench-limits", "bench-data"}
	}
	pid := daemonPID(t, d)
	rss0 := rssKiB(pid)
	used0 := memUsedKiB()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := 0; i < *many; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			name := fmt.Sprintf("m%d", i)
			r, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: name, Image: "busybox", Profiles: profiles})
			wait(r.GetOperation(), err)
		}()
	}
	wg.Wait()
	time.Sleep(5 * time.Second) // let the containers settle into idle
	used1 := memUsedKiB()
	rss1 := rssKiB(pid)
	var tList, tCLIList []time.Duration
	for i := 0; i < *n; i++ {
		tList = append(tList, timeIt(func() {
			r, err := c.Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
			if err != nil || len(r.GetContainers()) != *many {
				t.Fatalf("list: %d %v", len(r.GetContainers()), err)
			}
		}))
		tCLIList = append(tCLIList, timeIt(func() { d.MustShoal("list") }))
	}
	what := fmt.Sprintf("list with %d running", *many)
	if *withProfiles {
		what += ", 3 profiles each"
	}
	report(what+" (API)", tList)
	report(what+" (CLI)", tCLIList)
	fmt.Printf("%-52s %8.1f MiB\n", "daemon RSS, 0 containers", float64(rss0)/1024)
	fmt.Printf("%-52s %8.1f MiB\n", fmt.Sprintf("daemon RSS, %d running", *many), float64(rss1)/1024)
	fmt.Printf("%-52s %8.2f MiB\n", "host memory per idle container", float64(used1-used0)/1024/float64(*many))
}

// rawFloor measures btrfs snapshot + lxc-start -d and lxc-stop -k with the
// exact LXC config Shoal generates, bypassing Shoal.
func rawFloor(t *harness.Program, d *harness.Daemon, n int) (start, stop []time.Duration) {
	d.MustShoal("init", "busybox", "rawtmpl")
	conf, err := os.ReadFile(filepath.Join(d.StateDir, "lxc-config", "rawtmpl.conf"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	img, _ := filepath.Glob(filepath.Join(d.StateDir, "storage-pools", "default", "volumes", "images%2F*-u*"))
	if len(img) != 1 {
		t.Fatalf("shifted image volume not found: %v", img)
	}
	lxcPath := filepath.Join(d.StateDir, "raw-lxc")
	os.MkdirAll(lxcPath, 0o711)
	raw := filepath.Join(d.StateDir, "storage-pools", "default", "raw")
	os.MkdirAll(raw, 0o711)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("raw%d", i)
		rootfs := filepath.Join(raw, name)
		c := strings.ReplaceAll(string(conf), "rawtmpl", name)
		var lines []string
		for _, l := range strings.Split(c, "\n") {
			if strings.HasPrefix(l, "lxc.rootfs.path") {
				l = "lxc.rootfs.path = dir:" + rootfs
			}
			if strings.HasPrefix(l, "lxc.net.0.hwaddr") {
				continue
			}
			lines = append(lines, l)
		}
		cfgFile := filepath.Join(lxcPath, name+".conf")
		os.WriteFile(cfgFile, []byte(strings.Join(lines, "\n")), 0o644)
		start = append(start, timeIt(func() {
			run(t, "btrfs", "-q", "subvolume", "snapshot", img[0], rootfs)
			run(t, "lxc-start", "-P", lxcPath, "-n", name, "-f", cfgFile, "-d")
		}))
		stop = append(stop, timeIt(func() { run(t, "lxc-stop", "-P", lxcPath, "-n", name, "-k") }))
		run(t, "btrfs", "-q", "subvolume", "delete", rootfs)
	}
	d.MustShoal("delete", "rawtmpl")
	return start, stop
}

// rawAttach times lxc-attach into a Shoal container, bypassing Shoal.
func rawAttach(t *harness.Program, d *harness.Daemon, name string, n int) []time.Duration {
	lxcPath := filepath.Join(d.StateDir, "lxc")
	conf := filepath.Join(d.StateDir, "lxc-config", name+".conf")
	var out []time.Duration
	for i := 0; i < n; i++ {
		out = append(out, timeIt(func() { run(t, "lxc-attach", "-P", lxcPath, "-n", name, "-f", conf, "--", "true") }))
	}
	return out
}

func run(t *harness.Program, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func timeIt(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func report(what string, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	med := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	fmt.Printf("%-52s %8.1f ms  (min %.1f, max %.1f)\n", what, ms(med), ms(ds[0]), ms(ds[len(ds)-1]))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func daemonPID(t *harness.Program, d *harness.Daemon) int {
	out, err := exec.Command("pgrep", "-f", "shoald --state-dir "+d.StateDir).Output()
	if err != nil {
		t.Fatalf("find shoald: %v", err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(out))[0])
	return pid
}

func rssKiB(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
}

// memUsedKiB is MemTotal - MemAvailable: what the host has given out.
func memUsedKiB() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	vals := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			vals[strings.TrimSuffix(f[0], ":")] = v
		}
	}
	return vals["MemTotal"] - vals["MemAvailable"]
}
