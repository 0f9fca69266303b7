// Command metrics times a scrape of a member's /metrics with many running
// containers, against a fresh daemon of its own, beside two figures
// measured in the same run on the same containers: the collector alone in
// this process (the same cgroup and /proc reads and the metric building,
// with the init pids known: no LXC round trips, no HTTP), and the floor,
// reading the same files with os.ReadFile and nothing else. It prints
// figures; it asserts nothing but that every container is in each scrape.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/api/client"
	"github.com/shoal-dev/shoal/node/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
)

func main() {
	n := flag.Int("n", 20, "samples per figure (median reported)")
	many := flag.Int("many", 100, "running containers")
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

	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := 0; i < *many; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: fmt.Sprintf("m%d", i), Image: "busybox"})
			if err != nil {
				t.Fatalf("%v", err)
			}
			if _, err := c.Wait(ctx, r.GetOperation(), nil); err != nil {
				t.Fatalf("%v", err)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("# /metrics with %d running busybox containers (launched in %.0f s); median of %d\n", *many, time.Since(start).Seconds(), *n)
	time.Sleep(3 * time.Second) // let them settle into idle
	r, err := c.Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
	if err != nil {
		t.Fatalf("%v", err)
	}
	var cts []metrics.Container
	for _, ct := range r.GetContainers() {
		if ct.GetState().GetStatus() != "Running" {
			t.Fatalf("%s: %s", ct.GetContainer().GetName(), ct.GetState().GetStatus())
		}
		cts = append(cts, metrics.Container{Name: ct.GetContainer().GetName(), PID: int(ct.GetState().GetPid())})
	}
	if len(cts) != *many {
		t.Fatalf("%d containers listed, want %d", len(cts), *many)
	}

	// The daemon's scrape, over the REST socket as a local admin (the
	// handler is the one the TLS listeners serve).
	hc := harness.UnixHTTP(d.RESTSocket())
	var size int
	scrape := func() {
		resp, err := hc.Get("http://rest/metrics")
		if err != nil {
			t.Fatalf("%v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.Count(string(b), "shoal_cpu_seconds_total{mode=\"user\"") != *many {
			t.Fatalf("scrape: %d, %d containers", resp.StatusCode, strings.Count(string(b), "shoal_cpu_seconds_total{mode=\"user\""))
		}
		size = len(b)
	}
	scrape() // warm
	tScrape := sample(*n, scrape)

	// The collector alone, in this process.
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(staticSource(cts)))
	tCollect := sample(*n, func() {
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("%v", err)
		}
	})

	// The floor: the same files read and nothing else.
	tFloor := sample(*n, func() {
		for _, ct := range cts {
			readSame(t, ct.PID)
		}
	})
	report(fmt.Sprintf("scrape /metrics, %d running (daemon, REST socket)", *many), tScrape)
	report("  the collector alone, in-process (pids known)", tCollect)
	report("  floor: read the same files (os.ReadFile)", tFloor)
	fmt.Printf("%-56s %8d KiB\n", "  scrape size", size/1024)
}

type staticSource []metrics.Container

func (s staticSource) Containers(context.Context) ([]metrics.Container, error) { return s, nil }
func (s staticSource) Member(context.Context) metrics.Member                   { return metrics.Member{} }

// readSame reads the files the collector reads for a container on a
// cgroup v1 (hybrid) host: its /proc cgroup list, the cgroup files, its
// net/dev.
func readSame(t *harness.Program, pid int) {
	p := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(p + "/cgroup")
	if err != nil {
		t.Fatalf("%v", err)
	}
	dirs := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && parts[1] != "" {
			dirs[parts[1]] = filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
		}
	}
	for ctrl, files := range map[string][]string{
		"cpuacct": {"cpuacct.usage_all"},
		"cpuset":  {"cpuset.effective_cpus"},
		"memory":  {"memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.memsw.usage_in_bytes", "memory.oom_control"},
		"pids":    {"pids.current"},
		"freezer": {"freezer.state"},
		"blkio":   {"blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"},
	} {
		for _, f := range files {
			os.ReadFile(filepath.Join(dirs[ctrl], f))
		}
	}
	os.ReadFile(p + "/net/dev")
}

func sample(n int, f func()) []time.Duration {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		s := time.Now()
		f()
		ds = append(ds, time.Since(s))
	}
	return ds
}

func report(what string, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("%-56s %8.1f ms  (min %.1f, max %.1f)\n", what, ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]))
}
