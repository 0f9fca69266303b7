package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
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
	ln, err := net.Listen("tcp", bind)
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

// Dial opens a connection to a peer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.client == nil {
		return d.Dial("tcp", string(address))
	}
	return tls.DialWithDialer(d, "tcp", string(address), s.client)
}
