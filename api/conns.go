package api

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// The gRPC server serves three kinds of connection; each gets its own
// AuthInfo from connCreds, and authorize (auth.go) decides on it:
//   - localConn: the unix socket (root and the admin group): localAuth;
//   - gatewayConn: the in-process REST gateway: gatewayAuth, the REST
//     caller's identity in metadata;
//   - *tls.Conn: the TCP port, handshake done by tlsMux: TLSInfo.

// localAuth is the AuthInfo of a unix-socket caller.
type localAuth struct{}

func (localAuth) AuthType() string { return "local" }

// gatewayAuth is the AuthInfo of the in-process REST gateway.
type gatewayAuth struct{}

func (gatewayAuth) AuthType() string { return "gateway" }

// connCreds hands each accepted connection its AuthInfo. TLS connections
// arrive with the handshake done (tlsMux), so it does none itself.
type connCreds struct{}

func (connCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	switch c := c.(type) {
	case localConn:
		return c, localAuth{}, nil
	case gatewayConn:
		return c, gatewayAuth{}, nil
	case *tls.Conn:
		return c, credentials.TLSInfo{State: c.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	c.Close()
	return nil, nil, errors.New("api: connection of unknown kind refused")
}

func (connCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("api: server credentials cannot dial")
}

func (connCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "shoal"}
}
func (c connCreds) Clone() credentials.TransportCredentials { return c }
func (connCreds) OverrideServerName(string) error           { return nil }

// gatewayCreds is the REST gateway's side of the in-process connection.
type gatewayCreds struct{ connCreds }

func (gatewayCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, gatewayAuth{}, nil
}
func (c gatewayCreds) Clone() credentials.TransportCredentials { return c }

// localConn marks a unix-socket connection.
type localConn struct{ net.Conn }

// localListener marks the connections of the unix socket.
type localListener struct{ net.Listener }

func (l localListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return localConn{c}, nil
}

// gatewayConn marks the server side of an in-process gateway connection.
type gatewayConn struct{ net.Conn }

// pipeListener is an in-memory listener only this process can dial: the
// REST gateway reaches the gRPC server through it.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.conns <- gatewayConn{server}:
		return client, nil
	case <-p.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error { p.once.Do(func() { close(p.done) }); return nil }

func (p *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "gateway" }

// chanListener is a listener fed by tlsMux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// handshakeTimeout bounds a TLS handshake on the TCP port: a peer that
// connects and says nothing is dropped.
const handshakeTimeout = 10 * time.Second

// tlsMux serves the TCP port: it completes each TLS handshake (in its own
// goroutine, with a deadline) and hands the connection to the gRPC server
// when ALPN chose h2, to the REST server otherwise.
type tlsMux struct {
	ln         net.Listener
	cfg        *tls.Config
	grpc, http *chanListener
	log        *slog.Logger
}

func (m *tlsMux) serve() {
	defer m.grpc.Close()
	defer m.http.Close()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		go m.handshake(c)
	}
}

func (m *tlsMux) handshake(c net.Conn) {
	tc := tls.Server(c, m.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		m.log.Debug("TLS handshake refused", "peer", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		m.grpc.push(tc)
	} else {
		m.http.push(tc)
	}
}
