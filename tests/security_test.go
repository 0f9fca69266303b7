package tests

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEndpointsRefuseOutsiders tries every endpoint a one-node daemon
// listens on — each TCP port and each unix socket its process holds — as
// an unprivileged local user and from inside a container: nothing acts (no
// list, no privileged create, no Raft entry). A member of shoal-admin uses
// both unix sockets.
func TestEndpointsRefuseOutsiders(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	tcp, udp, unix := listeningSockets(t, d.Pid())
	t.Logf("shoald listens on tcp %v, udp %v, unix %v", tcp, udp, unix)
	for _, want := range []string{d.Socket, d.RESTSocket()} {
		if !contains(unix, want) {
			t.Fatalf("the daemon does not listen on %s: %v", want, unix)
		}
	}
	if len(tcp) == 0 {
		t.Fatal("found no TCP listener: the Raft transport should be one")
	}
	for _, a := range tcp {
		if ip := net.ParseIP(strings.Split(a, ":")[0]); ip == nil || !ip.IsLoopback() {
			t.Errorf("a one-node daemon listens on %s, beyond loopback", a)
		}
	}
	var targets []string
	for _, a := range tcp {
		targets = append(targets, "tcp:"+a)
	}
	for _, p := range unix {
		targets = append(targets, "unix:"+p)
	}

	outsider := addUser(t, "")
	out, code := runAs(t, outsider, filepath.Join(binDir, "probe"), append([]string{"-expect", "refused"}, targets...)...)
	t.Logf("as %s:\n%s", outsider, out)
	if code != 0 {
		t.Fatalf("an unprivileged user made the daemon act:\n%s", out)
	}
	if _, code := runAs(t, outsider, filepath.Join(binDir, "shoal"), "--socket", d.Socket, "list"); code == 0 {
		t.Fatal("shoal list worked for an unprivileged user")
	}

	admin := addUser(t, "shoal-admin")
	out, code = runAs(t, admin, filepath.Join(binDir, "probe"), "-expect", "ok", "grpc+unix:"+d.Socket, "rest+unix:"+d.RESTSocket())
	if code != 0 {
		t.Fatalf("a member of shoal-admin could not use the local sockets:\n%s", out)
	}
	if out, code := runAs(t, admin, filepath.Join(binDir, "shoal"), "--socket", d.Socket, "list"); code != 0 {
		t.Fatalf("shoal list as a member of shoal-admin: %s", out)
	}

	// From inside a container, the daemon's ports on the bridge address.
	c := uniq("probe")
	d.MustShoal("launch", "busybox", c)
	d.MustShoal("file", "push", filepath.Join(binDir, "probe"), c+"/probe", "--mode", "0755")
	gw := bridgeIP(t, d.Bridge)
	var inside []string
	for _, a := range tcp {
		_, port, _ := net.SplitHostPort(a)
		inside = append(inside, "tcp:"+net.JoinHostPort(gw, port))
	}
	out, errOut, code := d.Shoal(append([]string{"exec", c, "--", "/probe", "-expect", "refused"}, inside...)...)
	t.Logf("from container %s:\n%s%s", c, out, errOut)
	if code != 0 {
		t.Fatalf("a container made the host's daemon act (exit %d):\n%s%s", code, out, errOut)
	}

	// Nothing the probes sent took: no container of theirs, and the
	// daemon still leads its cluster.
	if _, ok := d.List()["pwn-probe"]; ok {
		t.Fatal("a probe created a container")
	}
	if m := d.MustShoal("cluster", "list"); !strings.Contains(m, "leader") {
		t.Fatalf("after the Raft probes the daemon no longer leads:\n%s", m)
	}
}

// addUser creates a local user for the test (in group when set) and
// removes it afterwards.
func addUser(t *testing.T, group string) string {
	t.Helper()
	name := "shu" + randHex(3)
	args := []string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin"}
	if group != "" {
		args = append(args, "-G", group)
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	return name
}

// runAs runs a program as a user (with that user's groups only).
func runAs(t *testing.T, user, prog string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid", user, "--regid", user, "--init-groups", "--", prog}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s as %s: %v", prog, user, err)
	}
	return string(out), 0
}

// listeningSockets returns what process pid listens on: TCP host:port,
// UDP host:port and unix socket paths ("@name" for abstract ones), read
// from /proc (its own network namespace).
func listeningSockets(t *testing.T, pid int) (tcp, udp, unix []string) {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	for _, f := range []struct {
		file  string
		state string
		out   *[]string
	}{{"tcp", "0A", &tcp}, {"tcp6", "0A", &tcp}, {"udp", "07", &udp}, {"udp6", "07", &udp}} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f.file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != f.state || !inodes[fs[9]] {
				continue
			}
			*f.out = append(*f.out, procAddr(t, fs[1]))
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		fs := strings.Fields(line)
		// Flags 00010000: listening.
		if len(fs) >= 8 && fs[3] == "00010000" && inodes[fs[6]] {
			unix = append(unix, fs[7])
		}
	}
	return tcp, udp, unix
}

// procAddr decodes /proc/net's hex "ADDR:PORT" (IPv4 or IPv6).
func procAddr(t *testing.T, s string) string {
	t.Helper()
	h, p, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	// Each 32-bit word is in host (little-endian) order.
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, _ := strconv.ParseUint(p, 16, 16)
	return net.JoinHostPort(net.IP(raw).String(), strconv.Itoa(int(port)))
}

// bridgeIP is the host's IPv4 address on a bridge.
func bridgeIP(t *testing.T, bridge string) string {
	t.Helper()
	ifc, err := net.InterfaceByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Fatalf("bridge %s has no IPv4 address", bridge)
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// regexpFind reports whether pattern matches somewhere in s.
func regexpFind(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
