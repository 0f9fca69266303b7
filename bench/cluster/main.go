// Command cluster measures Shoal's cluster figures on a three-node cluster of
// simulated hosts (network namespaces, tests/netns): placements committed
// per second with concurrent clients, the time from a leader's kill -9 to
// the next successful write and to the next completed create, and how long until gossip has the dead node
// marked offline. It prints figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

func main() {
	// Each create allocates eth0's address on the default network, a /24:
	// 253 addresses for the bench's creates and the failover rounds'.
	creates := flag.Int("creates", 200, "containers to place (created with --no-start; at most ~250 fit the default network)")
	clients := flag.Int("clients", 16, "concurrent clients")
	rounds := flag.Int("failovers", 10, "leader kills to measure")
	through := flag.String("through", "all", "send creates through all members or only the leader")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	_, ms := harness.StartCluster(t, bin, 3, "--offline-after", "0s")
	ms[0].MustShoal("image", "build", "busybox")
	cs := make([]*client.Client, len(ms))
	var err error
	for i, m := range ms {
		if cs[i], err = client.Dial(m.Socket); err != nil {
			t.Fatalf("%v", err)
		}
	}
	netns.WaitFor(t, "the image on every member", 30*time.Second, func() bool {
		for _, c := range cs {
			if _, err := c.Images.GetImage(context.Background(), &shoalv1.GetImageRequest{Image: "busybox"}); err != nil {
				return false
			}
		}
		return true
	})
	fmt.Printf("# Shoal cluster figures: 3 members, each in its own network namespace on this machine\n")

	// Placements: concurrent creates that only place (--no-start), through
	// every member (followers forward to the leader).
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var ops sync.Map
	start := time.Now()
	for w := 0; w < *clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(*creates) {
					return
				}
				c := cs[int(i)%len(cs)]
				if *through == "leader" {
					c = cs[0] // n1 bootstraps and leads until a failover
				}
				r, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: fmt.Sprintf("p%d", i), Image: "busybox", NoStart: true})
				if err != nil {
					t.Fatalf("create p%d: %v", i, err)
				}
				ops.Store(i, r.GetOperation())
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	fmt.Printf("%-58s %8.0f /s  (%d creates, %d clients, %s)\n", "placements committed through the cluster", float64(*creates)/took.Seconds(), *creates, *clients, took.Round(time.Millisecond))
	perNode := map[string]int{}
	list, err := cs[0].Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, ct := range list.GetContainers() {
		perNode[ct.GetContainer().GetNode()]++
	}
	fmt.Printf("%-58s %v\n", "  spread over the members", perNode)
	// Let the owners finish making them, then remove them (untimed).
	ops.Range(func(k, v any) bool {
		_, _ = cs[0].Wait(ctx, v.(*shoalv1.Operation), nil)
		return true
	})
	for i := 0; i < *creates; i++ {
		if _, err := cs[i%len(cs)].Containers.DeleteContainer(ctx, &shoalv1.DeleteContainerRequest{Name: fmt.Sprintf("p%d", i), Force: true}); err != nil {
			t.Fatalf("delete p%d: %v", i, err)
		}
	}

	// Failover: kill -9 the leader, time the next write on a survivor.
	var writes, failCreates, offline, slowest []time.Duration
	for r := 0; r < *rounds; r++ {
		leader := -1
		for i, m := range ms {
			if ms[0].Members()[m.Host.Name].Role == "leader" {
				leader = i
			}
		}
		if leader < 0 {
			t.Fatalf("no leader")
		}
		survivor := (leader + 1) % len(ms)
		other := (leader + 2) % len(ms)
		killed := time.Now()
		ms[leader].Kill()
		// Meanwhile, through the other survivor: the next create that
		// completes (placed, recorded, made by its owner).
		created := make(chan time.Duration, 1)
		go func() {
			for i := 0; ; i++ {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				name := fmt.Sprintf("fc%d-%d", r, i)
				op, err := cs[other].Containers.CreateContainer(cctx, &shoalv1.CreateContainerRequest{Name: name, Image: "busybox", NoStart: true})
				if err == nil {
					_, err = cs[other].Wait(cctx, op.GetOperation(), nil)
				}
				cancel()
				if err == nil {
					created <- time.Since(killed)
					return
				}
				if time.Since(killed) > time.Minute {
					t.Fatalf("no create completed a minute after the leader died: %v", err)
				}
			}
		}()
		var worst time.Duration
		for i := 0; ; i++ {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			t0 := time.Now()
			_, err := cs[survivor].Images.CreateImageAlias(cctx, &shoalv1.CreateImageAliasRequest{Alias: fmt.Sprintf("f%d-%d", r, i), Image: "busybox"})
			cancel()
			worst = max(worst, time.Since(t0))
			if err == nil {
				break
			}
			if time.Since(killed) > time.Minute {
				t.Fatalf("no write accepted a minute after the leader died: %v", err)
			}
		}
		writes = append(writes, time.Since(killed))
		slowest = append(slowest, worst)
		failCreates = append(failCreates, <-created)
		name := ms[leader].Host.Name
		for ms[survivor].Members()[name].Status != "offline" {
			if time.Since(killed) > time.Minute {
				t.Fatalf("%s never marked offline", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		offline = append(offline, time.Since(killed))
		ms[leader].Start()
		for ms[survivor].Members()[name].Status != "online" {
			time.Sleep(50 * time.Millisecond)
		}
		if cs[leader], err = client.Dial(ms[leader].Socket); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if *rounds == 0 {
		return
	}
	report("leader kill -9 → next successful write (median)", writes)
	report("  longest single API call meanwhile (deadline 2s)", slowest)
	report("leader kill -9 → next completed create, placement included", failCreates)
	report("leader kill -9 → marked offline by gossip (no grace)", offline)
}

func report(what string, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	med := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	fmt.Printf("%-58s %8.0f ms  (min %.0f, max %.0f, n=%d)\n", what, ms(med), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
