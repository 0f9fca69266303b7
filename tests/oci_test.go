package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// requireUmoci fails (CI=true) or skips unless umoci is installed.
func requireUmoci(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"umoci", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: run scripts/install.sh (umoci, busybox-static)", tool)
			}
			t.Skipf("%s is missing (scripts/install.sh installs it)", tool)
		}
	}
}

// buildOCILayout makes an OCI image layout with umoci: a busybox rootfs in
// one layer, then a layer that deletes a file (a whiteout) and adds the
// app's directory; the config's Entrypoint and Cmd write what the app
// sees (its Env, working directory and uid) to a file and then sleep.
func buildOCILayout(t *testing.T, dir string) string {
	t.Helper()
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	img := layout + ":app"
	mustHost(t, "umoci", "init", "--layout", layout)
	mustHost(t, "umoci", "new", "--image", img)
	mustHost(t, "umoci", "unpack", "--image", img, bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "etc", "srv", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep", "ps", "cat", "echo", "id", "pwd", "test", "ls"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc", "doomed"), []byte("the second layer deletes me\n"), 0o644)
	mustHost(t, "umoci", "repack", "--image", img, bundle)
	if err := os.RemoveAll(bundle); err != nil {
		t.Fatal(err)
	}
	mustHost(t, "umoci", "unpack", "--image", img, bundle)
	if err := os.Remove(filepath.Join(rootfs, "etc", "doomed")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rootfs, "srv", "index.html"), []byte("hello\n"), 0o644)
	os.Chown(filepath.Join(rootfs, "srv"), 1000, 1000)
	mustHost(t, "umoci", "repack", "--image", img, bundle)
	mustHost(t, "umoci", "config", "--image", img,
		"--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
		"--config.cmd", `echo "$GREETING from $(pwd) as $(id -u)" > /tmp/started; exec sleep 100000`,
		"--config.env", "GREETING=hello there", "--config.workingdir", "/srv", "--config.user", "1000:1000")
	mustHost(t, "umoci", "gc", "--layout", layout)
	return layout
}

// TestOCIImage: an OCI image built with umoci (two layers, the second
// with a whiteout) is imported through the CLI as a tar archive and as a
// layout directory (the same image both ways), launched as a container
// whose entrypoint runs under LXC's minimal init with the image's Env,
// WorkingDir and User, and stops cleanly; broken archives are refused with
// one line and leave no image.
func TestOCIImage(t *testing.T) {
	requireUmoci(t)
	d := startDaemon(t)
	c1 := uniq("oci")
	alias := uniq("app")
	t.Cleanup(func() {
		d.Shoal("delete", "-f", c1)
		d.Shoal("image", "delete", alias)
		d.Shoal("image", "delete", alias+"-other")
	})
	work := t.TempDir()
	layout := buildOCILayout(t, work)
	archive := filepath.Join(work, "app.oci.tar")
	mustHost(t, "tar", "-C", layout, "-cf", archive, ".")

	before := len(clusterImages(t, d))
	out := d.MustShoal("image", "import", archive, "--alias", alias)
	t.Logf("image import: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "Containers of it run: /bin/sh -c") {
		t.Fatalf("import output does not say what containers run: %q", out)
	}
	var info imageRow
	for _, img := range clusterImages(t, d) {
		for _, a := range img.Aliases {
			if a == alias {
				info.Fingerprint, info.Properties = img.Fingerprint, img.Properties
			}
		}
	}
	if p := info.Properties; p["source.format"] != "oci" || p["oci.entrypoint"] != `["/bin/sh","-c"]` ||
		p["oci.workingdir"] != "/srv" || p["oci.user"] != "1000:1000" || !strings.Contains(p["oci.env"], "GREETING=hello there") {
		t.Fatalf("the image's properties do not keep the OCI config: %v", p)
	}

	d.MustShoal("launch", alias, c1)
	var started string
	d.WaitFor("the entrypoint's file", time.Minute, func() bool {
		o, _, code := d.Shoal("exec", c1, "--", "cat", "/tmp/started")
		started = o
		return code == 0 && o != ""
	})
	if started != "hello there from /srv as 1000\n" {
		t.Fatalf("the entrypoint saw %q; want its Env, WorkingDir and User", started)
	}
	ps := d.MustShoal("exec", c1, "--", "ps")
	t.Logf("ps:\n%s", ps)
	var initLine, appLine bool
	for _, l := range strings.Split(ps, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "1" && strings.Contains(l, "init") {
			initLine = true
		}
		// busybox ps names uid 1000 from the image's /etc/passwd.
		if len(f) >= 3 && f[1] == "app" && strings.Contains(l, "sleep 100000") {
			appLine = true
		}
	}
	if !initLine || !appLine {
		t.Fatalf("want LXC's init as pid 1 and the entrypoint's sleep as uid 1000 (app):\n%s", ps)
	}
	if _, _, code := d.Shoal("exec", c1, "--", "test", "-e", "/etc/doomed"); code == 0 {
		t.Fatal("/etc/doomed survived the second layer's whiteout")
	}
	if o := d.MustShoal("exec", c1, "--", "cat", "/srv/index.html"); o != "hello\n" {
		t.Fatalf("/srv/index.html = %q", o)
	}
	t0 := time.Now()
	d.MustShoal("stop", c1)
	if took := time.Since(t0); took > 20*time.Second {
		t.Fatalf("stop took %s: the init did not end the app on the halt signal", took)
	}
	if st := d.List()[c1].State.Status; !strings.EqualFold(st, "stopped") {
		t.Fatalf("%s is %q after stop", c1, st)
	}
	d.MustShoal("start", c1)
	d.WaitFor("the app again after a restart", time.Minute, func() bool {
		o, _, code := d.Shoal("exec", c1, "--", "ps")
		return code == 0 && strings.Contains(o, "sleep 100000")
	})

	// The layout directory is the same image: the conversion is
	// deterministic.
	out = d.MustShoal("image", "import", layout)
	if !strings.Contains(out, info.Fingerprint[:12]) {
		t.Fatalf("importing the layout directory gave %q, want the image %.12s again", out, info.Fingerprint)
	}
	if n := len(clusterImages(t, d)); n != before+1 {
		t.Fatalf("%d images, want %d", n, before+1)
	}

	// Two tags of different images: the import wants --tag.
	two := filepath.Join(work, "two")
	mustHost(t, "cp", "-a", layout, two)
	mustHost(t, "umoci", "config", "--image", two+":app", "--tag", "other", "--config.cmd", "exec sleep 200000")
	mustFail(t, d, "name one with --tag", "image", "import", two)
	if n := len(clusterImages(t, d)); n != before+1 {
		t.Fatalf("%d images after an ambiguous import, want %d", n, before+1)
	}
	if out := d.MustShoal("image", "import", two, "--tag", "other", "--alias", alias+"-other"); !strings.Contains(out, "exec sleep 200000") {
		t.Fatalf("import --tag other: %q", out)
	}
	d.MustShoal("image", "delete", alias+"-other")

	// Broken input: one line, InvalidArgument, nothing stored.
	garbage := filepath.Join(work, "garbage.tar")
	os.WriteFile(garbage, bytes.Repeat([]byte("no tar here "), 200), 0o644)
	mustFail(t, d, "not a tar archive", "image", "import", garbage)
	broken := filepath.Join(work, "broken")
	mustHost(t, "cp", "-a", layout, broken)
	blobs, _ := filepath.Glob(filepath.Join(broken, "blobs", "sha256", "*"))
	var biggest string
	var size int64
	for _, b := range blobs {
		if fi, err := os.Stat(b); err == nil && fi.Size() > size {
			biggest, size = b, fi.Size()
		}
	}
	f, err := os.OpenFile(biggest, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupt"), size/2)
	f.Close()
	mustFail(t, d, "digest mismatch", "image", "import", broken)
	os.Remove(filepath.Join(broken, "index.json"))
	mustFail(t, d, "no index.json", "image", "import", broken)
	if n := len(clusterImages(t, d)); n != before+1 {
		t.Fatalf("%d images after refused imports, want %d", n, before+1)
	}
	assertNoOCIWork(t, d)
}

// assertNoOCIWork checks that no conversion left its tree behind.
func assertNoOCIWork(t *testing.T, d *harness.Daemon) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(d.StateDir, "images", ".tmp", "*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left in the image store: %v", left)
	}
}
