package images

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debianCacheDir is where the Debian test keeps its cache between runs.
func debianCacheDir() string {
	if d := os.Getenv("SHOAL_IMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultDebianCacheDir
}

func TestBuildDebianRejectsUnknownSuite(t *testing.T) {
	_, err := BuildDebian(context.Background(), DebianOptions{Suite: "sid"}, t.TempDir(), nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "bookworm, trixie") {
		t.Fatalf("BuildDebian(sid) = %v, want ErrInvalid naming the allowed suites", err)
	}
}

// TestBuildDebian runs a real debootstrap against the Debian mirror the first
// time (about a minute) and reuses the cache in SHOAL_IMAGE_CACHE (default
// /var/cache/shoal/debian) afterwards. It runs twice: the second build must
// come from the cache.
func TestBuildDebian(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: a fresh Debian build downloads ~60 MB from the mirror and takes about a minute")
	}
	requireRoot(t)
	requireCommand(t, "debootstrap", "debootstrap")
	requireCommand(t, "unshare", "util-linux")
	suite := os.Getenv("SHOAL_DEBIAN_SUITE")
	if suite == "" {
		suite = "bookworm"
	}
	opts := DebianOptions{Suite: suite, CacheDir: debianCacheDir()}
	for _, round := range []string{"first", "cached"} {
		dst := t.TempDir()
		phases := map[string]int64{}
		start := time.Now()
		md, err := BuildDebian(context.Background(), opts, dst, func(phase string, done, total int64) {
			phases[phase] = done
		})
		if err != nil {
			t.Fatalf("%s BuildDebian: %v", round, err)
		}
		t.Logf("%s build: %s, progress %v", round, time.Since(start).Round(time.Millisecond), phases)
		if round == "cached" && phases["unpack-cache"] != 1 {
			t.Errorf("second build did not come from the cache: %v", phases)
		}
		if md.Properties["os"] != "debian" || md.Properties["release"] != suite || md.Architecture == "" {
			t.Errorf("metadata = %+v", md)
		}
		checkDebianRootfs(t, dst)
	}
	if _, err := os.Stat(filepath.Join(opts.CacheDir, suite+".tar.gz")); err != nil {
		t.Errorf("no cache: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(opts.CacheDir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left in the cache: %v", left)
	}
}

// checkDebianRootfs checks what BuildDebian promises about a rootfs.
func checkDebianRootfs(t *testing.T, dst string) {
	t.Helper()
	init, err := filepath.EvalSymlinks(filepath.Join(dst, "sbin/init"))
	if err != nil || filepath.Base(init) != "systemd" {
		t.Errorf("/sbin/init resolves to %q, %v; want systemd", init, err)
	}
	dropIn, err := os.ReadFile(filepath.Join(dst, "etc/systemd/system/service.d/shoal-criu.conf"))
	if err != nil || !bytes.Contains(dropIn, []byte("IPAddressDeny=\n")) || !bytes.Contains(dropIn, []byte("IPAccounting=no")) {
		t.Errorf("CRIU drop-in = %q, %v", dropIn, err)
	}
	ifaces, err := os.ReadFile(filepath.Join(dst, "etc/network/interfaces"))
	if err != nil || !bytes.Contains(ifaces, []byte("auto eth0\niface eth0 inet dhcp")) {
		t.Errorf("/etc/network/interfaces = %q, %v", ifaces, err)
	}
	for _, unit := range debianMasked {
		if target, err := os.Readlink(filepath.Join(dst, "etc/systemd/system", unit)); err != nil || target != "/dev/null" {
			t.Errorf("%s not masked: %q, %v", unit, target, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "etc/machine-id")); err != nil || fi.Size() != 0 {
		t.Errorf("/etc/machine-id not empty: %v", err)
	}
	for _, bin := range []string{"sbin/dhclient", "sbin/ifup", "bin/ip"} {
		if _, err := os.Stat(filepath.Join(dst, bin)); err != nil {
			t.Errorf("missing /%s: %v", bin, err)
		}
	}
	if debs, _ := filepath.Glob(filepath.Join(dst, "var/cache/apt/archives/*.deb")); len(debs) != 0 {
		t.Errorf("apt cache not cleaned: %d .deb files", len(debs))
	}
	if _, err := os.Stat(filepath.Join(dst, "etc/dpkg/dpkg.cfg.d/shoal-unsafe-io")); err == nil {
		t.Error("force-unsafe-io left in the image")
	}
	if out, err := exec.Command("chroot", dst, "/bin/true").CombinedOutput(); err != nil {
		t.Errorf("chroot %s /bin/true: %v: %s", dst, err, out)
	}
	if mounts, _ := mountsUnder(dst); len(mounts) != 0 {
		t.Errorf("mounts left under %s: %v", dst, mounts)
	}
}

func TestBuildDebianFailureLeavesNoCache(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "debootstrap", "debootstrap")
	requireCommand(t, "unshare", "util-linux")
	cache := t.TempDir()
	dst := t.TempDir()
	// Nothing listens on port 9 of 127.0.0.1: debootstrap fails at once.
	opts := DebianOptions{Suite: "bookworm", Mirror: "http://127.0.0.1:9/debian", CacheDir: cache}
	if _, err := BuildDebian(context.Background(), opts, dst, nil); err == nil {
		t.Fatal("BuildDebian from an unreachable mirror succeeded")
	}
	if left, _ := os.ReadDir(cache); len(left) != 0 {
		t.Errorf("failed build left %d files in the cache", len(left))
	}
	if left, _ := os.ReadDir(dst); len(left) != 0 {
		t.Errorf("failed build left %d files in dst", len(left))
	}
}

func TestBuildDebianCancel(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "debootstrap", "debootstrap")
	requireCommand(t, "unshare", "util-linux")
	// A mirror that accepts the first request and never answers: the build
	// is cancelled while debootstrap waits on it.
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "gone", http.StatusServiceUnavailable)
	}))
	defer mirror.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dst := t.TempDir()
	cache := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := BuildDebian(ctx, DebianOptions{Suite: "trixie", Mirror: mirror.URL + "/debian", CacheDir: cache}, dst, nil)
		done <- err
	}()
	select {
	case <-asked:
	case err := <-done:
		t.Fatalf("build ended before reaching the mirror: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("debootstrap never reached the mirror")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled build = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cancelled build did not return")
	}
	if mounts, _ := mountsUnder(dst); len(mounts) != 0 {
		t.Errorf("mounts left under %s: %v", dst, mounts)
	}
	if left, _ := os.ReadDir(dst); len(left) != 0 {
		t.Errorf("cancelled build left %d files in dst", len(left))
	}
	if left, _ := os.ReadDir(cache); len(left) != 0 {
		t.Errorf("cancelled build left %d files in the cache", len(left))
	}
}

func TestDebootstrapProgress(t *testing.T) {
	out := `I: Retrieving InRelease 
I: Checking Release signature
I: Retrieving Packages 
I: Resolving dependencies of required packages...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
W: Couldn't download package foo
I: Extracting adduser...
I: Extracting apt...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Unpacking the base system...
I: Configuring required packages...
I: Configuring apt...
I: Base system installed successfully.
`
	type call struct {
		phase       string
		done, total int64
	}
	var got []call
	d := &debootstrapProgress{p: func(phase string, done, total int64) { got = append(got, call{phase, done, total}) }, counts: map[string]int64{}}
	last := d.scan(strings.NewReader(out))
	want := []call{{"resolve", 0, -1}, {"download", 1, -1}, {"download", 2, -1}, {"extract", 1, 2}, {"extract", 2, 2}, {"unpack", 1, 2}, {"configure", 1, 2}}
	if len(got) != len(want) {
		t.Fatalf("progress = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("progress = %v, want %v", got, want)
		}
	}
	if last[len(last)-1] != "I: Base system installed successfully." {
		t.Fatalf("last line = %q", last[len(last)-1])
	}
}
