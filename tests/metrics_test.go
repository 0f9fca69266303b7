package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// TestMetrics scrapes a member's /metrics as Prometheus would, with a
// read-only client certificate, on the member's TLS port and on its
// --metrics-addr listener: a container that burned CPU shows CPU time
// within what its cgroup said just before and just after the scrape, its
// memory agrees with the cgroup, Raft, gossip, Go and process metrics are
// there; a client restricted to other containers does not see it; a scrape
// without a certificate is refused on both ports, and the local REST socket
// serves it to admins.
func TestMetrics(t *testing.T) {
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		msg := "metrics tests need: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	const metricsPort = "9443"
	_, ms := harness.StartCluster(t, binDir, 1, "--metrics-addr", ":"+metricsPort)
	n1 := ms[0]
	ensureBusybox(t, n1.Daemon)
	c1 := uniq("met")
	n1.MustShoal("launch", "busybox", c1, "-c", "limits.memory=256MiB")
	t.Cleanup(func() { n1.Shoal("delete", "-f", c1) })
	pid := pidOf(t, n1.Daemon, c1)
	// Burn CPU inside for two seconds.
	n1.MustShoal("exec", c1, "--", "sh", "-c", `end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done`)

	cli := &remoteCLI{t: t, home: t.TempDir(), host: n1.Host}
	cli.add(n1, "scraper", "scr", "--read-only")
	cli.add(n1, "webonly", "web", "--restrict-to", "web-", "--read-only")
	tlsScr := cli.tlsConfig("scr")
	tlsScr.NextProtos = []string{"http/1.1"}
	ip := n1.Host.IP.String()
	urls := map[string]string{
		"listen":       "https://" + net.JoinHostPort(ip, "8443") + "/metrics",
		"metrics-addr": "https://" + net.JoinHostPort(ip, metricsPort) + "/metrics",
	}
	cpuFromCgroup := func() float64 {
		u, _ := strconv.ParseFloat(hostCgroup(t, pid, "cpuacct", "cpuacct.usage_user"), 64)
		s, _ := strconv.ParseFloat(hostCgroup(t, pid, "cpuacct", "cpuacct.usage_sys"), 64)
		return (u + s) / 1e9
	}
	ctLabels := map[string]string{"name": c1, "type": "container"}

	for _, which := range []string{"listen", "metrics-addr"} {
		before := cpuFromCgroup()
		memBefore, _ := strconv.ParseFloat(hostCgroup(t, pid, "memory", "memory.usage_in_bytes"), 64)
		code, body := scrape(t, n1.Host, tlsScr, urls[which])
		after := cpuFromCgroup()
		memAfter, _ := strconv.ParseFloat(hostCgroup(t, pid, "memory", "memory.usage_in_bytes"), 64)
		if code != http.StatusOK {
			t.Fatalf("%s: scrape with a read-only client certificate: %d %s", which, code, body)
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: parse: %v\n%s", which, err, body)
		}
		get := func(name string, labels map[string]string) float64 {
			t.Helper()
			v, ok := sample(mfs, name, labels)
			if !ok {
				t.Fatalf("%s: no %s%v in the scrape", which, name, labels)
			}
			return v
		}
		with := func(k, v string) map[string]string {
			m := map[string]string{k: v}
			for a, b := range ctLabels {
				m[a] = b
			}
			return m
		}
		cpu := get("shoal_cpu_seconds_total", with("mode", "user")) + get("shoal_cpu_seconds_total", with("mode", "system"))
		t.Logf("%s: cpu %.3f s (cgroup %.3f..%.3f)", which, cpu, before, after)
		if cpu < 0.2 {
			t.Errorf("%s: %s used %.3f s of CPU after a 2 s burn", which, c1, cpu)
		}
		if cpu < before-1e-6 || cpu > after+1e-6 {
			t.Errorf("%s: shoal_cpu_seconds_total %.6f outside the cgroup's %.6f..%.6f read around the scrape", which, cpu, before, after)
		}
		used := get("shoal_memory_MemTotal_bytes", ctLabels) - get("shoal_memory_MemFree_bytes", ctLabels)
		lo, hi := math.Min(memBefore, memAfter), math.Max(memBefore, memAfter)
		if tol := 2.0 * (1 << 20); used < lo-tol || used > hi+tol {
			t.Errorf("%s: memory used (MemTotal-MemFree) %.0f, cgroup memory.usage_in_bytes %.0f..%.0f", which, used, lo, hi)
		}
		if total := get("shoal_memory_MemTotal_bytes", ctLabels); total != 256<<20 {
			t.Errorf("%s: MemTotal %.0f, want the 256MiB limit", which, total)
		}
		if rss := get("shoal_memory_RSS_bytes", ctLabels); rss <= 0 || rss > used {
			t.Errorf("%s: RSS %.0f (used %.0f)", which, rss, used)
		}
		if procs := get("shoal_procs_total", ctLabels); procs < 1 {
			t.Errorf("%s: procs %v", which, procs)
		}
		get("shoal_network_receive_bytes_total", with("device", "eth0"))
		get("shoal_network_transmit_bytes_total", with("device", "eth0"))
		if v := get("shoal_containers", map[string]string{"state": "running"}); v != 1 {
			t.Errorf("%s: running containers %v", which, v)
		}
		if v := get("shoal_raft_leader", nil); v != 1 {
			t.Errorf("%s: raft leader %v on a one-member cluster", which, v)
		}
		if v := get("shoal_raft_applied_index", nil); v < 1 {
			t.Errorf("%s: applied index %v", which, v)
		}
		if term, commit := get("shoal_raft_term", nil), get("shoal_raft_commit_index", nil); term < 1 || commit < get("shoal_raft_applied_index", nil) {
			t.Errorf("%s: raft term %v, commit index %v (applied %v)", which, term, commit, get("shoal_raft_applied_index", nil))
		}
		if v := get("shoal_gossip_members_alive", nil); v != 1 || get("shoal_gossip_members", nil) != 1 {
			t.Errorf("%s: gossip alive %v", which, v)
		}
		if h := mfs["shoal_raft_apply_duration_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
			t.Errorf("%s: no Raft apply latency samples", which)
		}
		get("go_goroutines", nil)
		get("process_resident_memory_bytes", nil)
	}

	// A client restricted to web-* sees member figures, not this container.
	tlsWeb := cli.tlsConfig("web")
	tlsWeb.NextProtos = []string{"http/1.1"}
	code, body := scrape(t, n1.Host, tlsWeb, urls["listen"])
	if code != http.StatusOK || !strings.Contains(body, "shoal_raft_leader") || strings.Contains(body, c1) {
		t.Errorf("restricted client's scrape: %d, names %s: %v", code, c1, strings.Contains(body, c1))
	}

	// No certificate: refused on the TLS port (401), and the metrics
	// listener's handshake fails.
	caPEM, err := os.ReadFile(filepath.Join(cli.home, ".config", "shoal", "remotes", "scr", pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	anon := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}
	if code, body := scrape(t, n1.Host, anon, urls["listen"]); code != http.StatusUnauthorized || strings.Contains(body, "shoal_cpu") {
		t.Errorf("scrape without a certificate on the TLS port: %d %q, want 401", code, body)
	}
	if code, body := scrape(t, n1.Host, anon, urls["metrics-addr"]); code != 0 {
		t.Errorf("scrape without a certificate on --metrics-addr: %d %q, want the handshake refused", code, body)
	}

	// The local admin path (after the restricted scrape: a grant's filter
	// must not outlive its request).
	resp, err := harness.UnixHTTP(n1.RESTSocket()).Get("http://rest/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if _, ok := sample(mfs, "shoal_cpu_seconds_total", ctLabels); resp.StatusCode != http.StatusOK || err != nil || !ok {
		var cpu []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "shoal_cpu") {
				cpu = append(cpu, l)
			}
		}
		t.Errorf("REST socket /metrics: %d (parse: %v), no CPU time of %s:\n%s", resp.StatusCode, err, c1, strings.Join(cpu, "\n"))
	}
}

// scrape GETs url from inside host with cfg; code 0 when the request
// failed (a refused handshake), with the error as body.
func scrape(t *testing.T, host *netns.Host, cfg *tls.Config, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return host.Dial(ctx, network, addr)
		}}}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Sprintf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// sample finds one counter or gauge by name and labels.
func sample(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
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
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}
