package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// TestAddressesUniqueAcrossLeaderFailover: 500 creates race through all
// three members of a real Raft cluster (hashicorp/raft over loopback TCP)
// while the leader is killed midway. Every container that exists has an
// address, no address is held twice, and every member — the killed one
// too, once it is back — holds the same allocation.
func TestAddressesUniqueAcrossLeaderFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	binds := []string{"127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"}
	cfg := func(i int, join bool) Config {
		return Config{NodeName: fmt.Sprintf("n%d", i+1), DataDir: dirs[i], BindAddr: binds[i], Join: join}
	}
	members := startMembers(t, ctx, 3, cfg)
	if err := members[0].Propose(ctx, &shoalv1.NetworkCreateCommand{Network: &shoalv1.Network{
		Name: "app", Type: "overlay", Vni: 1, Ipv4Cidr: "10.42.0.1/22"}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards members
	live := func() []*Cluster {
		mu.Lock()
		defer mu.Unlock()
		var out []*Cluster
		for _, m := range members {
			if m != nil {
				out = append(out, m)
			}
		}
		return out
	}
	// create proposes through whichever member it is given, as a client
	// whose calls land on random members would; a follower's ErrNotLeader
	// or a lost leader sends it to another; a create that landed before the
	// error came back shows as ErrExists on the retry.
	create := func(name string) error {
		cmd := &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n1",
			Nics: []*shoalv1.NIC{{Name: "eth0", Network: "app", Hwaddr: fmt.Sprintf("02:00:00:00:%02x:%02x", len(name), rand.IntN(256))}}}}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			ms := live()
			m := ms[rand.IntN(len(ms))]
			if l := leaderOf(ms); l != nil {
				m = l
			}
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			err := m.Propose(pctx, cmd)
			pcancel()
			switch {
			case err == nil, errors.Is(err, ErrExists):
				return nil
			case errors.Is(err, ErrInUse): // a random MAC clashed: draw another
				cmd.Container.Nics[0].Hwaddr = fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", rand.IntN(256), rand.IntN(256), rand.IntN(256), rand.IntN(256))
			}
			time.Sleep(10 * time.Millisecond)
		}
		return fmt.Errorf("create %s: no member took it within 60 s", name)
	}

	const total = 500
	var done atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, total)
	sem := make(chan struct{}, 32)
	for i := range total {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := create(fmt.Sprintf("c%03d", i)); err != nil {
				errs <- err
			}
			done.Add(1)
		}()
		if i == total/2 {
			// Kill the leader with creates in flight.
			mu.Lock()
			for j, m := range members {
				if m.IsLeader() {
					t.Logf("killing leader %s after %d creates were started", m.NodeName(), i)
					binds[j] = m.Addr()
					m.Close()
					members[j] = nil
					go func(j int) { // and bring it back later
						time.Sleep(2 * time.Second)
						back, err := Open(ctx, cfg(j, true))
						if err != nil {
							errs <- fmt.Errorf("restart n%d: %w", j+1, err)
							return
						}
						mu.Lock()
						members[j] = back
						mu.Unlock()
					}(j)
					break
				}
			}
			mu.Unlock()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "all three members back", 30*time.Second, func() bool { return len(live()) == 3 })

	// Every member converges on the same allocation, unique, complete.
	var want map[string]string
	for _, m := range live() {
		waitFor(t, m.NodeName()+" to hold all containers", 30*time.Second, func() bool {
			return len(m.FSM().Containers()) == total
		})
		got := map[string]string{}
		holder := map[string]string{}
		for _, ct := range m.FSM().Containers() {
			ip := ct.GetNics()[0].GetIpv4()
			if ip == "" {
				t.Fatalf("%s: container %s has no address", m.NodeName(), ct.GetName())
			}
			if other, dup := holder[ip]; dup {
				t.Fatalf("%s: address %s given to both %s and %s", m.NodeName(), ip, other, ct.GetName())
			}
			holder[ip] = ct.GetName()
			got[ct.GetName()] = ip
		}
		if want == nil {
			want = got
			continue
		}
		for name, ip := range want {
			if got[name] != ip {
				t.Fatalf("%s has %s at %s, another member at %s", m.NodeName(), name, got[name], ip)
			}
		}
	}
}
