package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// TestSessionAcceptsOnlyItsClient dials a server holding a session's
// server pair with the session's client pair (accepted), with a client
// certificate of the cluster CA and with another session's client
// (both refused) — what CRIU's page server does with them.
func TestSessionAcceptsOnlyItsClient(t *testing.T) {
	now := time.Now()
	s, err := NewSession("move c1", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewSession("move c2", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, "prod")
	pair := func(k KeyPairPEM) tls.Certificate {
		c, err := tls.X509KeyPair(k.CertPEM, k.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("session CA PEM does not parse")
	}
	serverCfg := &tls.Config{Certificates: []tls.Certificate{pair(s.Server)}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		name   string
		client tls.Certificate
		ok     bool
	}{
		{"the session's client", pair(s.Client), true},
		{"a cluster client certificate", cl.client, false},
		{"another session's client", pair(other.Client), false},
		{"the session's server pair as a client", pair(s.Server), false},
	} {
		a, b := net.Pipe()
		errc := make(chan error, 1)
		go func() {
			srv := tls.Server(a, serverCfg)
			errc <- srv.Handshake()
			srv.Close()
		}()
		c := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{tc.client}, RootCAs: pool,
			ServerName: "move c1 server", InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Handshake()
		c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict arrives after the client's handshake
		c.Close()
		if err := <-errc; (err == nil) != tc.ok {
			t.Errorf("%s: server handshake error %v, want accepted=%v", tc.name, err, tc.ok)
		}
	}
}
