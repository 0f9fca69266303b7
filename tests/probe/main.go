// Command probe tries, as whoever runs it, to make a Shoal daemon act
// through each endpoint it is given, every way an intruder might: plain
// HTTP, plain gRPC, TLS without a client certificate (REST and gRPC, a
// privileged create), and Raft (AppendEntries with a huge term, in plain
// TCP and in TLS). It prints one line per attempt and, with -expect
// refused, exits 1 if any attempt was answered as a success; with -expect
// ok, exits 1 unless every attempt succeeded. The security e2e tests run
// it as unprivileged users and from inside containers.
//
// Targets: grpc+unix:PATH, rest+unix:PATH, unix:PATH (both), tcp:HOST:PORT.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

const timeout = 3 * time.Second

// A privileged container is root on the host: the create intruders want.
var pwn = `{"name":"pwn-probe","image":"busybox","config":{"security.privileged":"true"}}`

func main() {
	expect := flag.String("expect", "refused", "refused (no attempt may succeed) or ok (every attempt must)")
	flag.Parse()
	if *expect != "refused" && *expect != "ok" {
		fmt.Fprintln(os.Stderr, "probe: -expect: refused or ok")
		os.Exit(2)
	}
	var acted, refused int
	for _, t := range flag.Args() {
		for _, a := range attempts(t) {
			err := a.try()
			if err == nil {
				acted++
				fmt.Printf("%s %s: ACTED\n", t, a.name)
			} else {
				refused++
				fmt.Printf("%s %s: refused (%s)\n", t, a.name, oneLine(err))
			}
		}
	}
	fmt.Printf("probe: %d acted, %d refused\n", acted, refused)
	if (*expect == "refused" && acted > 0) || (*expect == "ok" && refused > 0) || acted+refused == 0 {
		os.Exit(1)
	}
}

type attempt struct {
	name string
	try  func() error
}

func attempts(target string) []attempt {
	kind, addr, _ := strings.Cut(target, ":")
	switch kind {
	case "grpc+unix":
		return []attempt{{"grpc-list", func() error { return grpcList("unix://"+addr, insecure.NewCredentials()) }}}
	case "rest+unix":
		return []attempt{{"rest-list", func() error { return restGet(unixClient(addr), "http://shoal/v1/containers") }}}
	case "unix":
		return append(attempts("grpc+unix:"+addr), attempts("rest+unix:"+addr)...)
	case "tcp":
		anyTLS := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		tlsHTTP := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		plain := &http.Client{Timeout: timeout}
		return []attempt{
			{"http-list", func() error { return restGet(plain, "http://"+addr+"/v1/containers") }},
			{"http-create", func() error { return restPost(plain, "http://"+addr+"/v1/containers", pwn) }},
			{"h2c-grpc-list", func() error { return grpcList(addr, insecure.NewCredentials()) }},
			{"tls-rest-list", func() error { return restGet(tlsHTTP, "https://"+addr+"/v1/containers") }},
			{"tls-rest-create", func() error { return restPost(tlsHTTP, "https://"+addr+"/v1/containers", pwn) }},
			{"tls-grpc-list", func() error { return grpcList(addr, anyTLS) }},
			{"tls-grpc-create", func() error { return grpcCreate(addr, anyTLS) }},
			{"raft-append", func() error { return raftAppend(addr, nil) }},
			{"tls-raft-append", func() error { return raftAppend(addr, &tls.Config{InsecureSkipVerify: true}) }},
		}
	}
	return []attempt{{"parse", func() error { return fmt.Errorf("unknown target %q", target) }}}
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

func restGet(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	return answer(resp)
}

func restPost(c *http.Client, url, body string) error {
	resp, err := c.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	return answer(resp)
}

func answer(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

func dialGRPC(target string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, grpc.WithTransportCredentials(creds))
}

func grpcList(target string, creds credentials.TransportCredentials) error {
	conn, err := dialGRPC(target, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = shoalv1.NewContainerServiceClient(conn).ListContainers(ctx, &shoalv1.ListContainersRequest{})
	return err
}

func grpcCreate(target string, creds credentials.TransportCredentials) error {
	conn, err := dialGRPC(target, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = shoalv1.NewContainerServiceClient(conn).CreateContainer(ctx, &shoalv1.CreateContainerRequest{
		Name: "pwn-probe", Image: "busybox", Config: map[string]string{"security.privileged": "true"}})
	return err
}

// raftAppend speaks Raft to addr as hashicorp/raft does: an AppendEntries
// from a leader with a term far above any real one. Any answer means the
// daemon's Raft took it.
func raftAppend(addr string, cfg *tls.Config) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	trans := raft.NewNetworkTransport(&layer{Listener: ln, tls: cfg}, 1, timeout, io.Discard)
	defer trans.Close()
	var resp raft.AppendEntriesResponse
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(ln.Addr().String())},
		Term:      1 << 40, Leader: []byte(ln.Addr().String()), LeaderCommitIndex: 1 << 40,
	}
	return trans.AppendEntries("intruder", raft.ServerAddress(addr), req, &resp)
}

type layer struct {
	net.Listener
	tls *tls.Config
}

func (l *layer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if l.tls == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), l.tls)
}
