package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Endpoints says where the daemon listens. Nothing listens without
// authentication: the unix sockets are for root and the admin group, and
// the one TCP port is mutual TLS.
type Endpoints struct {
	// Socket is the unix socket for gRPC, the local admin path.
	Socket string
	// RESTSocket is the unix socket for the REST gateway (same access).
	RESTSocket string
	// AdminGroup owns both sockets (mode 0660); when the group does not
	// exist they are root's alone (0600).
	AdminGroup string
	// Listen is the TCP address of the cluster's mutual-TLS endpoint
	// (members and remote clients): gRPC and REST on one port, as LXD's
	// 8443; TLS is its server config.
	Listen string
	TLS    *tls.Config
	// Metrics, when set, is served at /metrics on the REST socket and the
	// TLS port, to callers the rules table lets read (auth.go).
	Metrics prometheus.Gatherer
	// MetricsListen, when set, is a TCP address of its own for /metrics
	// alone: HTTPS, a certificate of the cluster CA required.
	MetricsListen string
}

// Listener runs the gRPC server and the REST gateway on the endpoints.
type Listener struct {
	grpc    *grpc.Server
	rest    []*http.Server
	gateway *pipeListener
	lns     []net.Listener
	errc    chan error
	addrs   map[string]string
}

// Listen starts serving s on the endpoints. One gRPC server serves every
// listener, so every call, whichever way it came, passes the same
// authentication and authorization (auth.go).
func Listen(ctx context.Context, s *Server, ep Endpoints) (*Listener, error) {
	g := grpc.NewServer(grpc.Creds(connCreds{}), grpc.MaxRecvMsgSize(16<<20),
		// Members ping every 5 s (see peers); a silent peer is dropped
		// after 15 s, which ends its streams.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.ChainUnaryInterceptor(s.authUnary, s.forwardUnary), grpc.ChainStreamInterceptor(s.authStream))
	s.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	go s.watchRevocations(ctx)

	l := &Listener{grpc: g, errc: make(chan error, 8), addrs: map[string]string{}, gateway: newPipeListener()}
	fail := func(err error) (*Listener, error) { l.Close(); return nil, err }
	mode, gid := socketAccess(ep.AdminGroup, s.log)

	unix, err := listenUnix(ep.Socket, mode, gid)
	if err != nil {
		return fail(err)
	}
	l.serveGRPC(localListener{unix}, "socket")
	l.serveGRPC(l.gateway, "gateway")

	mux, err := restGateway(ctx, l.gateway)
	if err != nil {
		return fail(err)
	}
	var metrics http.Handler
	if ep.Metrics != nil {
		metrics = s.metricsHandler(ep.Metrics)
		mux = routeMetrics(mux, metrics)
	}
	if ep.RESTSocket != "" {
		ln, err := listenUnix(ep.RESTSocket, mode, gid)
		if err != nil {
			return fail(err)
		}
		l.serveHTTP(ln, "rest-socket", mux, true)
	}
	if ep.Listen != "" {
		if ep.TLS == nil {
			return fail(errors.New("listen: the TLS endpoint needs the cluster credentials"))
		}
		ln, err := net.Listen("tcp", ep.Listen)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", ep.Listen, err))
		}
		cfg := ep.TLS.Clone()
		// http/1.1 first: a client that speaks both (curl, browsers) gets
		// REST; gRPC clients offer only h2.
		cfg.NextProtos = []string{"http/1.1", "h2"}
		m := &tlsMux{ln: ln, cfg: cfg, grpc: newChanListener(ln.Addr()), http: newChanListener(ln.Addr()), log: s.log}
		l.lns = append(l.lns, ln)
		l.addrs["listen"] = ln.Addr().String()
		go m.serve()
		l.serveGRPC(m.grpc, "listen-grpc")
		l.serveHTTP(m.http, "listen-rest", mux, false)
	}
	if ep.MetricsListen != "" {
		if ep.TLS == nil || metrics == nil {
			return fail(errors.New("listen: the metrics endpoint needs the cluster credentials and a collector"))
		}
		if err := l.listenMetrics(ep.MetricsListen, ep.TLS, metrics); err != nil {
			return fail(err)
		}
	}
	return l, nil
}

// socketAccess returns the mode and group of the local sockets: 0660 and
// the admin group where it exists, else 0600 and root's group.
func socketAccess(group string, log *slog.Logger) (os.FileMode, int) {
	if group == "" {
		return 0o600, 0
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		log.Warn("admin group not found: only root can use the local sockets (scripts/install.sh creates it)", "group", group)
		return 0o600, 0
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0o600, 0
	}
	return 0o660, gid
}

func listenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	// A new socket is srwxr-xr-x: connecting needs write permission, so
	// nobody but root can use it before the chmod below.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func (l *Listener) serveGRPC(ln net.Listener, name string) {
	l.lns = append(l.lns, ln)
	if _, ok := l.addrs[name]; !ok {
		l.addrs[name] = ln.Addr().String()
	}
	go func() {
		if err := l.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			l.errc <- fmt.Errorf("serve gRPC (%s): %w", name, err)
		}
	}()
}

// serveHTTP serves the REST gateway on ln; local marks the unix socket,
// whose callers are local admins.
func (l *Listener) serveHTTP(ln net.Listener, name string, mux http.Handler, local bool) {
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if local {
		srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, localHTTPKey{}, true)
		}
	}
	l.rest = append(l.rest, srv)
	l.lns = append(l.lns, ln)
	l.addrs[name] = ln.Addr().String()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			l.errc <- fmt.Errorf("serve REST (%s): %w", name, err)
		}
	}()
}

// Addr returns the address of a listener ("socket", "rest-socket",
// "listen", "metrics").
func (l *Listener) Addr(name string) string { return l.addrs[name] }

// Err reports the first serve error.
func (l *Listener) Err() <-chan error { return l.errc }

// Close stops serving.
func (l *Listener) Close() {
	for _, srv := range l.rest {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
	}
	for _, ln := range l.lns {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { l.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		l.grpc.Stop()
	}
}

// localHTTPKey marks a request that came through the REST unix socket.
type localHTTPKey struct{}

// gatewayIdentityKey is the metadata the REST gateway uses to tell the
// gRPC server who called it. Only the in-process gateway connection may
// carry it (auth.go); a REST caller cannot set it (restGateway drops it
// from incoming headers).
const gatewayIdentityKey = "shoal-gateway-identity"

// restMarshaler is how REST bodies are read and written: proto field
// names, unknown fields refused.
func restMarshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
}

// restGateway builds the REST gateway: HTTP/JSON routes (proto/http.yaml)
// translated to calls on the in-process gRPC server, carrying the REST
// caller's identity, so REST and gRPC share handlers and authorization.
func restGateway(ctx context.Context, pipe *pipeListener) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, restMarshaler()),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, runtime.MetadataHeaderPrefix+gatewayIdentityKey) {
				return "", false
			}
			return runtime.DefaultHeaderMatcher(h)
		}),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			return metadata.Pairs(gatewayIdentityKey, restIdentity(r))
		}))
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(gatewayCreds{}),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pipe.dial(ctx) }),
	}
	for _, reg := range []func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error{
		shoalv1.RegisterContainerServiceHandlerFromEndpoint,
		shoalv1.RegisterImageServiceHandlerFromEndpoint,
		shoalv1.RegisterStorageServiceHandlerFromEndpoint,
		shoalv1.RegisterNetworkServiceHandlerFromEndpoint,
		shoalv1.RegisterOperationServiceHandlerFromEndpoint,
		shoalv1.RegisterEventServiceHandlerFromEndpoint,
		shoalv1.RegisterClusterServiceHandlerFromEndpoint,
		shoalv1.RegisterProfileServiceHandlerFromEndpoint,
		// Member-to-member transfers: documented like every route, and
		// refused to anyone but a member by the authorization table.
		shoalv1.RegisterMigrationServiceHandlerFromEndpoint,
	} {
		if err := reg(ctx, mux, "passthrough:///gateway", opts); err != nil {
			return nil, fmt.Errorf("register REST gateway: %w", err)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/v1") {
			mux.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}), nil
}

// restIdentity says who made a REST request: "local" through the unix
// socket, "cert:FINGERPRINT" for a verified client certificate on the TLS
// port, "" for nobody (the call is then refused as unauthenticated).
func restIdentity(r *http.Request) string {
	if local, _ := r.Context().Value(localHTTPKey{}).(bool); local {
		return "local"
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return "cert:" + pki.FingerprintOf(r.TLS.VerifiedChains[0][0])
	}
	return ""
}
