package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
)

// TestAddressesUniqueUnderConcurrentCreates sends 500 creates at once
// through all three members of a cluster and kills the leader (SIGKILL)
// while they run. Whatever got created, no address and no MAC is given
// twice — in the FSM, which every member reports alike, and in the
// members' dnsmasq hosts files, where each member pins exactly its own
// containers and no address appears on two members.
func TestAddressesUniqueUnderConcurrentCreates(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	// A /16: room for all of them. Outside 10/8, where each member's
	// default bridge takes a /24 derived from its random name (10.77.0.0/16
	// once met one: 1 run in 256).
	const def = "ipam"
	ms[0].MustShoal("network", "create", def, "--type", "overlay", "ipv4.address=172.29.0.1/16")
	ms[0].MustShoal("image", "build", "busybox")
	for _, m := range ms { // every member has the image before the rush
		ms[0].MustShoal("init", "busybox", "warm-"+m.Host.Name, "--target", m.Host.Name, "--network", def)
	}
	clients := make([]*client.Client, len(ms))
	for i, m := range ms {
		c, err := client.Dial(m.Socket)
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	// Deleting hundreds of containers one CLI call at a time would take the
	// harness minutes: delete them in parallel first.
	t.Cleanup(func() {
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		resp, err := clients[1].Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
		if err != nil {
			t.Logf("list for cleanup: %v", err)
			return
		}
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for i, ct := range resp.GetContainers() {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c := clients[1+i%2]
				if _, err := c.Containers.DeleteContainer(ctx, &shoalv1.DeleteContainerRequest{Name: ct.GetContainer().GetName(), Force: true}); err != nil {
					t.Errorf("delete %s: %v", ct.GetContainer().GetName(), err)
				}
			}()
		}
		wg.Wait()
	})
	leader := -1
	for i, m := range ms {
		if ms[0].Members()[m.Host.Name].Role == "leader" {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader among the members")
	}

	const total, inFlight, killAt = 500, 24, 150
	var done, created, failed atomic.Int64
	var killed sync.Once
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	errs := map[string]int{}
	var errMu sync.Mutex
	start := time.Now()
	for i := range total {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := clients[i%len(clients)]
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			err := createWait(ctx, c, fmt.Sprintf("ip%03d", i))
			if err == nil {
				created.Add(1)
			} else {
				failed.Add(1)
				msg := strings.ReplaceAll(err.Error(), fmt.Sprintf("%q", fmt.Sprintf("ip%03d", i)), "NAME")
				errMu.Lock()
				errs[msg]++
				errMu.Unlock()
			}
			if done.Add(1) == killAt {
				killed.Do(func() {
					t.Logf("killing the leader %s after %d creates (%s)", ms[leader].Host.Name, killAt, time.Since(start).Round(time.Millisecond))
					ms[leader].Kill()
				})
			}
		}()
	}
	wg.Wait()
	t.Logf("%d creates in %s: %d succeeded, %d failed", total, time.Since(start).Round(time.Millisecond), created.Load(), failed.Load())
	for msg, n := range errs {
		t.Logf("  %d× %s", n, msg)
	}
	if created.Load() < total/2 {
		t.Errorf("only %d of %d creates succeeded with one member of three down", created.Load(), total)
	}
	for msg := range errs {
		if strings.Contains(msg, "already exists") || strings.Contains(msg, "no free address") {
			t.Errorf("a create failed with %q: each name is created once, on a /16", msg)
		}
	}
	ms[leader].Start()
	for _, m := range ms {
		m.WaitFor(m.Host.Name+" online", 60*time.Second, func() bool { return ms[0].Members()[m.Host.Name].Status == "online" })
	}
	// Once online, the restarted member answers calls the others forward
	// to it (a container it owns), without waiting out a reconnect backoff.
	back := ms[leader].Host.Name
	other := ms[(leader+1)%len(ms)]
	other.WaitFor(back+" to answer a forwarded call", 5*time.Second, func() bool {
		_, _, code := other.Shoal("info", "warm-"+back)
		return code == 0
	})

	// The FSM, as each member reports it: the same containers, every NIC
	// address and MAC unique.
	var records []fsmNIC
	for i, m := range ms {
		var got []fsmNIC
		m.WaitFor(m.Host.Name+" to report the same containers", 60*time.Second, func() bool {
			got = nicsOf(t, m)
			return i == 0 || len(got) == len(records)
		})
		if i == 0 {
			records = got
		}
	}
	if n := int64(len(records)) - int64(len(ms)); n < created.Load() {
		t.Errorf("the cluster records %d created containers, but %d creates succeeded", n, created.Load())
	}
	ips, macs := map[string]string{}, map[string]string{}
	for _, r := range records {
		if o, ok := ips[r.IP]; ok || r.IP == "" {
			t.Errorf("address %q of %s is also %s's", r.IP, r.Container, o)
		}
		if o, ok := macs[r.MAC]; ok {
			t.Errorf("MAC %s of %s is also %s's", r.MAC, r.Container, o)
		}
		ips[r.IP], macs[r.MAC] = r.Container, r.Container
	}

	// Each member's dnsmasq pins its own containers, and only those; no
	// address is pinned on two members.
	pinnedOn := map[string]string{}
	for _, m := range ms {
		want := map[string]string{} // MAC → IP
		for _, r := range records {
			if r.Member == m.Host.Name {
				want[r.MAC] = r.IP
			}
		}
		file := filepath.Join(m.StateDir, "networks", def, "dnsmasq.hosts")
		var got map[string]string
		m.WaitFor(m.Host.Name+"'s hosts file to pin its "+fmt.Sprint(len(want))+" containers", 60*time.Second, func() bool {
			got = hostsFile(t, file)
			return fmt.Sprint(got) == fmt.Sprint(want)
		})
		for mac, ip := range got {
			if o, ok := pinnedOn[ip]; ok {
				t.Errorf("%s is pinned on %s and on %s (MAC %s)", ip, o, m.Host.Name, mac)
			}
			pinnedOn[ip] = m.Host.Name
		}
		t.Logf("%s pins %d addresses", m.Host.Name, len(got))
	}
	if len(pinnedOn) != len(records) {
		t.Errorf("the members pin %d addresses, the cluster records %d", len(pinnedOn), len(records))
	}
}

// createWait creates a stopped busybox container through c and waits for
// the operation to finish.
func createWait(ctx context.Context, c *client.Client, name string) error {
	resp, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: name, Image: "busybox", NoStart: true, Network: "ipam"})
	if err != nil {
		return client.Convert(err)
	}
	op, err := c.Wait(ctx, resp.GetOperation(), nil)
	if err != nil {
		return client.Convert(err)
	}
	return client.OperationError(op)
}

// fsmNIC is one NIC of a container as the cluster records it.
type fsmNIC struct {
	Container, Member, IP, MAC string
}

// nicsOf lists every container NIC as member m reports it.
func nicsOf(t *testing.T, m *harness.Member) []fsmNIC {
	t.Helper()
	out, errOut, code := m.Shoal("list", "--format", "json")
	if code != 0 {
		t.Logf("%s: shoal list: %s", m.Host.Name, errOut)
		return nil
	}
	var resp struct {
		Containers []struct {
			Container struct {
				Name, Node string
				Nics       []struct{ Name, Ipv4, Hwaddr string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("%s: shoal list --format json: %v", m.Host.Name, err)
	}
	var nics []fsmNIC
	for _, c := range resp.Containers {
		for _, n := range c.Container.Nics {
			nics = append(nics, fsmNIC{Container: c.Container.Name + "/" + n.Name, Member: c.Container.Node, IP: n.Ipv4, MAC: strings.ToLower(n.Hwaddr)})
		}
	}
	return nics
}

// hostsFile reads a dnsmasq --dhcp-hostsfile: MAC → IP.
func hostsFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		out[strings.ToLower(f[0])] = f[1]
	}
	return out
}
