package api

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// metricsPath is the Prometheus endpoint: an HTTP route beside the REST
// gateway's, authorized by its entry in the rules table (auth.go).
const metricsPath = "/metrics"

// metricsHandler serves metricsPath from g. The caller is authenticated
// as on the gRPC port (local on the REST socket; else a verified
// certificate checked against the members and the trust store) and
// authorized by the rules table; a client restricted to container name
// prefixes sees only its containers' series.
func (s *Server) metricsHandler(g prometheus.Gatherer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		id, err := s.httpIdentity(r)
		if err == nil {
			err = s.authorize(id, metricsPath, nil)
		}
		if err != nil {
			st := status.Convert(err)
			http.Error(w, st.Message(), runtime.HTTPStatusFromCode(st.Code()))
			return
		}
		var from prometheus.Gatherer = g
		if gr := id.grant; gr != nil && len(gr.GetContainerPrefixes()) > 0 {
			from = grantedGatherer{g: g, grant: gr}
		}
		promhttp.HandlerFor(from, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
	})
}

// httpIdentity says who made a plain HTTP request (not through the
// gateway): a local admin on the REST socket, the holder of a verified
// certificate on a TLS listener, or nobody.
func (s *Server) httpIdentity(r *http.Request) (identity, error) {
	if local, _ := r.Context().Value(localHTTPKey{}).(bool); local {
		return identity{kind: callerLocal, name: "local"}, nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return identity{}, nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	return s.certIdentity(r.Context(), pki.FingerprintOf(leaf), leaf)
}

// grantedGatherer drops the series of containers outside a grant.
type grantedGatherer struct {
	g     prometheus.Gatherer
	grant *shoalv1.Grant
}

func (gg grantedGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := gg.g.Gather()
	for _, mf := range mfs {
		kept := mf.Metric[:0]
		for _, m := range mf.Metric {
			if name, ok := containerLabel(m); !ok || granted(gg.grant, name) {
				kept = append(kept, m)
			}
		}
		mf.Metric = kept
	}
	return mfs, err
}

// containerLabel returns a series' container name (label name, with
// type="container").
func containerLabel(m *dto.Metric) (string, bool) {
	var name string
	var isContainer bool
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "name":
			name = l.GetValue()
		case "type":
			isContainer = l.GetValue() == "container"
		}
	}
	return name, isContainer
}

// listenMetrics opens the --metrics-addr listener: HTTPS that only serves
// metricsPath, with the handshake requiring a certificate of the cluster
// CA (the handler then checks it as on any listener).
func (l *Listener) listenMetrics(addr string, cfg *tls.Config, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (metrics): %w", addr, err)
	}
	cfg = cfg.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.NextProtos = []string{"http/1.1"}
	mux := http.NewServeMux()
	mux.Handle(metricsPath, h)
	l.serveHTTP(tls.NewListener(ln, cfg), "metrics", mux, false)
	return nil
}

// routeMetrics sends metricsPath to h and everything else to rest.
func routeMetrics(rest, h http.Handler) http.Handler {
	if h == nil {
		return rest
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == metricsPath {
			h.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}
