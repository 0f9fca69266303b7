package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func TestMetricsRule(t *testing.T) {
	s := &Server{}
	for _, tc := range []struct {
		id   identity
		want codes.Code
	}{
		{identity{}, codes.Unauthenticated},
		{identity{kind: callerLocal, name: "local"}, codes.OK},
		{identity{kind: callerMember, name: "n2"}, codes.OK},
		{identity{kind: callerClient, name: "lap"}, codes.OK},
		{identity{kind: callerClient, name: "ro", grant: &shoalv1.Grant{ReadOnly: true}}, codes.OK},
		{identity{kind: callerClient, name: "web", grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}, ReadOnly: true}}, codes.OK},
	} {
		if got := status.Code(s.authorize(tc.id, metricsPath, nil)); got != tc.want {
			t.Errorf("%s scraping: %v, want %v", tc.id, got, tc.want)
		}
	}
}

// An anonymous request is refused before anything is gathered; a
// restricted client's scrape keeps member series and its own containers'.
func TestMetricsHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	cpu := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shoal_cpu_seconds_total"}, []string{"name", "type"})
	cpu.WithLabelValues("web-1", "container").Set(1)
	cpu.WithLabelValues("db-1", "container").Set(2)
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_raft_leader"})
	reg.MustRegister(cpu, up)

	s := &Server{}
	rec := httptest.NewRecorder()
	s.metricsHandler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, metricsPath, nil))
	if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "shoal_") {
		t.Fatalf("anonymous scrape: %d %q", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	s.metricsHandler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, metricsPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", rec.Code)
	}

	mfs, err := grantedGatherer{g: reg, grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}}}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n, _ := containerLabel(m)
			names = append(names, mf.GetName()+"/"+n)
		}
	}
	if got := strings.Join(names, " "); got != "shoal_cpu_seconds_total/web-1 shoal_raft_leader/" {
		t.Fatalf("restricted to web-: %s", got)
	}
}
