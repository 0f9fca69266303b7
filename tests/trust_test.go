package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

// TestTrustRolesAndRevocation runs a two-member cluster and checks, with
// real certificates over the members' TLS port: a client certificate
// cannot call member RPCs; REST over TLS works with a client certificate
// and not without; a restricted client stays inside its grant; a revoked
// certificate is refused by every member and its open monitor stream is
// cut; an expired one gets a clear error; renewal keeps the grant; pending
// tokens can be listed and revoked; a removed member's certificate is
// revoked.
func TestTrustRolesAndRevocation(t *testing.T) {
	requireCluster(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1, n2 := ms[0], ms[1]
	ensureBusybox(t, n1.Daemon)
	cli := &remoteCLI{t: t, home: t.TempDir(), host: n1.Host}

	// A full client.
	cli.add(n1, "lap", "lap")
	cli.alias("lap", "lap-n2", n2)
	if out, errOut, code := cli.run("--remote", "lap", "list"); code != 0 {
		t.Fatalf("client list: %s%s", out, errOut)
	}
	lapTLS := cli.tlsConfig("lap")
	for _, m := range ms {
		conn := grpcTo(t, m, lapTLS)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := shoalv1.NewClusterServiceClient(conn).Apply(ctx, &shoalv1.ApplyRequest{Command: []byte{4}})
		wantDenied(t, m.Host.Name+" Apply", err)
		_, err = shoalv1.NewClusterServiceClient(conn).ReadIndex(ctx, &shoalv1.ReadIndexRequest{})
		wantDenied(t, m.Host.Name+" ReadIndex", err)
		mc := shoalv1.NewMigrationServiceClient(conn)
		if rv, err := mc.ReceiveVolume(ctx); err == nil {
			_, err = rv.CloseAndRecv()
			wantDenied(t, m.Host.Name+" ReceiveVolume", err)
		} else {
			wantDenied(t, m.Host.Name+" ReceiveVolume", err)
		}
		if rc, err := mc.RestoreContainer(ctx); err == nil {
			_, err = rc.Recv()
			wantDenied(t, m.Host.Name+" RestoreContainer", err)
		} else {
			wantDenied(t, m.Host.Name+" RestoreContainer", err)
		}
		cancel()
		conn.Close()
	}
	// REST over the same TLS port.
	withCert := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: n1.Host.Dial, TLSClientConfig: lapTLS}}
	noCert := lapTLS.Clone()
	noCert.Certificates = nil
	without := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: n1.Host.Dial, TLSClientConfig: noCert}}
	base := "https://" + n1.Listen()
	if code := n1.RESTWith(withCert, base, "GET", "/v1/containers", nil, nil); code != 200 {
		t.Fatalf("REST with a client certificate: %d", code)
	}
	if code := n1.RESTWith(without, base, "GET", "/v1/containers", nil, nil); code != 401 {
		t.Fatalf("REST without a certificate: %d, want 401", code)
	}
	if code := n1.RESTWith(withCert, base, "POST", "/v1/cluster/apply", map[string]any{}, nil); code != 403 {
		t.Fatalf("REST member RPC with a client certificate: %d, want 403", code)
	}

	// A restricted client: web-* containers only.
	cli.add(n1, "web", "web", "--restrict-to", "web-")
	web1, db1 := uniq("web"), uniq("db")
	if out, errOut, code := cli.run("--remote", "web", "launch", "busybox", web1); code != 0 {
		t.Fatalf("restricted launch inside its grant: %s%s", out, errOut)
	}
	n1.MustShoal("launch", "busybox", db1)
	db2 := uniq("db")
	cli.refused("web", `may not touch container "`+db2+`"`, "launch", "busybox", db2)
	cli.refused("web", `may not touch container "`+db1+`"`, "exec", db1, "--", "true")
	cli.refused("web", `may not touch container "`+db1+`"`, "delete", "-f", db1)
	cli.refused("web", "may not set security.privileged", "launch", "busybox", uniq("web"), "-c", "security.privileged=true")
	cli.refused("web", "administers the cluster", "cluster", "trust", "list")
	if out, errOut, code := cli.run("--remote", "web", "exec", web1, "--", "true"); code != 0 {
		t.Fatalf("restricted exec inside its grant: %s%s", out, errOut)
	}
	out, _, _ := cli.run("--remote", "web", "list")
	if !strings.Contains(out, web1) || strings.Contains(out, db1) {
		t.Fatalf("restricted list shows other containers or not its own:\n%s", out)
	}
	// From inside a container on n1: every member's TCP ports (gRPC+REST,
	// Raft, gossip) refuse to act without a certificate.
	n1.MustShoal("file", "push", filepath.Join(binDir, "probe"), db1+"/probe", "--mode", "0755")
	var ports []string
	for _, m := range ms {
		host, p, _ := net.SplitHostPort(m.Listen())
		port, _ := strconv.Atoi(p)
		for i := 0; i < 3; i++ {
			ports = append(ports, "tcp:"+net.JoinHostPort(host, strconv.Itoa(port+i)))
		}
	}
	if out, errOut, code := n1.Shoal(append([]string{"exec", db1, "--", "/probe", "-expect", "refused"}, ports...)...); code != 0 {
		t.Fatalf("a container made a member act (exit %d):\n%s%s", code, out, errOut)
	} else {
		t.Logf("from container %s on n1:\n%s", db1, out)
	}

	// A read-only client.
	cli.add(n1, "ro", "ro", "--read-only")
	if out, _, code := cli.run("--remote", "ro", "list"); code != 0 || !strings.Contains(out, db1) {
		t.Fatalf("read-only list: %s", out)
	}
	cli.refused("ro", "is read-only", "delete", "-f", web1)

	// Revocation reaches every member and cuts open streams.
	mon := cli.command("--remote", "lap-n2", "monitor")
	stderr, err := mon.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Process.Kill() })
	// The monitor says "Listening" on stderr once its stream is open; the
	// lines after it are what it says when the stream ends.
	listening := make(chan struct{})
	var monErr strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Listening") {
				close(listening)
				continue
			}
			monErr.WriteString(sc.Text() + "\n")
		}
	}()
	select {
	case <-listening:
	case <-readDone:
		mon.Wait()
		t.Fatalf("monitor through n2 ended before it listened: %s", monErr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("monitor through n2 did not start listening within 30 s")
	}
	exited := make(chan error, 1)
	go func() { <-readDone; exited <- mon.Wait() }()
	revoked := time.Now()
	n1.MustShoal("cluster", "trust", "revoke", "lap")
	select {
	case err := <-exited:
		t.Logf("the monitor stream on n2 ended %v after the revocation on n1: %v", time.Since(revoked).Round(time.Millisecond), err)
		if err == nil || !strings.Contains(monErr.String(), "revoked") {
			t.Fatalf("monitor ended without saying its certificate was revoked: %v %q", err, monErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the monitor stream of a revoked certificate is still open after 20 s")
	}
	for _, r := range []string{"lap", "lap-n2"} {
		cli.refused(r, "was revoked", "list")
	}
	if trust := n2.MustShoal("cluster", "trust", "list"); !regexpFind(`lap\s+client\s+\S+\s+.*REVOKED`, trust) {
		t.Fatalf("trust list on n2 does not show lap revoked:\n%s", trust)
	}

	// Renewal keeps the name and the grant; the old certificate is revoked.
	if out, errOut, code := cli.run("remote", "renew", "web"); code != 0 || !strings.Contains(out, "valid until") {
		t.Fatalf("remote renew: %s%s", out, errOut)
	}
	cli.refused("web", `may not touch container "`+db1+`"`, "exec", db1, "--", "true")
	if out, errOut, code := cli.run("--remote", "web", "exec", web1, "--", "true"); code != 0 {
		t.Fatalf("exec after renewal: %s%s", out, errOut)
	}
	trust := n1.MustShoal("cluster", "trust", "list")
	if strings.Count(trust, "web ") < 2 || !regexpFind(`web\s+client\s+\S+\s+.*web-\*\s+REVOKED`, trust) || !regexpFind(`web\s+client\s+\S+\s+.*web-\*\s+VALID`, trust) {
		t.Fatalf("trust list after renewal:\n%s", trust)
	}

	// An expired certificate gets a clear error.
	cli.add(n1, "exp", "exp", "--cert-validity", "3s")
	netns.WaitFor(t, "the short-lived certificate to expire", 30*time.Second, func() bool {
		_, errOut, code := cli.run("--remote", "exp", "list")
		return code != 0 && strings.Contains(errOut, "expired")
	})
	_, errOut, _ := cli.run("--remote", "exp", "list")
	if !strings.Contains(errOut, "cannot be renewed") || !strings.Contains(errOut, "new client token") {
		t.Fatalf("expired certificate message: %q", errOut)
	}

	// Pending tokens.
	tok := strings.TrimSpace(n1.MustShoal("cluster", "add", "pending1", "--role", "client"))
	if list := n2.MustShoal("cluster", "token", "list"); !strings.Contains(list, "pending1") {
		t.Fatalf("token list lacks pending1:\n%s", list)
	}
	n1.MustShoal("cluster", "token", "revoke", "pending1")
	if list := n1.MustShoal("cluster", "token", "list"); strings.Contains(list, "pending1") {
		t.Fatalf("revoked token still listed:\n%s", list)
	}
	if out, errOut, code := cli.run("remote", "add", "pending1", "https://"+n1.Listen(), "--token", tok); code == 0 {
		t.Fatalf("a revoked token still joins: %s%s", out, errOut)
	}

	// A member cannot be revoked from under the cluster; removing it
	// revokes its certificate.
	if _, errOut, code := n1.Shoal("cluster", "trust", "revoke", "n2"); code == 0 || !strings.Contains(errOut, "cluster remove") {
		t.Fatalf("revoking a member's certificate: %q", errOut)
	}
	n1.MustShoal("delete", "-f", db1)
	n1.MustShoal("delete", "-f", web1)
	n1.MustShoal("cluster", "remove", "n2", "--force")
	if trust := n1.MustShoal("cluster", "trust", "list"); !regexpFind(`n2\s+node\s+\S+\s+.*REVOKED`, trust) {
		t.Fatalf("a removed member's certificate is not revoked:\n%s", trust)
	}
}

// remoteCLI runs the shoal CLI as a remote client would: its own config
// directory, from inside a simulated host's network.
type remoteCLI struct {
	t    *testing.T
	home string
	host *netns.Host
}

func (r *remoteCLI) command(args ...string) *exec.Cmd {
	cmd := r.host.Command(context.Background(), filepath.Join(binDir, "shoal"), args...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SHOAL_") && !strings.HasPrefix(e, "HOME=") && !strings.HasPrefix(e, "XDG_CONFIG_HOME=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "HOME="+r.home, "XDG_CONFIG_HOME="+filepath.Join(r.home, ".config"))
	return cmd
}

func (r *remoteCLI) run(args ...string) (stdout, stderr string, code int) {
	cmd := r.command(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() { <-ctx.Done(); cmd.Process.Kill() }()
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("shoal %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// add issues a client token on m and adds it as remote name.
func (r *remoteCLI) add(m *harness.Member, name, remote string, flags ...string) {
	r.t.Helper()
	tok := strings.TrimSpace(m.MustShoal(append([]string{"cluster", "add", name, "--role", "client"}, flags...)...))
	if out, errOut, code := r.run("remote", "add", remote, "https://"+m.Listen(), "--token", tok); code != 0 {
		r.t.Fatalf("remote add %s: %s%s", remote, out, errOut)
	}
}

// alias makes remote alias use remote's certificate against member m.
func (r *remoteCLI) alias(remote, alias string, m *harness.Member) {
	r.t.Helper()
	dir := filepath.Join(r.home, ".config", "shoal", "remotes")
	if err := os.MkdirAll(filepath.Join(dir, alias), 0o700); err != nil {
		r.t.Fatal(err)
	}
	for _, f := range []string{"client.crt", "client.key", pki.CACertFile} {
		b, err := os.ReadFile(filepath.Join(dir, remote, f))
		if err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, alias, f), b, 0o600); err != nil {
			r.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, alias, "address"), []byte(m.Listen()+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// refused runs a command as remote and checks it fails saying why.
func (r *remoteCLI) refused(remote, why string, args ...string) {
	r.t.Helper()
	out, errOut, code := r.run(append([]string{"--remote", remote}, args...)...)
	if code == 0 || !strings.Contains(errOut, why) {
		r.t.Fatalf("shoal --remote %s %v: exit %d, stderr %q, want a refusal saying %q (stdout %q)", remote, args, code, errOut, why, out)
	}
}

// tlsConfig is the TLS client config of a saved remote.
func (r *remoteCLI) tlsConfig(remote string) *tls.Config {
	r.t.Helper()
	dir := filepath.Join(r.home, ".config", "shoal", "remotes", remote)
	cert, err := pki.LoadKeyPair(dir, "client")
	if err != nil {
		r.t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		r.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return pki.ClientTLS(pool, &cert, "")
}

func grpcTo(t *testing.T, m *harness.Member, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(m.Listen(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return m.Host.Dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "members only") {
		t.Fatalf("%s with a client certificate: %v, want PermissionDenied (members only)", what, err)
	}
}
