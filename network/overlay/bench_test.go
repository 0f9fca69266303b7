package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// The overlay's figures (issue 10), each beside its floor measured in the
// same run: throughput and latency container↔container across two members
// against the raw underlay between the same two member namespaces, and the
// time a member takes to reprogram its forwarding after an owner change.
//
//	go test -run '^$' -bench . -benchtime 1x ./network/overlay

// iperf runs an iperf3 server in serverNS and a 5 s client in clientNS
// and returns the receiver's Gbit/s.
func iperf(b *testing.B, l *lab, serverNS, clientNS string, addr net.IP) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", serverNS, "iperf3", "-s", "-1")
	if err := srv.Start(); err != nil {
		b.Fatalf("iperf3 server in %s: %v", serverNS, err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for range 50 { // the server needs a moment to listen
		// iperf3 -J exits 0 on a refused connection, with an "error" field.
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", clientNS, "iperf3", "-c", addr.String(), "-t", "5", "-J").Output()
		var e struct{ Error string }
		if err == nil && json.Unmarshal(out, &e) == nil && e.Error == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 client in %s to %s: %v\n%s", clientNS, addr, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 from %s to %s: no throughput (%v):\n%s", clientNS, addr, err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

var rttRE = regexp.MustCompile(`rtt min/avg/max/mdev = [0-9.]+/([0-9.]+)/`)

// rtt pings 100 times (10 ms apart) and returns the average in ms.
func rtt(b *testing.B, l *lab, ns string, to net.IP) float64 {
	b.Helper()
	out, err := l.try(ns, "ping", "-n", "-q", "-c", "100", "-i", "0.01", to.String())
	if err != nil {
		b.Fatalf("ping %s from %s: %v\n%s", to, ns, err, out)
	}
	m := rttRE.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("ping output without rtt: %s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func twoMembers(b *testing.B) (*lab, *host, *host, *ctr, *ctr) {
	requireHost(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatal("iperf3 is missing (scripts/install.sh installs it)")
	}
	l := newLab(b)
	h1, h2 := l.addHost(1), l.addHost(2)
	c1, c2 := l.addCtr("c1", 11, h1), l.addCtr("c2", 12, h2)
	l.syncAll(c1, c2)
	if err := l.ping(c1, c2.ip); err != nil {
		b.Fatal(err)
	}
	return l, h1, h2, c1, c2
}

func BenchmarkOverlayThroughput(b *testing.B) {
	l, _, h2, _, c2 := twoMembers(b)
	var overlay, raw float64
	for range b.N {
		overlay = iperf(b, l, l.nsName("c2"), l.nsName("c1"), c2.ip)
		raw = iperf(b, l, l.nsName("h2"), l.nsName("h1"), h2.vtep)
	}
	b.ReportMetric(overlay, "overlay-Gbit/s")
	b.ReportMetric(raw, "raw-Gbit/s")
	b.ReportMetric(100*overlay/raw, "%-of-raw")
	fmt.Printf("throughput c1→c2 over the overlay %.2f Gbit/s, raw underlay h1→h2 %.2f Gbit/s: %.0f %% of raw (aim ≥ 90 %%)\n", overlay, raw, 100*overlay/raw)
}

func BenchmarkOverlayLatency(b *testing.B) {
	l, _, h2, _, c2 := twoMembers(b)
	var overlay, raw float64
	for range b.N {
		overlay = rtt(b, l, l.nsName("c1"), c2.ip)
		raw = rtt(b, l, l.nsName("h1"), h2.vtep)
	}
	b.ReportMetric(overlay*1000, "overlay-µs")
	b.ReportMetric(raw*1000, "raw-µs")
	fmt.Printf("round trip c1→c2 over the overlay %.0f µs, raw underlay h1→h2 %.0f µs (ping -c 100 -i 0.01, average)\n", overlay*1000, raw*1000)
}

// BenchmarkSyncAfterMove: a network with 50 endpoints on three members;
// each iteration moves one endpoint between h2 and h3 (an owner change in
// the FSM) and runs Sync on every member, as each does when it applies the
// entry. The figure is the slowest member's Sync: from the moment a member
// knows the new owner until its kernel forwards to the new VTEP.
func BenchmarkSyncAfterMove(b *testing.B) {
	requireHost(b)
	l := newLab(b)
	hs := []*host{l.addHost(1), l.addHost(2), l.addHost(3)}
	st := State{}
	for _, h := range hs {
		st.VTEPs = append(st.VTEPs, h.vtep)
	}
	for i := range 50 {
		st.Endpoints = append(st.Endpoints, Endpoint{MAC: net.HardwareAddr{2, 0x16, 0x3e, 0, 1, byte(i)},
			IP: net.IPv4(198, 51, 100, byte(100+i)).To4(), VTEP: hs[1+i%2].vtep})
	}
	sync := func() time.Duration {
		var slowest time.Duration
		for _, h := range hs {
			l.in(h.ns, func() error {
				t0 := time.Now()
				_, err := h.ovl.Sync(context.Background(), st)
				if d := time.Since(t0); d > slowest {
					slowest = d
				}
				return err
			})
		}
		return slowest
	}
	sync()
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		e := &st.Endpoints[0]
		e.VTEP = hs[1+(i+1)%2].vtep
		total += sync()
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/move-slowest-member")
	fmt.Printf("forwarding after an owner change (50 endpoints, 3 members): slowest member's Sync %.0f µs per move\n", float64(total.Microseconds())/float64(b.N))
}
