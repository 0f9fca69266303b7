package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// ociEntry is one entry of a test layer.
type ociEntry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

// layerBytes writes a layer tar.
func layerBytes(t *testing.T, entries ...ociEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link, Uid: e.uid, Gid: e.uid,
			ModTime: time.Unix(1700000000, 0)}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func zstdBytes(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// testLayer is a layer as the test writes it: its tar, and how the blob is
// compressed.
type testLayer struct {
	tar       []byte
	comp      string // "", "gzip", "zstd"
	mediaType string // overrides the type comp implies
}

// testImage is an image of a test layout.
type testImage struct {
	layers   []testLayer
	config   map[string]any // the config's "config" object
	arch     string
	ref      string
	platform bool // list the platform in the index
}

// layout collects the blobs and index of an OCI layout and writes it as a
// tar archive, with hooks to break it.
type layout struct {
	blobs     map[string][]byte // digest → content
	order     []string
	manifests []descriptor
	// breakBlob, if set, replaces a blob's content after its digest was
	// taken.
	breakBlob func(digest string, b []byte) []byte
	skipBlob  string // a digest not to write
	noIndex   bool
}

func newLayout() *layout { return &layout{blobs: map[string][]byte{}} }

func (l *layout) add(b []byte) string {
	d := digestOf(b)
	if _, ok := l.blobs[d]; !ok {
		l.order = append(l.order, d)
	}
	l.blobs[d] = b
	return d
}

// image adds an image and lists its manifest in the index.
func (l *layout) image(t *testing.T, img testImage) descriptor {
	t.Helper()
	var layers []descriptor
	var diffIDs []string
	for _, tl := range img.layers {
		blob, mt := tl.tar, "application/vnd.oci.image.layer.v1.tar"
		switch tl.comp {
		case "gzip":
			blob, mt = gzipBytes(tl.tar), mt+"+gzip"
		case "zstd":
			blob, mt = zstdBytes(t, tl.tar), mt+"+zstd"
		}
		if tl.mediaType != "" {
			mt = tl.mediaType
		}
		layers = append(layers, descriptor{MediaType: mt, Digest: l.add(blob), Size: int64(len(blob))})
		diffIDs = append(diffIDs, digestOf(tl.tar))
	}
	arch := img.arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	cfg := map[string]any{
		"created": "2024-01-02T03:04:05Z", "architecture": arch, "os": "linux",
		"config": img.config, "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cb, _ := json.Marshal(cfg)
	m := map[string]any{"schemaVersion": 2, "mediaType": mediaOCIManifest,
		"config": descriptor{MediaType: mediaOCIConfig, Digest: l.add(cb), Size: int64(len(cb))}, "layers": layers}
	mb, _ := json.Marshal(m)
	d := descriptor{MediaType: mediaOCIManifest, Digest: l.add(mb), Size: int64(len(mb))}
	if img.ref != "" {
		d.Annotations = map[string]string{annotationRefName: img.ref}
	}
	if img.platform {
		d.Platform = &platform{OS: "linux", Architecture: arch}
	}
	l.manifests = append(l.manifests, d)
	return d
}

// tar writes the layout as a tar archive, in the order umoci's tree
// tarred would have it (blobs first).
func (l *layout) tar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	dir := func(name string) { tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}) }
	dir("./")
	dir("./blobs/")
	dir("./blobs/sha256/")
	for _, d := range l.order {
		if d == l.skipBlob {
			continue
		}
		b := l.blobs[d]
		if l.breakBlob != nil {
			b = l.breakBlob(d, b)
		}
		file("./blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if !l.noIndex {
		ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaOCIIndex, "manifests": l.manifests})
		file("./index.json", ib)
	}
	file("./oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// appImage is an application image of two layers: a base, then a layer
// that deletes a file, hides a directory's old contents, replaces a
// directory with a file and adds its own files.
func appImage(t *testing.T, comp1, comp2 string) testImage {
	base := layerBytes(t,
		ociEntry{name: "./", typ: tar.TypeDir},
		ociEntry{name: "bin/", typ: tar.TypeDir},
		ociEntry{name: "bin/app", body: "#!/bin/sh\necho app\n", mode: 0o755},
		ociEntry{name: "bin/app-link", typ: tar.TypeLink, link: "bin/app"},
		ociEntry{name: "etc/", typ: tar.TypeDir},
		ociEntry{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001:web:/srv:/bin/sh\n"},
		ociEntry{name: "etc/group", body: "root:x:0:\nweb:x:1001:\nstaff:x:50:\n"},
		ociEntry{name: "etc/old.conf", body: "old"},
		ociEntry{name: "var/cache/", typ: tar.TypeDir},
		ociEntry{name: "var/cache/a", body: "a"},
		ociEntry{name: "var/cache/sub/b", body: "b"},
		ociEntry{name: "opt/tree/deep/file", body: "deep"},
		ociEntry{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ociEntry{name: "usr/lib/", typ: tar.TypeDir},
		ociEntry{name: "srv/", typ: tar.TypeDir, uid: 1000},
	)
	top := layerBytes(t,
		ociEntry{name: "etc/.wh.old.conf"},
		ociEntry{name: "var/cache/", typ: tar.TypeDir},
		ociEntry{name: "var/cache/.wh..wh..opq"},
		ociEntry{name: "var/cache/new", body: "new"},
		ociEntry{name: "opt/tree", body: "now a file"},
		ociEntry{name: "lib/libx.so", body: "elf"}, // through the in-image symlink
		ociEntry{name: "srv/index.html", body: "hello", uid: 1000},
	)
	return testImage{
		layers: []testLayer{{tar: base, comp: comp1}, {tar: top, comp: comp2}},
		config: map[string]any{
			"Entrypoint": []string{"/bin/app"}, "Cmd": []string{"--port", "8080", "it's"},
			"Env": []string{"GREETING=hi there"}, "WorkingDir": "/srv", "User": "web:staff",
		},
		ref: "latest",
	}
}

// unpackImage unpacks a stored image into a new directory.
func unpackImage(t *testing.T, s *Store, fp string) string {
	t.Helper()
	rc, err := s.Open(fp)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dst := t.TempDir()
	if _, err := Unpack(context.Background(), rc, dst); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return dst
}

func TestImportOCILayout(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct{ name, c1, c2 string }{{"gzip+plain", "gzip", ""}, {"zstd+gzip", "zstd", "gzip"}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout()
			l.image(t, appImage(t, tc.c1, tc.c2))
			archive := l.tar(t)
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			var phases []string
			img, err := ImportWith(context.Background(), s, bytes.NewReader(archive), ImportOptions{
				Progress: func(phase string, done, total int64) { phases = append(phases, phase) }})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if len(phases) == 0 || phases[0] != "applying layer 1 of 2" {
				t.Errorf("progress phases %q", phases)
			}
			p := img.Metadata.Properties
			if img.Metadata.Architecture != kernelArch(runtime.GOARCH) || p["source.format"] != "oci" || p["oci.ref"] != "latest" ||
				p["oci.entrypoint"] != `["/bin/app"]` || p["oci.cmd"] != `["--port","8080","it's"]` ||
				p["oci.env"] != `["GREETING=hi there"]` || p["oci.workingdir"] != "/srv" || p["oci.user"] != "web:staff" ||
				!strings.HasPrefix(p["oci.init"], "/bin/app --port 8080 'it'\\''s'") || p["description"] != "OCI image latest" {
				t.Fatalf("metadata %+v", img.Metadata)
			}
			if img.Metadata.CreationDate != time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix() {
				t.Errorf("creation date %d", img.Metadata.CreationDate)
			}
			root := unpackImage(t, s, img.Fingerprint)
			want := map[string]string{
				"bin/app": "#!/bin/sh\necho app\n", "bin/app-link": "#!/bin/sh\necho app\n", "var/cache/new": "new",
				"opt/tree": "now a file", "usr/lib/libx.so": "elf", "srv/index.html": "hello", "etc/group": "root:x:0:\nweb:x:1001:\nstaff:x:50:\n",
			}
			for f, body := range want {
				if b, err := os.ReadFile(filepath.Join(root, f)); err != nil || string(b) != body {
					t.Errorf("%s = %q, %v; want %q", f, b, err, body)
				}
			}
			for _, gone := range []string{"etc/old.conf", "etc/.wh.old.conf", "var/cache/a", "var/cache/sub", "var/cache/.wh..wh..opq"} {
				if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
					t.Errorf("%s is there (%v); the whiteout should have removed it", gone, err)
				}
			}
			var a, b os.FileInfo
			a, _ = os.Stat(filepath.Join(root, "bin/app"))
			b, _ = os.Stat(filepath.Join(root, "bin/app-link"))
			if !os.SameFile(a, b) {
				t.Error("bin/app-link is not a hard link of bin/app")
			}
			if st, err := os.Stat(filepath.Join(root, "srv/index.html")); err != nil || st.Sys().(*syscall.Stat_t).Uid != 1000 {
				t.Errorf("srv/index.html owner: %v", err)
			}
			for _, d := range []string{"dev", "proc", "sys"} {
				if st, err := os.Stat(filepath.Join(root, d)); err != nil || !st.IsDir() {
					t.Errorf("/%s missing: %v", d, err)
				}
			}
			app, err := ReadAppConfig(root)
			if err != nil || app == nil {
				t.Fatalf("ReadAppConfig = %v, %v", app, err)
			}
			if strings.Join(app.Args, "|") != "/bin/app|--port|8080|it's" || app.Cwd != "/srv" || app.UID != 1000 || app.GID != 50 ||
				len(app.Env) != 2 || app.Env[0] != defaultPath || app.Env[1] != "GREETING=hi there" {
				t.Fatalf("app config %+v", app)
			}
			// The same archive gives the same image.
			again, err := Import(context.Background(), s, bytes.NewReader(archive))
			if err != nil || again.Fingerprint != img.Fingerprint {
				t.Fatalf("second import: %s, %v; want %s", again.Fingerprint, err, img.Fingerprint)
			}
			if list, _ := s.List(); len(list) != 1 {
				t.Fatalf("%d images in the store, want 1", len(list))
			}
			if left, _ := os.ReadDir(filepath.Join(dir, ".tmp")); len(left) != 0 {
				t.Fatalf("%d temporary files left", len(left))
			}
		})
	}
}

func TestImportOCICompressedArchiveAndPlatforms(t *testing.T) {
	requireRoot(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	l := newLayout()
	mk := func(arch, body string) testImage {
		return testImage{arch: arch, platform: true, ref: "multi",
			layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "arch", body: body}), comp: "gzip"}},
			config: map[string]any{"Cmd": []string{"/arch"}}}
	}
	l.image(t, mk(other, other))
	l.image(t, mk(runtime.GOARCH, runtime.GOARCH))
	// An attestation manifest, as docker buildx adds, is never picked.
	l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t)}}, config: map[string]any{"Cmd": []string{"x"}}})
	l.manifests[len(l.manifests)-1].Platform = &platform{OS: "unknown", Architecture: "unknown"}
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img, err := Import(context.Background(), s, bytes.NewReader(gzipBytes(l.tar(t))))
	if err != nil {
		t.Fatalf("Import of a gzipped layout: %v", err)
	}
	root := unpackImage(t, s, img.Fingerprint)
	if b, _ := os.ReadFile(filepath.Join(root, "arch")); string(b) != runtime.GOARCH {
		t.Fatalf("picked the %q image, want this host's", b)
	}
}

func TestImportOCIPicksByRef(t *testing.T) {
	requireRoot(t)
	l := newLayout()
	for _, ref := range []string{"one", "two"} {
		l.image(t, testImage{ref: ref, layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "which", body: ref})}},
			config: map[string]any{"Cmd": []string{"/which"}}})
	}
	// A second ref of the same manifest is the same image.
	dup := l.manifests[1]
	dup.Annotations = map[string]string{annotationRefName: "also-two"}
	l.manifests = append(l.manifests, dup)
	archive := l.tar(t)
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(context.Background(), s, bytes.NewReader(archive)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "holds 2 images (one; two,also-two)") {
		t.Fatalf("Import of two same-platform images without a ref = %v", err)
	}
	img, err := Import(WithImportRef(context.Background(), "also-two"), s, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(unpackImage(t, s, img.Fingerprint), "which")); string(b) != "two" {
		t.Fatalf("picked %q", b)
	}
	if _, err := ImportWith(context.Background(), s, bytes.NewReader(archive), ImportOptions{Ref: "three"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `no image named "three"`) {
		t.Fatalf("Import with an unknown ref = %v", err)
	}
}

// dockerSave writes an old-style docker save archive: manifest.json,
// <config digest>.json, <id>/layer.tar, the second layer a symlink to the
// first as docker writes repeated layers.
func dockerSave(t *testing.T, layers [][]byte, linkSecond bool, config map[string]any) []byte {
	t.Helper()
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, digestOf(l))
	}
	cb, _ := json.Marshal(map[string]any{"architecture": runtime.GOARCH, "os": "linux", "config": config,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cfgName := strings.TrimPrefix(digestOf(cb), "sha256:") + ".json"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var names []string
	for i, l := range layers {
		id := strings.Repeat(string(rune('a'+i)), 64)
		name := id + "/layer.tar"
		names = append(names, name)
		tw.WriteHeader(&tar.Header{Name: id + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		if i == 1 && linkSecond {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: "../" + names[0]})
			continue
		}
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(l))})
		tw.Write(l)
	}
	tw.WriteHeader(&tar.Header{Name: cfgName, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(cb))})
	tw.Write(cb)
	mb, _ := json.Marshal([]dockerManifestEntry{{Config: cfgName, RepoTags: []string{"app:1.0"}, Layers: names}})
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(mb))})
	tw.Write(mb)
	tw.Close()
	return buf.Bytes()
}

func TestImportDockerSave(t *testing.T) {
	requireRoot(t)
	l1 := layerBytes(t, ociEntry{name: "bin/", typ: tar.TypeDir}, ociEntry{name: "bin/server", body: "srv", mode: 0o755})
	l2 := layerBytes(t, ociEntry{name: "bin/.wh.server"})
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img, err := Import(context.Background(), s, bytes.NewReader(dockerSave(t, [][]byte{l1, l1, l2}, true,
		map[string]any{"Entrypoint": []string{"/bin/server"}})))
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if p := img.Metadata.Properties; p["source.format"] != "docker-save" || p["oci.ref"] != "app:1.0" || p["description"] != "Docker image app:1.0" {
		t.Fatalf("properties %v", p)
	}
	root := unpackImage(t, s, img.Fingerprint)
	if _, err := os.Lstat(filepath.Join(root, "bin/server")); !os.IsNotExist(err) {
		t.Fatalf("bin/server survived its whiteout: %v", err)
	}
	if app, err := ReadAppConfig(root); err != nil || app == nil || app.Args[0] != "/bin/server" {
		t.Fatalf("app config %+v, %v", app, err)
	}
}

// TestImportOCIRefusesBadInput: every broken archive is ErrInvalid with a
// one-line message, and leaves nothing in the store.
func TestImportOCIRefusesBadInput(t *testing.T) {
	requireRoot(t)
	good := func() *layout {
		l := newLayout()
		l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "f", body: "f"}), comp: "gzip"}},
			config: map[string]any{"Cmd": []string{"/f"}}})
		return l
	}
	layerDigest := func(l *layout) string {
		for _, d := range l.order {
			if b := l.blobs[d]; bytes.HasPrefix(b, magicGzip) {
				return d
			}
		}
		t.Fatal("no layer blob")
		return ""
	}
	cases := map[string]struct {
		archive func() []byte
		want    string
	}{
		"not a tar":          {func() []byte { return bytes.Repeat([]byte("not a tar "), 100) }, "not a tar archive"},
		"empty tar":          {func() []byte { return layerBytes(t) }, "not an image"},
		"no index":           {func() []byte { l := good(); l.noIndex = true; return l.tar(t) }, "no index.json or manifest.json"},
		"missing layer blob": {func() []byte { l := good(); l.skipBlob = layerDigest(l); return l.tar(t) }, "is missing from the archive"},
		"layer digest mismatch": {func() []byte {
			l := good()
			bad := layerDigest(l)
			l.breakBlob = func(d string, b []byte) []byte {
				if d == bad {
					return gzipBytes(layerBytes(t, ociEntry{name: "f", body: "tampered"}))
				}
				return b
			}
			return l.tar(t)
		}, "digest mismatch"},
		"corrupt gzip layer": {func() []byte {
			l := good()
			bad := layerDigest(l)
			l.breakBlob = func(d string, b []byte) []byte {
				if d == bad {
					b = bytes.Clone(b)
					b[len(b)/2] ^= 0xff
				}
				return b
			}
			return l.tar(t)
		}, "digest mismatch"},
		"manifest digest mismatch": {func() []byte {
			l := good()
			m := l.manifests[0].Digest
			l.breakBlob = func(d string, b []byte) []byte {
				if d == m {
					return bytes.Replace(b, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2 `), 1)
				}
				return b
			}
			return l.tar(t)
		}, "digest mismatch"},
		"unsupported media type": {func() []byte {
			l := newLayout()
			l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "f"}), mediaType: "application/vnd.oci.image.layer.v1.tar+bzip9"}},
				config: map[string]any{"Cmd": []string{"/f"}}})
			return l.tar(t)
		}, `layer media type "application/vnd.oci.image.layer.v1.tar+bzip9" is not supported`},
		"path traversal": {func() []byte {
			l := newLayout()
			l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "../../escaped", body: "x"})}},
				config: map[string]any{"Cmd": []string{"/f"}}})
			return l.tar(t)
		}, "escapes the image"},
		"symlink escape": {func() []byte {
			l := newLayout()
			l.image(t, testImage{layers: []testLayer{
				{tar: layerBytes(t, ociEntry{name: "etcx", typ: tar.TypeSymlink, link: "/tmp"})},
				{tar: layerBytes(t, ociEntry{name: "etcx/shoal-oci-escape", body: "x"})},
			}, config: map[string]any{"Cmd": []string{"/f"}}})
			return l.tar(t)
		}, "resolves outside the root filesystem"},
		"nothing to run": {func() []byte {
			l := newLayout()
			l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "f"})}}, config: map[string]any{}})
			return l.tar(t)
		}, "no Entrypoint or Cmd"},
		"unknown user": {func() []byte {
			l := newLayout()
			l.image(t, testImage{layers: []testLayer{{tar: layerBytes(t, ociEntry{name: "f"})}}, config: map[string]any{"Cmd": []string{"/f"}, "User": "nobody"}})
			return l.tar(t)
		}, `no user "nobody"`},
	}
	// A docker save archive whose layer does not match its config's
	// diff_id (docker save's layers have no other digest).
	cases["diff_id mismatch"] = struct {
		archive func() []byte
		want    string
	}{func() []byte {
		b := dockerSave(t, [][]byte{layerBytes(t, ociEntry{name: "f", body: "1"})}, false, map[string]any{"Cmd": []string{"/f"}})
		return bytes.Replace(b, []byte("1"+strings.Repeat("\x00", 511)), []byte("2"+strings.Repeat("\x00", 511)), 1)
	}, "does not match the config's diff_id"}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Import(context.Background(), s, bytes.NewReader(tc.archive()))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Import = %v; want ErrInvalid with %q on one line", err, tc.want)
			}
			t.Logf("%v", err)
			if list, _ := s.List(); len(list) != 0 {
				t.Fatalf("%d images stored", len(list))
			}
			if left, _ := os.ReadDir(filepath.Join(dir, ".tmp")); len(left) != 0 {
				t.Fatalf("%d temporary files left", len(left))
			}
			if _, err := os.Lstat("/tmp/shoal-oci-escape"); err == nil {
				os.Remove("/tmp/shoal-oci-escape")
				t.Fatal("a layer wrote through a symlink out of the root")
			}
		})
	}
}

func TestAppConfigValidate(t *testing.T) {
	for _, a := range []AppConfig{
		{},
		{Args: []string{""}},
		{Args: []string{"/bin/sh", "a\nlxc.mount.entry = / host none bind 0 0"}},
		{Args: []string{`both " and '`}},
		{Args: []string{"/x"}, Env: []string{"NOEQUALS"}},
		{Args: []string{"/x"}, Env: []string{"A=1\nlxc.init.uid = 0"}},
		{Args: []string{"/x"}, Env: []string{"BAD KEY=1"}},
		{Args: []string{"/x"}, Cwd: "relative"},
	} {
		if err := a.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", a, err)
		}
	}
	if err := (AppConfig{Args: []string{"/x", "it's", `say "hi"`}, Env: []string{"A=b c"}, Cwd: "/"}).Validate(); err != nil {
		t.Errorf("Validate of a good config: %v", err)
	}
}

func TestReadAppConfigStaysInRoot(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "oci.json"), []byte(`{"args":["/evil"]}`), 0o644)
	if err := os.Symlink(outside, filepath.Join(root, ".shoal")); err != nil {
		t.Fatal(err)
	}
	// Absolute symlinks resolve inside the root: the outside file is not read.
	if a, err := ReadAppConfig(root); err != nil || a != nil {
		t.Fatalf("ReadAppConfig through an absolute symlink = %+v, %v; want none", a, err)
	}
	os.Remove(filepath.Join(root, ".shoal"))
	os.Mkdir(filepath.Join(root, ".shoal"), 0o755)
	if a, err := ReadAppConfig(root); err != nil || a != nil {
		t.Fatalf("ReadAppConfig without the file = %+v, %v", a, err)
	}
}
