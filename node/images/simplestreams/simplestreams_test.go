package simplestreams

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/images"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mksquashfs", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/install.sh installs squashfs-tools)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
}

// tree publishes one image (a rootfs with /etc/hello) and serves it over
// TLS; it returns the client's arguments.
func tree(t *testing.T) (dir, url, pin string) {
	t.Helper()
	needTools(t)
	ctx := context.Background()
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "etc", "hello"), []byte("hi\n"), 0o644)
	var unified bytes.Buffer
	md := images.Metadata{Architecture: "x86_64", CreationDate: 1700000000, Properties: map[string]string{"os": "Tiny", "release": "1.0"}}
	if err := images.Pack(ctx, rootfs, md, &unified); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	meta, sq, got, err := Split(ctx, &unified, work)
	if err != nil {
		t.Fatal(err)
	}
	if got.Properties["os"] != "Tiny" {
		t.Fatalf("split metadata %v", got)
	}
	dir = t.TempDir()
	if err := WriteTree(dir, []TreeImage{{Meta: meta, Squashfs: sq, Metadata: got, Aliases: []string{"tiny"}}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return dir, srv.URL, CertFingerprint(srv.Certificate())
}

func TestRoundTrip(t *testing.T) {
	_, url, pin := tree(t)
	ctx := context.Background()
	c, err := NewClient(url, pin)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Images(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("images %v, %v", all, err)
	}
	for _, ref := range []string{"tiny", "tiny/1.0", "tiny/1.0/default", "tiny:1.0:amd64:default", all[0].Fingerprint[:12]} {
		img, err := c.Resolve(ctx, ref, "amd64")
		if err != nil || img.Fingerprint != all[0].Fingerprint {
			t.Fatalf("resolve %q: %v, %v", ref, img.Fingerprint, err)
		}
	}
	if _, err := c.Resolve(ctx, "tiny", "arm64"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve for another arch: %v", err)
	}
	dl := t.TempDir()
	var last int64
	meta, rootfs, _, err := c.Download(ctx, all[0], dl, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if last != all[0].Size() {
		t.Fatalf("progress ended at %d of %d", last, all[0].Size())
	}
	var out bytes.Buffer
	if _, err := Unify(ctx, meta, rootfs, t.TempDir(), map[string]string{"source.fingerprint": all[0].Fingerprint}, &out); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	md, err := images.Unpack(ctx, &out, dst)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "etc", "hello")); string(b) != "hi\n" || md.Properties["source.fingerprint"] != all[0].Fingerprint || md.Properties["os"] != "Tiny" {
		t.Fatalf("unified image: hello %q, metadata %v", b, md)
	}
}

func TestRefusesBadServers(t *testing.T) {
	dir, url, pin := tree(t)
	ctx := context.Background()
	// Another certificate than the pinned one.
	if c, _ := NewClient(url, strings.Repeat("0", 64)); c != nil {
		if _, err := c.Images(ctx); err == nil || !strings.Contains(err.Error(), "pinned") {
			t.Fatalf("wrong pin: %v", err)
		}
	}
	// No pin: the test server's certificate chains to no trusted CA.
	if c, _ := NewClient(url, ""); c != nil {
		if _, err := c.Images(ctx); err == nil {
			t.Fatalf("an untrusted certificate was accepted without a pin")
		}
	}
	if _, err := NewClient("http://example.org", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("plain http: %v", err)
	}
	c, _ := NewClient(url, pin)
	img, err := c.Resolve(ctx, "tiny", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	// A squashfs changed on the server: refused, nothing left behind.
	sq := filepath.Join(dir, img.Rootfs.Path)
	b, _ := os.ReadFile(sq)
	b[len(b)/2] ^= 0xff
	os.WriteFile(sq, b, 0o644)
	dl := t.TempDir()
	if _, _, _, err := c.Download(ctx, img, dl, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("tampered squashfs: %v", err)
	}
	if left, _ := os.ReadDir(dl); len(left) != 0 {
		t.Fatalf("a failed download left %d files", len(left))
	}
	// A path out of the tree in the index.
	var p products
	raw, _ := os.ReadFile(filepath.Join(dir, "streams", "v1", "images.json"))
	json.Unmarshal(raw, &p)
	for name, pr := range p.Products {
		for vn, v := range pr.Versions {
			it := v.Items["root.squashfs"]
			it.Path = "../../etc/passwd"
			v.Items["root.squashfs"] = it
			pr.Versions[vn] = v
		}
		p.Products[name] = pr
	}
	raw, _ = json.Marshal(p)
	os.WriteFile(filepath.Join(dir, "streams", "v1", "images.json"), raw, 0o644)
	img, err = c.Resolve(ctx, "tiny", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c.Download(ctx, img, t.TempDir(), nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "leaves the tree") {
		t.Fatalf("path out of the tree: %v", err)
	}
}

// A server that stops sending in the middle of a file fails the download
// after the idle timeout, naming the file, and leaves nothing behind.
func TestDownloadStalled(t *testing.T) {
	dir, _, _ := tree(t)
	release := make(chan struct{})
	defer close(release)
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".squashfs") {
			files.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 4096))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, CertFingerprint(srv.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	c.IdleTimeout = 300 * time.Millisecond
	ctx := context.Background()
	img, err := c.Resolve(ctx, "tiny", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	dl := t.TempDir()
	_, _, _, err = c.Download(ctx, img, dl, nil)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), ".squashfs") {
		t.Fatalf("stalled server: %v", err)
	}
	if left, _ := os.ReadDir(dl); len(left) != 0 {
		t.Fatalf("a stalled download left %d files", len(left))
	}
}
