package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// t0 is the fixed clock of the deterministic tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t *testing.T, name string, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(name, now)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, name string, role Role, ips ...net.IP) tls.Certificate {
	t.Helper()
	c, err := IssueSelf(ca, name, role, nil, ips, time.Now())
	if err != nil {
		t.Fatalf("IssueSelf(%q, %s): %v", name, role, err)
	}
	return c
}

var loopback = net.IPv4(127, 0, 0, 1)

// handshakeResult is what each side saw of one real TLS connection.
type handshakeResult struct {
	serverErr   error
	clientErr   error
	serverState tls.ConnectionState
	clientState tls.ConnectionState
}

// handshake runs one TLS connection over loopback (port 0): the server
// handshakes, reads a byte and echoes it; the client handshakes, writes a
// byte and reads the echo. In TLS 1.3 a client learns that the server
// refused its certificate only on that read, so both errors are reported.
func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)

	type srv struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan srv, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- srv{err: err}
			return
		}
		defer raw.Close()
		_ = raw.SetDeadline(deadline)
		conn := tls.Server(raw, server)
		if err := conn.Handshake(); err != nil {
			done <- srv{err: err}
			return
		}
		buf := make([]byte, 1)
		if _, err := conn.Read(buf); err != nil {
			done <- srv{err: err, state: conn.ConnectionState()}
			return
		}
		_, err = conn.Write(buf)
		done <- srv{err: err, state: conn.ConnectionState()}
	}()

	var res handshakeResult
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(deadline)
	conn := tls.Client(raw, client)
	res.clientErr = conn.Handshake()
	if res.clientErr == nil {
		res.clientState = conn.ConnectionState()
		if _, err := conn.Write([]byte{'x'}); err != nil {
			res.clientErr = err
		} else if _, err := conn.Read(make([]byte, 1)); err != nil {
			res.clientErr = err
		}
	}
	_ = raw.Close() // unblock a server still waiting for a byte
	s := <-done
	res.serverErr, res.serverState = s.err, s.state
	return res
}

func wantOK(t *testing.T, r handshakeResult) {
	t.Helper()
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("handshake: server err %v, client err %v; want both nil", r.serverErr, r.clientErr)
	}
}

func wantFail(t *testing.T, r handshakeResult) {
	t.Helper()
	if r.serverErr == nil || r.clientErr == nil {
		t.Fatalf("handshake: server err %v, client err %v; want both to fail", r.serverErr, r.clientErr)
	}
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v: want errors.Is %v", err, target)
	}
}
