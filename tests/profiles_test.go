package tests

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// mustFail runs a CLI call that must fail with a one-line error containing
// want.
func mustFail(t *testing.T, d *harness.Daemon, want string, args ...string) {
	t.Helper()
	out, errOut, code := d.Shoal(args...)
	if code == 0 {
		t.Fatalf("shoal %s succeeded (%q), want an error with %q", strings.Join(args, " "), out, want)
	}
	if !strings.HasPrefix(errOut, "Error: ") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 || !strings.Contains(errOut, want) {
		t.Fatalf("shoal %s: stderr %q, want one line with %q", strings.Join(args, " "), errOut, want)
	}
}

// TestProfilesAndDevices walks through LXD's everyday model on one member:
// the default profile, a profile with a limit and a disk device applied at
// launch, a profile change reaching the running container live, disk and
// unix-char devices hot-plugged and unplugged, read-only binds, a proxy
// device forwarding a host port into the container, the
// definition keeping devices across a restart, and bad input refused with
// nothing changed.
func TestProfilesAndDevices(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c1, p1 := uniq("pc"), uniq("prof")

	if list := d.MustShoal("profile", "list"); !strings.Contains(list, "default") {
		t.Fatalf("profile list lacks default:\n%s", list)
	}
	data := t.TempDir()
	os.Chmod(data, 0o777)
	os.WriteFile(filepath.Join(data, "hello"), []byte("from the host\n"), 0o644)
	d.MustShoal("profile", "create", p1)
	d.MustShoal("profile", "set", p1, "limits.processes=300")
	d.MustShoal("profile", "device", "add", p1, "data", "disk", "source="+data, "path=/data")
	if show := d.MustShoal("profile", "show", p1); !strings.Contains(show, "limits.processes: \"300\"") && !strings.Contains(show, "limits.processes: '300'") {
		t.Fatalf("profile show:\n%s", show)
	}

	d.MustShoal("launch", "busybox", c1, "-p", "default", "-p", p1)
	t.Cleanup(func() { d.Shoal("delete", "-f", c1) })
	pid := pidOf(t, d, c1)
	exp := d.MustShoal("config", "show", c1, "--expanded")
	for _, want := range []string{"- default", "- " + p1, "limits.processes: \"300\"", "source: " + data, "path: /data"} {
		if !strings.Contains(exp, want) {
			t.Fatalf("config show --expanded lacks %q:\n%s", want, exp)
		}
	}
	if own := d.MustShoal("config", "show", c1); strings.Contains(own, "limits.processes") {
		t.Fatalf("config show (own keys) shows the profile's:\n%s", own)
	}
	if got := hostCgroup(t, pid, "pids", "pids.max"); got != "300" {
		t.Fatalf("pids.max = %s, want the profile's 300", got)
	}
	if got := d.MustShoal("exec", c1, "--", "cat", "/data/hello"); got != "from the host\n" {
		t.Fatalf("/data/hello inside = %q", got)
	}
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo from inside > /data/back")
	if b, _ := os.ReadFile(filepath.Join(data, "back")); string(b) != "from inside\n" {
		t.Fatalf("written inside, the host reads %q", b)
	}

	// A profile change reaches the running container, live.
	d.MustShoal("profile", "set", p1, "limits.processes=400")
	d.WaitFor("the profile's new limit", 10*time.Second, func() bool { return hostCgroup(t, pid, "pids", "pids.max") == "400" })
	if now := pidOf(t, d, c1); now != pid {
		t.Fatalf("the profile change restarted the container (pid %d -> %d)", pid, now)
	}
	// The container's own key wins over its profiles'.
	d.MustShoal("config", "set", c1, "limits.processes=350")
	d.WaitFor("the container's own limit", 10*time.Second, func() bool { return hostCgroup(t, pid, "pids", "pids.max") == "350" })

	// Hot-plug: a read-only bind and a character device, then unplugged.
	ro := t.TempDir()
	os.Chmod(ro, 0o777)
	os.WriteFile(filepath.Join(ro, "x"), []byte("ro\n"), 0o644)
	d.MustShoal("config", "device", "add", c1, "ro", "disk", "source="+ro, "path=/mnt/ro", "readonly=true")
	if got := d.MustShoal("exec", c1, "--", "cat", "/mnt/ro/x"); got != "ro\n" {
		t.Fatalf("hot-plugged /mnt/ro/x = %q", got)
	}
	if _, errOut, code := d.Shoal("exec", c1, "--", "touch", "/mnt/ro/y"); code == 0 || !strings.Contains(errOut, "Read-only") {
		t.Fatalf("write to a readonly device: code %d %q", code, errOut)
	}
	d.MustShoal("config", "device", "add", c1, "nul", "unix-char", "source=/dev/null", "path=/dev/shoalnull", "mode=0666")
	if got := d.MustShoal("exec", c1, "--", "sh", "-c", "ls -l /dev/shoalnull; echo x > /dev/shoalnull && echo wrote"); !strings.HasPrefix(got, "crw-rw-rw-") || !strings.Contains(got, "wrote") {
		t.Fatalf("hot-plugged unix-char: %q", got)
	}
	list := d.MustShoal("config", "device", "list", c1)
	for _, want := range []string{"data", "profile", "ro", "nul", "unix-char", "container"} {
		if !strings.Contains(list, want) {
			t.Fatalf("device list lacks %q:\n%s", want, list)
		}
	}
	d.MustShoal("config", "device", "remove", c1, "ro")
	if out, _, code := d.Shoal("exec", c1, "--", "ls", "/mnt/ro/x"); code == 0 {
		t.Fatalf("/mnt/ro/x still there after the device was removed: %q", out)
	}

	// A proxy device: a port on the member forwarded to a server on the
	// container's loopback (dialled inside its network namespace).
	d.MustShoal("exec", c1, "--", "sh", "-c", "mkdir -p /tmp/www && echo proxied > /tmp/www/index.html && httpd -p 127.0.0.1:8080 -h /tmp/www")
	port := freePort(t)
	d.MustShoal("config", "device", "add", c1, "web", "proxy", "listen=tcp:127.0.0.1:"+port, "connect=tcp:127.0.0.1:8080")
	if got := httpGet(t, "http://127.0.0.1:"+port+"/index.html"); got != "proxied\n" {
		t.Fatalf("through the proxy device: %q", got)
	}
	mustFail(t, d, "cannot listen on 127.0.0.1:"+port, "config", "device", "add", c1, "web2", "proxy", "listen=tcp:127.0.0.1:"+port, "connect=tcp:127.0.0.1:8080")
	mustFail(t, d, "devices.web3.connect", "config", "device", "add", c1, "web3", "proxy", "listen=tcp:127.0.0.1:1", "connect=udp:127.0.0.1:53")
	// A udp proxy device: datagrams to a member's port reach an echo server
	// on the container's loopback, and the answers come back.
	d.MustShoal("file", "push", filepath.Join(binDir, "workload"), c1+"/usr/bin/workload", "--mode", "0755")
	d.MustShoal("exec", c1, "--", "sh", "-c", "workload -udp-echo 127.0.0.1:7000 </dev/null >/dev/null 2>&1 &")
	uport := freePort(t)
	d.MustShoal("config", "device", "add", c1, "dns", "proxy", "listen=udp:127.0.0.1:"+uport, "connect=udp:127.0.0.1:7000")
	uc, err := net.Dial("udp", "127.0.0.1:"+uport)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	var echoed string
	d.WaitFor("an answer through the udp proxy device", 30*time.Second, func() bool {
		if _, err := uc.Write([]byte("ping " + c1)); err != nil {
			return false
		}
		_ = uc.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 512)
		n, err := uc.Read(b)
		echoed = string(b[:max(n, 0)])
		return err == nil
	})
	if echoed != "ping "+c1 {
		t.Fatalf("through the udp proxy device: %q, want %q", echoed, "ping "+c1)
	}
	d.MustShoal("config", "device", "remove", c1, "dns")
	d.MustShoal("config", "device", "remove", c1, "web")
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
		c.Close()
		t.Fatalf("port %s still open after the proxy device was removed", port)
	}

	// Bad input: one line naming the field; nothing changes.
	before := d.MustShoal("config", "show", c1)
	mustFail(t, d, "devices.x.type", "config", "device", "add", c1, "x", "floppy", "path=/x")
	mustFail(t, d, "/nonexistent-"+c1, "config", "device", "add", c1, "x", "disk", "source=/nonexistent-"+c1, "path=/x")
	mustFail(t, d, "devices.x.path", "config", "device", "add", c1, "x", "disk", "source="+ro, "path=relative")
	mustFail(t, d, "also the path of device", "config", "device", "add", c1, "x", "disk", "source="+ro, "path=/data")
	mustFail(t, d, "comes from a profile", "config", "device", "remove", c1, "data")
	mustFail(t, d, "profile \""+p1+"\" is used by "+c1, "profile", "delete", p1)
	mustFail(t, d, "default profile cannot be deleted", "profile", "delete", "default")
	mustFail(t, d, "nope", "launch", "busybox", uniq("np"), "-p", "nope")
	mustFail(t, d, "missing subcommand", "profile")
	mustFail(t, d, "unknown subcommand", "config", "bogus")
	if after := d.MustShoal("config", "show", c1); after != before {
		t.Fatalf("refused calls changed the config:\n%s\n%s", before, after)
	}

	// The definition keeps the devices: after a restart they are there.
	d.MustShoal("restart", c1, "-f")
	if got := d.MustShoal("exec", c1, "--", "sh", "-c", "cat /data/hello; ls /dev/shoalnull"); got != "from the host\n/dev/shoalnull\n" {
		t.Fatalf("after a restart: %q", got)
	}

	// Renaming the profile follows into the container; removing it takes
	// its device away, live.
	p2 := uniq("prof")
	d.MustShoal("profile", "rename", p1, p2)
	if exp := d.MustShoal("config", "show", c1); !strings.Contains(exp, "- "+p2) {
		t.Fatalf("after the rename:\n%s", exp)
	}
	d.MustShoal("profile", "remove", c1, p2)
	if out, _, code := d.Shoal("exec", c1, "--", "cat", "/data/hello"); code == 0 {
		t.Fatalf("/data still mounted after the profile was removed: %q", out)
	}
	d.MustShoal("profile", "delete", p2)

	// Deleting the container leaves the host's files of its disk devices.
	d.MustShoal("config", "device", "add", c1, "data2", "disk", "source="+data, "path=/data2")
	d.MustShoal("delete", "-f", c1)
	if b, err := os.ReadFile(filepath.Join(data, "hello")); err != nil || string(b) != "from the host\n" {
		t.Fatalf("after the delete, the source's file: %q %v", b, err)
	}

	// edit replaces a profile from YAML; --no-profiles applies none.
	p3 := uniq("prof")
	d.MustShoal("profile", "create", p3)
	if _, errOut, code := d.ShoalIn(strings.NewReader("description: edited\nconfig:\n  user.note: hi\ndevices: {}\n"), "profile", "edit", p3); code != 0 {
		t.Fatalf("profile edit: %s", errOut)
	}
	if show := d.MustShoal("profile", "show", p3); !strings.Contains(show, "description: edited") || !strings.Contains(show, "user.note: hi") {
		t.Fatalf("after edit:\n%s", show)
	}
	if _, errOut, code := d.ShoalIn(strings.NewReader("config:\n  limits.memory: lots\n"), "profile", "edit", p3); code == 0 || !strings.Contains(errOut, "limits.memory") {
		t.Fatalf("edit with a bad key: code %d %q", code, errOut)
	}
	c2 := uniq("np")
	d.MustShoal("init", "busybox", c2, "--no-profiles")
	t.Cleanup(func() { d.Shoal("delete", "-f", c2); d.Shoal("profile", "delete", p3) })
	show := d.MustShoal("config", "show", c2)
	if !strings.Contains(show, "profiles: []") {
		t.Fatalf("--no-profiles:\n%s", show)
	}
	// config edit: the shown YAML, changed, read back (stdin is not a
	// terminal: no editor).
	edited := strings.Replace(strings.Replace(show, "profiles: []", "profiles:\n  - default\n  - "+p3, 1),
		"config:\n", "config:\n  user.edited: \"yes\"\n", 1)
	if _, errOut, code := d.ShoalIn(strings.NewReader(edited), "config", "edit", c2); code != 0 {
		t.Fatalf("config edit: %s\n%s", errOut, edited)
	}
	if exp := d.MustShoal("config", "show", c2, "--expanded"); !strings.Contains(exp, "user.edited: \"yes\"") || !strings.Contains(exp, "user.note: hi") {
		t.Fatalf("after config edit:\n%s", exp)
	}
	if _, errOut, code := d.ShoalIn(strings.NewReader(strings.Replace(show, "type: nic", "type: nic\n    mtu: \"1280\"", 1)), "config", "edit", c2); code == 0 || !strings.Contains(errOut, "devices.eth0") {
		t.Fatalf("config edit of a nic: code %d %q", code, errOut)
	}
}

// freePort returns a TCP port free on the host's loopback now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// httpGet returns a URL's body (fatal on an error).
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
