package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// smallImage packs a one-file image whose description is desc.
func smallImage(t *testing.T, desc string) []byte {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	md := testMetadata
	md.Properties = map[string]string{"os": "test", "description": desc}
	return packBytes(t, root, md)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestStoreAddGetListDelete(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := smallImage(t, "one")
	img, err := s.Add(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if img.Fingerprint != sha(data) || img.Size != int64(len(data)) || img.Metadata.Properties["description"] != "one" {
		t.Fatalf("Add = %+v", img)
	}
	again, err := s.Add(ctx, bytes.NewReader(data))
	if err != nil || again.Fingerprint != img.Fingerprint {
		t.Fatalf("second Add = %+v, %v; want idempotent", again, err)
	}
	got, err := s.Get(img.Fingerprint)
	if err != nil || got.Fingerprint != img.Fingerprint || got.Metadata.Architecture != "x86_64" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v; want one image", list, err)
	}
	rc, err := s.Open(img.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(stored, data) {
		t.Fatal("Open returned different bytes")
	}
	if err := s.Delete(img.Fingerprint); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(img.Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(img.Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s.Path(img.Fingerprint)); !os.IsNotExist(err) {
		t.Fatalf("tarball left after Delete: %v", err)
	}
}

func TestStoreResolve(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Add images until two share a first hex digit (at most 17 by pigeonhole).
	byFirst := map[byte]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		img, err := s.Add(ctx, bytes.NewReader(smallImage(t, fmt.Sprint("image ", i))))
		if err != nil {
			t.Fatal(err)
		}
		if other, ok := byFirst[img.Fingerprint[0]]; ok {
			a, b = other, img.Fingerprint
		}
		byFirst[img.Fingerprint[0]] = img.Fingerprint
	}
	if _, err := s.Resolve(a[:1]); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Resolve(%q) = %v, want ErrAmbiguous", a[:1], err)
	}
	n := 1
	for a[:n] == b[:n] {
		n++
	}
	for _, fp := range []string{a, b} {
		for _, prefix := range []string{fp[:n], fp[:12], strings.ToUpper(fp[:12]), fp} {
			got, err := s.Resolve(prefix)
			if err != nil || got != fp {
				t.Errorf("Resolve(%q) = %q, %v; want %s", prefix, got, err, fp)
			}
		}
	}
	missing := "0000000000000000000000000000000000000000000000000000000000000000"
	if _, ok := byFirst['0']; !ok {
		if _, err := s.Resolve("0"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(0) = %v, want ErrNotFound", err)
		}
	}
	if _, err := s.Resolve(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(zeros) = %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "xyz", "../etc"} {
		if _, err := s.Resolve(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Resolve(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.Get(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(zeros) = %v, want ErrNotFound", err)
	}
}

func TestImportLXDUnified(t *testing.T) {
	requireRoot(t)
	plain := makeTar(t,
		tarEntry{name: "rootfs/bin/", typ: '5'},
		tarEntry{name: "rootfs/bin/hello", body: "#!/bin/sh\necho hi\n"},
		tarEntry{name: "templates/hostname.tpl", body: "{{ container.name }}\n"},
	)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	var xzb bytes.Buffer
	xw, err := xz.NewWriter(&xzb)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(plain)
	xw.Close()

	var zst bytes.Buffer
	zsw, err := zstd.NewWriter(&zst)
	if err != nil {
		t.Fatal(err)
	}
	zsw.Write(plain)
	zsw.Close()

	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	formats := map[string][]byte{"tar": plain, "gzip": gz.Bytes(), "xz": xzb.Bytes(), "zstd": zst.Bytes()}
	for name, data := range formats {
		t.Run(name, func(t *testing.T) {
			img, err := Import(context.Background(), s, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if img.Fingerprint != sha(data) || img.Metadata.Properties["os"] != "hand" {
				t.Fatalf("Import = %+v", img)
			}
			rc, err := s.Open(img.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			dst := t.TempDir()
			if _, err := Unpack(context.Background(), rc, dst); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(dst, "bin/hello")); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
				t.Fatalf("bin/hello = %q, %v", b, err)
			}
			if _, err := os.Stat(filepath.Join(dst, "templates")); err == nil {
				t.Fatal("templates/ extracted into the rootfs")
			}
		})
	}
	if list, _ := s.List(); len(list) != len(formats) {
		t.Fatalf("List has %d images, want %d", len(list), len(formats))
	}
}

func TestAddRefusesGarbage(t *testing.T) {
	random := make([]byte, 4096)
	rand.Read(random)
	var gzRandom bytes.Buffer
	zw := gzip.NewWriter(&gzRandom)
	zw.Write(random)
	zw.Close()
	noMeta := makeTarRaw(t, map[string]string{"rootfs/x": "x"})
	noRoot := makeTarRaw(t, map[string]string{"metadata.yaml": "architecture: x86_64\n"})
	badMeta := makeTarRaw(t, map[string]string{"metadata.yaml": "{{{", "rootfs/x": "x"})
	escape := makeTar(t, tarEntry{name: "rootfs/../../etc/x", body: "x"})
	truncated := smallImage(t, "cut")
	truncated = truncated[:len(truncated)/2]

	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty": nil, "random": random, "gzip of random": gzRandom.Bytes(), "no metadata": noMeta,
		"no rootfs": noRoot, "bad metadata": badMeta, "escaping entry": escape, "truncated gzip": truncated,
		"zstd garbage": {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0},
	} {
		if _, err := s.Add(context.Background(), bytes.NewReader(data)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Add = %v, want ErrInvalid", name, err)
		}
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("List = %v, %v; want empty", list, err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, ".tmp"))
	all, _ := os.ReadDir(dir)
	if len(left) != 0 || len(all) != 1 {
		t.Fatalf("refused images left files: %d in .tmp, %d in the store", len(left), len(all))
	}
}

// makeTarRaw writes a plain tarball of exactly the given regular files.
func makeTarRaw(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestUnpackLeavesReaderAlone checks that a reader can be rewound and read
// again once Unpack or a metadata peek returned: the read-ahead goroutine
// must be done with it.
func TestUnpackLeavesReaderAlone(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	big := make([]byte, 4<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(root, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Pack(context.Background(), root, testMetadata, f); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := peekMetadata(f); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := Unpack(context.Background(), f, t.TempDir()); err != nil {
			t.Fatalf("round %d: Unpack after a peek: %v", i, err)
		}
	}
}
