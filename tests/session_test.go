package tests

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/tests/harness"
)

// ensureBusybox builds the busybox image once per daemon.
func ensureBusybox(t *testing.T, d *harness.Daemon) {
	t.Helper()
	out, errOut, code := d.Shoal("image", "build", "busybox")
	if code != 0 {
		t.Fatalf("image build busybox: %d %s %s", code, out, errOut)
	}
	if !strings.Contains(out, "alias busybox") {
		t.Fatalf("image build output %q does not name the alias", out)
	}
	// Not a terminal: progress comes as plain lines on stderr.
	if !strings.Contains(errOut, "image-build: ") {
		t.Errorf("no plain progress lines on stderr: %q", errOut)
	}
}

// TestSession walks through the single-node session of the README: image
// build, launch with limits, list, exec, files, snapshots, copy, publish,
// export/import, config, power state, info, delete, and REST.
func TestSession(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c1 := uniq("c1")

	d.MustShoal("launch", "busybox", c1, "-c", "limits.memory=256MiB", "-c", "limits.cpu=1")
	list := d.List()
	if list[c1].State.Status != "Running" || list[c1].Container.Node != "node1" {
		t.Fatalf("after launch: %+v", list[c1])
	}
	table := d.MustShoal("list")
	for _, want := range []string{"NAME", "STATE", "IPV4", "IMAGE", c1, "RUNNING"} {
		if !strings.Contains(table, want) {
			t.Errorf("list table lacks %q:\n%s", want, table)
		}
	}
	if y := d.MustShoal("list", "--format", "yaml"); !strings.Contains(y, "name: "+c1) {
		t.Errorf("yaml list lacks the container:\n%s", y)
	}

	// DHCP on the default bridge gives it an address in the bridge's subnet.
	ip := d.WaitAddress(c1, 30*time.Second)
	out := d.MustShoal("exec", c1, "--", "sh", "-c", "hostname; ip -4 addr show eth0")
	if !strings.Contains(out, c1) || !strings.Contains(out, ip) {
		t.Fatalf("exec hostname/ip: %q (want %s and %s)", out, c1, ip)
	}
	// The host reaches the container through the bridge.
	if _, err := net.DialTimeout("tcp", ip+":1", time.Second); err != nil && !strings.Contains(err.Error(), "refused") {
		t.Errorf("container %s not reachable from the host: %v", ip, err)
	}

	// Exit code and separate streams pass through.
	stdout, stderr, code := d.Shoal("exec", c1, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if code != 7 || stdout != "out\n" || stderr != "err\n" {
		t.Fatalf("exec streams: code=%d stdout=%q stderr=%q", code, stdout, stderr)
	}
	stdout, _, code = d.ShoalIn(strings.NewReader("hello stdin"), "exec", c1, "--", "cat")
	if code != 0 || stdout != "hello stdin" {
		t.Fatalf("exec stdin: code=%d %q", code, stdout)
	}
	// -t gives the command a terminal (here without a local one: no resize).
	stdout, _, code = d.Shoal("exec", "-t", c1, "--", "tty")
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(stdout), "/dev/pts/") {
		t.Fatalf("exec -t tty: code=%d %q", code, stdout)
	}

	// Files in and out, with mode and owner.
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("payload\n"), 0o600)
	d.MustShoal("file", "push", src, c1+"/root/f", "--mode", "0640", "--uid", "1000", "--gid", "100")
	if got := d.MustShoal("exec", c1, "--", "stat", "-c", "%a %u %g", "/root/f"); got != "640 1000 100\n" {
		t.Fatalf("pushed file mode/owner = %q", got)
	}
	dst := t.TempDir()
	d.MustShoal("file", "pull", c1+"/etc/hostname", dst)
	if b, _ := os.ReadFile(filepath.Join(dst, "hostname")); string(b) != c1+"\n" {
		t.Fatalf("pulled hostname = %q", b)
	}
	for _, bad := range []string{c1 + "/../../../etc/passwd"} {
		if _, errOut, code := d.Shoal("file", "pull", bad, dst); code == 0 || !strings.HasPrefix(errOut, "Error: ") {
			t.Fatalf("pull %s escaped the container: code=%d %q", bad, code, errOut)
		}
	}
	d.MustShoal("exec", c1, "--", "ln", "-s", "/../../../../etc", "/root/escape")
	if _, _, code := d.Shoal("file", "pull", c1+"/root/escape/shadow", dst); code == 0 {
		if b, _ := os.ReadFile(filepath.Join(dst, "shadow")); len(b) > 0 && strings.Contains(string(b), "root:") {
			hostShadow, _ := os.ReadFile("/etc/shadow")
			if string(b) == string(hostShadow) {
				t.Fatal("symlink escape read the host's /etc/shadow")
			}
		}
	}

	// Snapshots: a file written after s1 is gone after restoring s1.
	d.MustShoal("snapshot", "create", c1, "s1")
	d.MustShoal("exec", c1, "--", "touch", "/root/after-s1")
	if ls := d.MustShoal("snapshot", "list", c1); !strings.Contains(ls, "s1") {
		t.Fatalf("snapshot list: %q", ls)
	}
	d.MustShoal("snapshot", "restore", c1, "s1")
	if d.List()[c1].State.Status != "Running" {
		t.Fatal("container not running after restoring a snapshot of a running container")
	}
	if _, _, code := d.Shoal("exec", c1, "--", "test", "-e", "/root/after-s1"); code == 0 {
		t.Fatal("file written after the snapshot survived the restore")
	}
	if _, _, code := d.Shoal("exec", c1, "--", "test", "-e", "/root/f"); code != 0 {
		t.Fatal("file written before the snapshot is gone after the restore")
	}

	// Copy: an independent stopped container with the same files.
	c2 := uniq("c2")
	d.MustShoal("copy", c1, c2)
	if st := d.List()[c2].State.Status; st != "Stopped" {
		t.Fatalf("copy is %s, want Stopped", st)
	}
	d.MustShoal("start", c2)
	if got := d.MustShoal("exec", c2, "--", "cat", "/root/f"); got != "payload\n" {
		t.Fatalf("copied file = %q", got)
	}
	if got := d.MustShoal("exec", c2, "--", "hostname"); got != c2+"\n" {
		t.Fatalf("copy's hostname = %q", got)
	}
	if d.List()[c1].Container.Hwaddr == d.List()[c2].Container.Hwaddr {
		t.Fatal("copy shares the source's MAC address")
	}
	// Containers on the default network reach each other, by address and by
	// name through the bridge's DNS.
	d.WaitAddress(c2, 30*time.Second)
	if out, errOut, code := d.Shoal("exec", c2, "--", "ping", "-c1", "-W2", ip); code != 0 {
		t.Fatalf("%s cannot reach %s at %s: %s %s", c2, c1, ip, out, errOut)
	}
	if out, errOut, code := d.Shoal("exec", c2, "--", "nslookup", c1); code != 0 || !strings.Contains(out, ip) {
		t.Fatalf("%s cannot resolve %s: %s %s", c2, c1, out, errOut)
	}
	d.MustShoal("snapshot", "delete", c1, "s1")
	if ls := d.MustShoal("snapshot", "list", c1); strings.Contains(ls, "s1") {
		t.Fatalf("snapshot still listed after delete: %q", ls)
	}

	// Publish, export, import, and launch from the imported image.
	mine, mine2 := uniq("mine"), uniq("mine2")
	d.MustShoal("snapshot", "create", c2, "pub")
	fromSnap := uniq("fromsnap")
	d.MustShoal("publish", c2+"/pub", "--alias", fromSnap)
	if info := d.MustShoal("image", "info", fromSnap); !strings.Contains(info, "published from "+c2) {
		t.Fatalf("image published from a snapshot: %s", info)
	}
	d.MustShoal("publish", c1, "--alias", mine)
	tarball := filepath.Join(t.TempDir(), "mine.tar.gz")
	d.MustShoal("image", "export", mine, tarball)
	if fi, err := os.Stat(tarball); err != nil || fi.Size() == 0 {
		t.Fatalf("exported tarball: %v", err)
	}
	d.MustShoal("image", "delete", mine)
	d.MustShoal("image", "import", tarball, "--alias", mine2)
	c3 := uniq("c3")
	d.MustShoal("launch", mine2, c3)
	if got := d.MustShoal("exec", c3, "--", "stat", "-c", "%a %u %g", "/root/f"); got != "640 1000 100\n" {
		t.Fatalf("file in an image published from an unprivileged container: %q (ownership must be container-relative)", got)
	}

	// Config: set a live limit and read it back, and from the host cgroup.
	d.MustShoal("config", "set", c1, "limits.processes=200")
	if show := d.MustShoal("config", "show", c1); !strings.Contains(show, "limits.processes: \"200\"") || !strings.Contains(show, "limits.memory: 256MiB") {
		t.Fatalf("config show: %q", show)
	}
	if got := hostCgroup(t, pidOf(t, d, c1), "pids", "pids.max"); got != "200" {
		t.Fatalf("pids.max after config set = %q, want 200", got)
	}

	// Power state.
	d.MustShoal("stop", c1, "-f")
	if st := d.List()[c1].State.Status; st != "Stopped" {
		t.Fatalf("after stop: %s", st)
	}
	d.MustShoal("start", c1)
	pid := pidOf(t, d, c1)
	d.MustShoal("restart", c1, "-f")
	if pid2 := pidOf(t, d, c1); pid2 == pid {
		t.Fatal("restart kept the same init pid")
	}
	d.MustShoal("freeze", c1)
	if st := d.List()[c1].State.Status; st != "Frozen" {
		t.Fatalf("after freeze: %s", st)
	}
	d.MustShoal("unfreeze", c1)
	// After the restart the container leases its address again.
	var info string
	d.WaitFor("the address in info after the restart", 30*time.Second, func() bool {
		info = d.MustShoal("info", c1)
		return strings.Contains(info, ip)
	})
	for _, want := range []string{"Status: RUNNING", "PID:", "Memory:", ip} {
		if !strings.Contains(info, want) {
			t.Errorf("info lacks %q:\n%s", want, info)
		}
	}

	// REST: the same operations.
	var rl struct {
		Containers []struct {
			Container struct{ Name string }
			State     struct{ Status string }
		}
	}
	if code := d.REST("GET", "/v1/containers", nil, &rl); code != 200 {
		t.Fatalf("GET /v1/containers: %d", code)
	}
	found := false
	for _, c := range rl.Containers {
		found = found || (c.Container.Name == c1 && c.State.Status == "Running")
	}
	if !found {
		t.Fatalf("REST list lacks running %s: %+v", c1, rl)
	}
	// The REST gateway also answers on its root-only unix socket.
	uc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(d.StateDir, "rest.socket"))
	}}}
	resp, err := uc.Get("http://shoal/v1/containers/" + c1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"`+c1+`"`) {
		t.Fatalf("REST over the unix socket: %d %s", resp.StatusCode, body)
	}
	c4 := uniq("c4")
	var op struct{ Operation struct{ Id string } }
	if code := d.REST("POST", "/v1/containers", map[string]any{"name": c4, "image": "busybox"}, &op); code != 200 || op.Operation.Id == "" {
		t.Fatalf("POST /v1/containers: %d %+v", code, op)
	}
	var waited struct{ Operation struct{ Status string } }
	d.REST("GET", "/v1/operations/"+op.Operation.Id+"/wait", nil, &waited)
	if waited.Operation.Status != "OPERATION_STATUS_SUCCESS" {
		t.Fatalf("REST launch operation: %+v", waited)
	}
	var errBody struct {
		Code    int
		Message string
	}
	if code := d.REST("GET", "/v1/containers/nope-"+randHex(2), nil, &errBody); code != 404 || !strings.Contains(errBody.Message, "not found") {
		t.Fatalf("REST missing container: %d %+v", code, errBody)
	}
	if code := d.REST("DELETE", "/v1/containers/"+c4+"?force=true", nil, nil); code != 200 {
		t.Fatalf("REST delete: %d", code)
	}

	// Delete.
	if _, errOut, code := d.Shoal("delete", c1); code == 0 || !strings.Contains(errOut, "force") {
		t.Fatalf("delete of a running container without -f: %d %q", code, errOut)
	}
	for _, c := range []string{c1, c2, c3} {
		d.MustShoal("delete", "-f", c)
	}
	if l := d.List(); len(l) != 0 {
		t.Fatalf("containers left after delete: %v", l)
	}
	var pools struct{ Pools []json.RawMessage }
	d.REST("GET", "/v1/storage-pools", nil, &pools)
	if len(pools.Pools) != 1 {
		t.Fatalf("storage pools over REST: %s", pools.Pools)
	}
	if nl := d.MustShoal("network", "list"); !strings.Contains(nl, d.Bridge) {
		t.Fatalf("network list lacks %s:\n%s", d.Bridge, nl)
	}
}

// TestStoragePools creates a dir pool and launches a container on it.
func TestStoragePools(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	d.MustShoal("storage", "create", "plain", "dir")
	if _, errOut, code := d.Shoal("storage", "create", "plain", "dir"); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("duplicate pool: %d %q", code, errOut)
	}
	ls := d.MustShoal("storage", "list")
	if !strings.Contains(ls, "plain") || !strings.Contains(ls, "dir") || !strings.Contains(ls, "btrfs") {
		t.Fatalf("storage list:\n%s", ls)
	}
	c := uniq("ondir")
	d.MustShoal("launch", "busybox", c, "-s", "plain")
	d.MustShoal("exec", c, "--", "touch", "/root/x")
	d.MustShoal("snapshot", "create", c, "s1")
	d.MustShoal("exec", c, "--", "rm", "/root/x")
	d.MustShoal("snapshot", "restore", c, "s1")
	if _, _, code := d.Shoal("exec", c, "--", "test", "-e", "/root/x"); code != 0 {
		t.Fatal("restore on the dir pool did not bring the file back")
	}
	if _, err := os.Stat(filepath.Join(d.StateDir, "storage-pools", "plain")); err != nil {
		t.Fatalf("dir pool directory: %v", err)
	}
	d.MustShoal("delete", "-f", c)

	// A btrfs pool on an existing btrfs mount (here one of the test's own).
	ctx := context.Background()
	mnt := filepath.Join(d.StateDir, "ext-mnt")
	if err := btrfs.CreateLoopPool(ctx, filepath.Join(d.StateDir, "ext.img"), 1<<30, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { btrfs.UnmountPool(context.Background(), mnt) })
	d.MustShoal("storage", "create", "ext", "btrfs", "source="+mnt)
	e := uniq("onext")
	d.MustShoal("launch", "busybox", e, "-s", "ext")
	if got := d.MustShoal("exec", e, "--", "hostname"); got != e+"\n" {
		t.Fatalf("container on the external btrfs pool: %q", got)
	}
	if vols, _ := filepath.Glob(filepath.Join(mnt, "volumes", "containers*")); len(vols) != 1 {
		t.Fatalf("container volume not on the external mount: %v", vols)
	}
	d.MustShoal("delete", "-f", e)
}

// TestGRPCTooling checks the gRPC server offers health and reflection, so
// grpcurl-style tools work without proto files.
func TestGRPCTooling(t *testing.T) {
	d := startDaemon(t)
	conn, err := grpc.NewClient("unix://"+d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"shoal.v1.ContainerService", "shoal.v1.ImageService", "shoal.v1.StorageService",
		"shoal.v1.NetworkService", "shoal.v1.OperationService", "shoal.v1.EventService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lacks %s: %v", want, names)
		}
	}
	// The unix socket is root's and the admin group's: mode 0660, and the
	// group is shoal-admin where that group exists (install.sh creates it).
	fi, err := os.Stat(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v, want 0660", fi.Mode())
	}
	if g, err := user.LookupGroup("shoal-admin"); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || strconv.Itoa(int(st.Gid)) != g.Gid || st.Uid != 0 {
			t.Errorf("socket owner: %+v, want root:shoal-admin (%s)", fi.Sys(), g.Gid)
		}
	} else if os.Getenv("CI") == "true" {
		t.Errorf("group shoal-admin missing (scripts/install.sh creates it): %v", err)
	}
}

// hostCgroup reads a cgroup v1 file of a process from the host.
func hostCgroup(t *testing.T, pid int, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[1], parts[2], file))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(v))
			}
		}
	}
	t.Fatalf("no %s cgroup for pid %d", controller, pid)
	return ""
}
