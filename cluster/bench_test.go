package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// BenchmarkPropose measures one replicated write on a one-node cluster
// (Raft apply with the log fsynced by raft-boltdb).
func BenchmarkPropose(b *testing.B) {
	ctx := context.Background()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: b.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: fmt.Sprintf("c%d", i)}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocate: container creates that each allocate an address in
// their entry, 32 at a time through the leader of a one-node cluster, on
// a /16 that fills as it goes; beside them, in the same run, the same
// creates without a NIC (the Raft floor). Reports creates per second.
func BenchmarkAllocate(b *testing.B) {
	ctx := context.Background()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: b.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Propose(ctx, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{Name: "app", Type: "overlay", Vni: 1, Ipv4Cidr: "10.42.0.1/16"}}); err != nil {
		b.Fatal(err)
	}
	run := func(prefix string, nic bool) float64 {
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := range b.N {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ct := &shoalv1.Container{Name: fmt.Sprintf("%s%d", prefix, i), Node: "n1"}
				if nic {
					ct.Nics = []*shoalv1.NIC{{Name: "eth0", Network: "app", Hwaddr: fmt.Sprintf("02:%02x:%02x:%02x:%02x:01", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))}}
				}
				if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: ct}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		return float64(b.N) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	floor := run("plain", false)
	alloc := run("alloc", true)
	b.StopTimer()
	b.ReportMetric(alloc, "allocations/s")
	b.ReportMetric(floor, "creates-without-nic/s")
	fmt.Printf("%d creates with an address allocated in the entry: %.0f/s; the same creates without a NIC: %.0f/s\n", b.N, alloc, floor)
}
