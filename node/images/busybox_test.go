package images

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// requireBusybox checks BuildBusybox's prerequisites.
func requireBusybox(t testing.TB) {
	t.Helper()
	requireRoot(t)
	requireFile(t, HostBusybox, "busybox-static")
	if _, err := checkStatic(HostBusybox); err != nil {
		missing(t, "a static "+HostBusybox+" (Debian package busybox-static): "+err.Error())
	}
}

func TestBuildBusybox(t *testing.T) {
	requireBusybox(t)
	dst := t.TempDir()
	md, err := BuildBusybox(context.Background(), dst)
	if err != nil {
		t.Fatalf("BuildBusybox: %v", err)
	}
	if md.Architecture == "" || md.Properties["os"] != "busybox" || md.Properties["release"] == "unknown" {
		t.Errorf("metadata = %+v", md)
	}
	out, err := exec.Command("chroot", dst, "/bin/sh", "-c", "echo ok").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("chroot %s /bin/sh -c 'echo ok' = %q, %v", dst, out, err)
	}
	// The applets the boot scripts use must exist, and the scripts must parse.
	// In fresh UTS and network namespaces: chroot alone shares the host's,
	// and a stray hostname or ip call would change the host.
	requireCommand(t, "unshare", "util-linux")
	for _, cmd := range []string{
		"ip -o link show lo", "udhcpc --help 2>&1 | grep -q udhcpc", "hostname -F /etc/hostname && hostname",
		"sh -n /etc/init.d/rcS", "sh -n /usr/share/udhcpc/default.script", "test -x /sbin/init",
		"nohup sh -c 'kill -HUP $$; echo survived' | grep -qx survived",
	} {
		if out, err := exec.Command("unshare", "--uts", "--net", "chroot", dst, "/bin/sh", "-c", cmd).CombinedOutput(); err != nil {
			t.Errorf("chroot: %s: %v: %s", cmd, err, out)
		}
	}
	inittab, _ := os.ReadFile(filepath.Join(dst, "etc/inittab"))
	if bytes.Contains(inittab, []byte("getty")) || !bytes.Contains(inittab, []byte("::sysinit:/etc/init.d/rcS")) {
		t.Errorf("inittab:\n%s", inittab)
	}
	if fi, err := os.Stat(filepath.Join(dst, "tmp")); err != nil || fi.Mode().Perm()|fi.Mode()&os.ModeSticky != 0o777|os.ModeSticky {
		t.Errorf("/tmp mode = %v, %v", fi.Mode(), err)
	}
	for _, d := range []string{"proc", "sys", "run", "dev/pts", "root", "etc/hostname", "etc/passwd", "etc/group", "etc/hosts"} {
		if _, err := os.Stat(filepath.Join(dst, d)); err != nil {
			t.Errorf("missing /%s: %v", d, err)
		}
	}

	// The image survives Pack → Unpack, and still runs.
	var buf bytes.Buffer
	if err := Pack(context.Background(), dst, md, &buf); err != nil {
		t.Fatal(err)
	}
	again := t.TempDir()
	if _, err := Unpack(context.Background(), &buf, again); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chroot", again, "/bin/sh", "-c", "echo ok").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("unpacked image: %q, %v", out, err)
	}
}

func TestUdhcpcScriptAppliesLease(t *testing.T) {
	requireBusybox(t)
	dst := t.TempDir()
	if _, err := BuildBusybox(context.Background(), dst); err != nil {
		t.Fatal(err)
	}
	// Apply a lease to a veth eth0 in a throwaway network namespace, with
	// the image's own busybox ip.
	requireCommand(t, "unshare", "util-linux")
	requireCommand(t, "ip", "iproute2")
	// Never in the host's namespace: the guard stops the script if unshare
	// did not give it a new one (and adding eth0 fails where eth0 exists).
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	script := `set -e
[ "$(readlink /proc/self/ns/net)" != "$2" ] || { echo "still in the host network namespace"; exit 1; }
ip link add eth0 type veth peer name peer0
ip link set peer0 up
env -i PATH=/sbin:/bin interface=eth0 ip=10.0.3.5 mask=24 broadcast=10.0.3.255 router=10.0.3.1 \
	dns="10.0.3.1 1.1.1.1" domain=shoal chroot "$1" /usr/share/udhcpc/default.script bound
ip -4 -o addr show dev eth0
ip route show default`
	out, err := exec.Command("unshare", "--net", "sh", "-c", script, "sh", dst, hostNS).CombinedOutput()
	if err != nil {
		t.Fatalf("default.script bound: %v: %s", err, out)
	}
	for _, want := range []string{"inet 10.0.3.5/24 brd 10.0.3.255", "default via 10.0.3.1 dev eth0"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("after the lease, no %q in:\n%s", want, out)
		}
	}
	resolv, _ := os.ReadFile(filepath.Join(dst, "etc/resolv.conf"))
	if string(resolv) != "search shoal\nnameserver 10.0.3.1\nnameserver 1.1.1.1\n" {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
}

func TestCheckStaticRefusesDynamicBinary(t *testing.T) {
	requireFile(t, "/usr/bin/env", "coreutils")
	if _, err := checkStatic("/usr/bin/env"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("checkStatic(/usr/bin/env) = %v, want ErrInvalid (it is dynamically linked)", err)
	}
}

// benchDir is where benchmarks build and unpack: SHOAL_BENCH_DIR (for
// example a btrfs pool, the real target) or the test's temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("SHOAL_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func BenchmarkBuildBusybox(b *testing.B) {
	requireBusybox(b)
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp(benchDir(b), "bb")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := BuildBusybox(context.Background(), dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnpackBusybox(b *testing.B) {
	requireBusybox(b)
	src := b.TempDir()
	md, err := BuildBusybox(context.Background(), src)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Pack(context.Background(), src, md, &buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportMetric(float64(buf.Len()), "image-bytes")
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp(benchDir(b), "bb")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := Unpack(context.Background(), bytes.NewReader(buf.Bytes()), dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnpackBusyboxZstd is BenchmarkUnpackBusybox with the image
// recompressed with zstd, whose decoder is about three times faster than
// gzip's here.
func BenchmarkUnpackBusyboxZstd(b *testing.B) {
	requireBusybox(b)
	src := b.TempDir()
	md, err := BuildBusybox(context.Background(), src)
	if err != nil {
		b.Fatal(err)
	}
	var gz, zst bytes.Buffer
	if err := Pack(context.Background(), src, md, &gz); err != nil {
		b.Fatal(err)
	}
	zr, err := gzip.NewReader(&gz)
	if err != nil {
		b.Fatal(err)
	}
	zw, err := zstd.NewWriter(&zst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(zw, zr); err != nil {
		b.Fatal(err)
	}
	zw.Close()
	b.SetBytes(int64(zst.Len()))
	b.ReportMetric(float64(zst.Len()), "image-bytes")
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp(benchDir(b), "bb")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := Unpack(context.Background(), bytes.NewReader(zst.Bytes()), dst); err != nil {
			b.Fatal(err)
		}
	}
}
