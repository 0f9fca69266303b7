package tests

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// requireSquashfs fails (CI=true) or skips unless squashfs-tools are here.
func requireSquashfs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mksquashfs", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: run scripts/install.sh (squashfs-tools)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
}

var servingRE = regexp.MustCompile(`Serving .* on (https://\S+) \(certificate sha256 ([0-9a-f]+)\)`)

// serveImages runs `shoal image serve DIR IMAGE... --listen 127.0.0.1:0`
// in the background and returns its URL and certificate fingerprint.
func serveImages(t *testing.T, d *harness.Daemon, dir string, images ...string) (string, string) {
	t.Helper()
	args := append([]string{"image", "serve", dir}, images...)
	cmd := exec.Command(filepath.Join(d.BinDir, "shoal"), append(args, "--listen", "127.0.0.1:0")...)
	cmd.Env = append(os.Environ(), "SHOAL_SOCKET="+d.Socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			t.Logf("image serve: %s", sc.Text())
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1:]
			}
		}
	}()
	select {
	case m := <-found:
		return m[0], m[1]
	case <-time.After(2 * time.Minute):
		t.Fatal("shoal image serve did not start serving")
	}
	return "", ""
}

type imageRow struct {
	Fingerprint string            `json:"fingerprint"`
	Aliases     []string          `json:"aliases"`
	Properties  map[string]string `json:"properties"`
}

func clusterImages(t *testing.T, d *harness.Daemon) []imageRow {
	t.Helper()
	var resp struct {
		Images []imageRow `json:"images"`
	}
	if err := json.Unmarshal([]byte(d.MustShoal("image", "list", "--format", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Images
}

// TestImageServer: the cluster's busybox image is published as a
// simplestreams tree (split: lxd.tar.xz + root.squashfs) and served over
// HTTPS by `shoal image serve`; the server is added as a remote (its
// self-signed certificate refused until accepted, then pinned); `image
// list imgs:` shows it; `launch imgs:busybox` pulls it with progress into
// the cluster and runs it; a second launch uses the copy already pulled;
// an image copied with --auto-update follows the server when it publishes
// a newer image under the same name; bad references are refused.
func TestImageServer(t *testing.T) {
	requireSquashfs(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	d := startDaemon(t)
	ensureBusybox(t, d)
	c1, c2, c3 := uniq("ic"), uniq("ic"), uniq("ic")
	t.Cleanup(func() {
		for _, c := range []string{c1, c2, c3} {
			d.Shoal("delete", "-f", c)
		}
	})
	tree := t.TempDir()
	url, certFP := serveImages(t, d, tree, "busybox")
	for _, f := range []string{"streams/v1/index.json", "streams/v1/images.json"} {
		if _, err := os.Stat(filepath.Join(tree, f)); err != nil {
			t.Fatalf("the tree lacks %s", f)
		}
	}
	if sq, _ := filepath.Glob(filepath.Join(tree, "images", "*", "root.squashfs")); len(sq) != 1 {
		t.Fatalf("the tree holds %d squashfs files, want 1", len(sq))
	}

	mustFail(t, d, "--accept-certificate", "remote", "add", "imgs", url, "--protocol", "simplestreams")
	d.MustShoal("remote", "add", "imgs", url, "--protocol", "simplestreams", "--accept-certificate")
	if pin, _ := os.ReadFile(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "shoal", "remotes", "imgs", "certificate")); strings.TrimSpace(string(pin)) != certFP {
		t.Fatalf("pinned %q, the server's certificate is %s", pin, certFP)
	}
	if rl := d.MustShoal("remote", "list"); !strings.Contains(rl, "simplestreams") {
		t.Fatalf("remote list:\n%s", rl)
	}
	recs, err := csv.NewReader(strings.NewReader(d.MustShoal("image", "list", "imgs:", "--format", "csv"))).ReadAll()
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0][0], "busybox") || recs[0][3] != "amd64" {
		t.Fatalf("image list imgs: %v (%v)", recs, err)
	}
	remoteFP := recs[0][1]

	before := len(clusterImages(t, d))
	out := d.MustShoal("launch", "imgs:busybox", c1)
	t.Logf("launch imgs:busybox: %s", strings.TrimSpace(out))
	if got := d.MustShoal("exec", c1, "--", "echo", "up"); got != "up\n" {
		t.Fatalf("exec in the container from the image server: %q", got)
	}
	imgs := clusterImages(t, d)
	if len(imgs) != before+1 {
		t.Fatalf("%d images after the pull, want %d", len(imgs), before+1)
	}
	var pulled imageRow
	for _, img := range imgs {
		if img.Properties["source.fingerprint"] != "" {
			pulled = img
		}
	}
	if !strings.HasPrefix(pulled.Properties["source.fingerprint"], remoteFP) || pulled.Properties["source.server"] != url {
		t.Fatalf("the pulled image's source: %v", pulled.Properties)
	}
	// Pulled once: a second launch and a copy reuse it.
	d.MustShoal("launch", "imgs:busybox", c2)
	d.MustShoal("image", "copy", "imgs:busybox", "local:", "--alias", "bb-auto", "--auto-update")
	if n := len(clusterImages(t, d)); n != before+1 {
		t.Fatalf("%d images after a second launch and a copy, want still %d", n, before+1)
	}

	// The server publishes a newer version of the product: the
	// auto-updated alias follows it.
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo v2 > /etc/shoal-version")
	d.MustShoal("stop", c1)
	d.MustShoal("publish", c1, "--alias", "bb-v2")
	d.MustShoal("image", "serve", tree, "busybox", "bb-v2") // rewrites the tree the server serves: two versions now
	if out := d.MustShoal("image", "list", "imgs:", "--format", "csv"); strings.Count(out, "\n") != 1 {
		t.Fatalf("the server lists its product's newest version, once:\n%s", out)
	}
	var v2 string
	for _, img := range clusterImages(t, d) {
		for _, a := range img.Aliases {
			if a == "bb-v2" {
				v2 = img.Fingerprint
			}
		}
	}
	d.MustShoal("cluster", "config", "set", "images.auto_update_interval=2s")
	var moved string
	d.WaitFor("bb-auto to follow the server's newer image", 2*time.Minute, func() bool {
		for _, img := range clusterImages(t, d) {
			for _, a := range img.Aliases {
				if a == "bb-auto" && img.Fingerprint != pulled.Fingerprint {
					moved = img.Fingerprint
					return true
				}
			}
		}
		return false
	})
	if moved == v2 {
		t.Fatalf("bb-auto points at the published image itself, not at a pull of the server's")
	}
	d.MustShoal("launch", "bb-auto", c3)
	if got := d.MustShoal("exec", c3, "--", "cat", "/etc/shoal-version"); got != "v2\n" {
		t.Fatalf("a container of the updated image reads %q", got)
	}

	mustFail(t, d, "not an image server", "launch", "nosuch:busybox", uniq("ic"))
	mustFail(t, d, "no image", "image", "copy", "imgs:nope/1", "local:")
	mustFail(t, d, "only local:", "image", "copy", "imgs:busybox", "other:")
	mustFail(t, d, "images.auto_update_interval", "cluster", "config", "set", "images.auto_update_interval=often")
}
