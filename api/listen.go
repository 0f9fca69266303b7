package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Endpoints says where the daemon listens.
type Endpoints struct {
	// Socket is the root-only unix socket for gRPC (the admin path).
	Socket string
	// GRPCAddr is an optional TCP address for plain gRPC (no TLS, no
	// authentication: for loopback development only).
	GRPCAddr string
	// Listen is the TCP address of the cluster's mutual-TLS gRPC endpoint
	// (members and remote clients); TLS is its server config.
	Listen string
	TLS    *tls.Config
	// HTTPAddr is an optional TCP address for the REST gateway.
	HTTPAddr string
	// RESTSocket is an optional unix socket for the REST gateway.
	RESTSocket string
}

// Listener runs the gRPC server and the REST gateway.
type Listener struct {
	grpc  *grpc.Server
	tlsg  *grpc.Server
	http  *http.Server
	lns   []net.Listener
	errc  chan error
	addrs map[string]string
}

// Listen starts serving s on the endpoints.
func Listen(ctx context.Context, s *Server, ep Endpoints) (*Listener, error) {
	newServer := func(opts ...grpc.ServerOption) *grpc.Server {
		g := grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(16<<20),
			// Members ping every 5 s (see peers); a silent peer is dropped
			// after 15 s, which ends its streams.
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}))...)
		s.Register(g)
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(g, hs)
		reflection.Register(g)
		return g
	}
	l := &Listener{grpc: newServer(grpc.ChainUnaryInterceptor(s.forwardUnary)), errc: make(chan error, 4), addrs: map[string]string{}}
	fail := func(err error) (*Listener, error) { l.Close(); return nil, err }

	unix, err := listenUnix(ep.Socket, 0o600)
	if err != nil {
		return fail(err)
	}
	l.serveGRPC(l.grpc, unix, "socket")
	if ep.Listen != "" {
		if ep.TLS == nil {
			return fail(errors.New("listen: the TLS endpoint needs the cluster credentials"))
		}
		ln, err := net.Listen("tcp", ep.Listen)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", ep.Listen, err))
		}
		l.tlsg = newServer(grpc.Creds(credentials.NewTLS(ep.TLS)),
			grpc.ChainUnaryInterceptor(authUnary, s.forwardUnary), grpc.ChainStreamInterceptor(authStream))
		l.serveGRPC(l.tlsg, ln, "listen")
	}
	if ep.GRPCAddr != "" {
		ln, err := net.Listen("tcp", ep.GRPCAddr)
		if err != nil {
			return fail(fmt.Errorf("listen gRPC on %s: %w", ep.GRPCAddr, err))
		}
		l.serveGRPC(l.grpc, ln, "grpc")
	}
	if ep.HTTPAddr != "" || ep.RESTSocket != "" {
		mux, err := gateway(ctx, ep.Socket)
		if err != nil {
			return fail(err)
		}
		l.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		if ep.HTTPAddr != "" {
			ln, err := net.Listen("tcp", ep.HTTPAddr)
			if err != nil {
				return fail(fmt.Errorf("listen REST on %s: %w", ep.HTTPAddr, err))
			}
			l.serveHTTP(ln, "http")
		}
		if ep.RESTSocket != "" {
			ln, err := listenUnix(ep.RESTSocket, 0o600)
			if err != nil {
				return fail(err)
			}
			l.serveHTTP(ln, "rest-socket")
		}
	}
	return l, nil
}

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (l *Listener) serveGRPC(g *grpc.Server, ln net.Listener, name string) {
	l.lns = append(l.lns, ln)
	l.addrs[name] = ln.Addr().String()
	go func() { l.errc <- g.Serve(ln) }()
}

func (l *Listener) serveHTTP(ln net.Listener, name string) {
	l.lns = append(l.lns, ln)
	l.addrs[name] = ln.Addr().String()
	go func() {
		if err := l.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			l.errc <- err
		}
	}()
}

// Addr returns the address of a listener ("socket", "grpc", "http").
func (l *Listener) Addr(name string) string { return l.addrs[name] }

// Err reports the first serve error.
func (l *Listener) Err() <-chan error { return l.errc }

// Close stops serving.
func (l *Listener) Close() {
	if l.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l.http.Shutdown(ctx)
		cancel()
	}
	for _, g := range []*grpc.Server{l.grpc, l.tlsg} {
		if g == nil {
			continue
		}
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			g.Stop()
		}
	}
}

// gateway builds the REST gateway, proxying to the gRPC unix socket so that
// REST and gRPC share handlers, including the streaming ones.
func gateway(ctx context.Context, socket string) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}))
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	target := "unix://" + socket
	for _, reg := range []func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error{
		shoalv1.RegisterContainerServiceHandlerFromEndpoint,
		shoalv1.RegisterImageServiceHandlerFromEndpoint,
		shoalv1.RegisterStorageServiceHandlerFromEndpoint,
		shoalv1.RegisterNetworkServiceHandlerFromEndpoint,
		shoalv1.RegisterOperationServiceHandlerFromEndpoint,
		shoalv1.RegisterEventServiceHandlerFromEndpoint,
	} {
		if err := reg(ctx, mux, target, opts); err != nil {
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
