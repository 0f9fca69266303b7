package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// streamLayer is Raft's TCP transport, optionally inside mutual TLS.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind, advertise string, server, client *tls.Config) (*streamLayer, error) {
	if (server == nil) != (client == nil) {
		return nil, fmt.Errorf("raft transport: TLS needs both a server and a client config")
	}
	// Accepted connections inherit TCP_USER_TIMEOUT from the listener.
	ln, err := (&net.ListenConfig{Control: setUserTimeout}).Listen(context.Background(), "tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", bind, err)
	}
	s := &streamLayer{Listener: ln, advertise: ln.Addr(), client: client}
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil || a.IP == nil || a.IP.IsUnspecified() || a.Port == 0 {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: not a dialable host:port", advertise)
		}
		s.advertise = a
	} else if a := ln.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft bind address %q is not dialable by peers: set an advertise address", bind)
	}
	if server != nil {
		s.Listener = tls.NewListener(ln, server)
	}
	return s, nil
}

// Addr is the address peers dial.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// dialAttempt bounds one connection attempt inside Dial. A member on the
// same network answers a SYN in well under a millisecond; one that does
// not within this is unreachable right now, and a fresh SYN is sent rather
// than waiting on the kernel's SYN retransmission (1 s, then 3 s, 7 s...).
const dialAttempt = 250 * time.Millisecond

// userTimeout is how long data a member sent may stay unacknowledged
// before the kernel drops the connection (TCP_USER_TIMEOUT). Without it, a
// request in flight when a link is cut waits on TCP's retransmission
// backoff, which doubles from 200 ms: after a cut of a few seconds the
// next retry can come seconds after the link is back, and Raft's entries
// with it. With it, the connection dies a second into the cut and Raft
// redials, and a redial gets through as soon as the link heals.
const userTimeout = time.Second

// Dial opens a connection to a peer within timeout, the way a partition
// heals fastest: attempts of dialAttempt each, so the first one after the
// link is back gets through; a refusal (the member is up but shoald is
// not) ends it at once. The connection carries TCP_USER_TIMEOUT.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		attempt := min(dialAttempt, time.Until(deadline))
		if attempt <= 0 {
			return nil, fmt.Errorf("raft transport: dial %s: no answer within %s", address, timeout)
		}
		d := &net.Dialer{Timeout: attempt, Control: setUserTimeout}
		c, err := d.Dial("tcp", string(address))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return nil, err
		}
		if s.client == nil {
			return c, nil
		}
		cfg := s.client
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(string(address))
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		_ = tc.SetDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft transport: TLS with %s: %w", address, err)
		}
		_ = tc.SetDeadline(time.Time{})
		return tc, nil
	}
}

// setUserTimeout sets TCP_USER_TIMEOUT on a socket before it connects.
func setUserTimeout(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}
