package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
)

// testMetadata is the metadata of hand-made test images.
var testMetadata = Metadata{
	Architecture: "x86_64",
	CreationDate: 1700000000,
	Properties:   map[string]string{"os": "test", "release": "1", "description": "test image"},
}

// makeTree builds a tree exercising everything Pack must preserve.
func makeTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	must(os.MkdirAll(p("etc/sub"), 0o755))
	must(os.Mkdir(p("home"), 0o750))
	must(os.Mkdir(p("tmp"), 0o755))
	must(os.Chmod(p("tmp"), os.ModeSticky|0o777))
	must(os.WriteFile(p("etc/hello"), []byte("hello world\n"), 0o644))
	must(os.WriteFile(p("home/owned"), []byte("mine"), 0o600))
	must(os.Lchown(p("home/owned"), 1000000, 1000000))
	must(os.Lchown(p("home"), 1000000, 1000001))
	must(os.WriteFile(p("etc/suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(p("etc/suid"), 0o4755|fs.ModeSetuid))
	must(os.WriteFile(p("etc/sub/big"), bytes.Repeat([]byte("0123456789abcdef"), 1<<16), 0o644))
	must(os.Link(p("etc/hello"), p("etc/sub/hardlink")))
	must(os.Symlink("../hello", p("etc/sub/rel-link")))
	must(os.Symlink("/etc/passwd", p("etc/abs-link")))
	must(os.Lchown(p("etc/abs-link"), 1000000, 1000000))
	must(unix.Mkfifo(p("etc/fifo"), 0o640))
	must(unix.Mknod(p("etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.Chmod(p("etc/null"), 0o666))
	if err := unix.Setxattr(p("etc/hello"), "user.shoal", []byte("fish"), 0); err != nil {
		t.Logf("xattrs not supported on %s: %v", root, err)
	}
	old := time.Unix(1600000000, 0)
	must(os.Chtimes(p("etc/sub/big"), old, old))
	must(os.Chtimes(p("etc/sub"), old, old))
	return root
}

// packBytes packs root into memory.
func packBytes(t testing.TB, root string, md Metadata) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(context.Background(), root, md, &buf); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

func TestPackUnpackRoundTrip(t *testing.T) {
	requireRoot(t)
	src := makeTree(t)
	data := packBytes(t, src, testMetadata)
	dst := t.TempDir()
	md, err := Unpack(context.Background(), bytes.NewReader(data), dst)
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if md.Architecture != "x86_64" || md.Properties["os"] != "test" || md.CreationDate != 1700000000 {
		t.Fatalf("metadata = %+v", md)
	}
	compareTrees(t, src, dst)

	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "etc/hello"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(dst, "etc/sub/hardlink"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not preserved: inodes %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if v, err := getXattr(filepath.Join(src, "etc/hello"), "user.shoal"); err == nil {
		got, err := getXattr(filepath.Join(dst, "etc/hello"), "user.shoal")
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("xattr user.shoal = %q, %v; want %q", got, err, v)
		}
	}
}

// compareTrees checks that dst matches src entry by entry.
func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		var s, d unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		if err := unix.Lstat(q, &d); err != nil {
			t.Errorf("%s: missing after unpack: %v", rel, err)
			return nil
		}
		seen++
		if s.Mode != d.Mode {
			t.Errorf("%s: mode %o, want %o", rel, d.Mode, s.Mode)
		}
		if s.Uid != d.Uid || s.Gid != d.Gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, d.Uid, d.Gid, s.Uid, s.Gid)
		}
		if s.Mtim.Sec != d.Mtim.Sec {
			t.Errorf("%s: mtime %d, want %d", rel, d.Mtim.Sec, s.Mtim.Sec)
		}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(q)
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs", rel)
			}
		case unix.S_IFLNK:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(q)
			if a != b {
				t.Errorf("%s: link to %q, want %q", rel, b, a)
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			if s.Rdev != d.Rdev {
				t.Errorf("%s: device %x, want %x", rel, d.Rdev, s.Rdev)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 10 {
		t.Fatalf("compared only %d entries", seen)
	}
}

func TestPackDeterministic(t *testing.T) {
	requireRoot(t)
	src := makeTree(t)
	a := packBytes(t, src, testMetadata)
	b := packBytes(t, src, testMetadata)
	if !bytes.Equal(a, b) {
		t.Fatalf("two packs of one tree differ (%d and %d bytes)", len(a), len(b))
	}
	// Metadata comes first, rootfs/ second: LXD and Unpack read it early.
	zr, c, err := decompress(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr := tar.NewReader(zr)
	for _, want := range []string{"metadata.yaml", "rootfs/", "rootfs/etc/"} {
		hdr, err := tr.Next()
		if err != nil || hdr.Name != want {
			t.Fatalf("entry = %v, %v; want %s", hdr, err, want)
		}
	}
}

// tarEntry is one entry of a hand-made tarball.
type tarEntry struct {
	name, link, body string
	typ              byte
}

// makeTar writes a plain tarball of metadata.yaml, rootfs/ and entries.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	md := "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: hand\n  release: \"1\"\ntemplates: {}\n"
	all := append([]tarEntry{{name: "metadata.yaml", body: md}, {name: "rootfs/", typ: tar.TypeDir}}, entries...)
	for _, e := range all {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if typ == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpackRefusesEscapes(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		entries func(outside string) []tarEntry
	}{
		{"dotdot", func(string) []tarEntry { return []tarEntry{{name: "../x", body: "pwned"}} }},
		{"rootfs dotdot", func(string) []tarEntry { return []tarEntry{{name: "rootfs/../../x", body: "pwned"}} }},
		{"absolute", func(string) []tarEntry { return []tarEntry{{name: "/abs", body: "pwned"}} }},
		{"symlink absolute then write through", func(outside string) []tarEntry {
			return []tarEntry{
				{name: "rootfs/evil", link: outside, typ: tar.TypeSymlink},
				{name: "rootfs/evil/x", body: "pwned"},
			}
		}},
		{"symlink relative then write through", func(string) []tarEntry {
			return []tarEntry{
				{name: "rootfs/evil", link: "../outside", typ: tar.TypeSymlink},
				{name: "rootfs/evil/x", body: "pwned"},
			}
		}},
		{"symlink then mkdir through", func(outside string) []tarEntry {
			return []tarEntry{
				{name: "rootfs/evil", link: outside, typ: tar.TypeSymlink},
				{name: "rootfs/evil/x/", typ: tar.TypeDir},
			}
		}},
		{"hard link through symlink", func(outside string) []tarEntry {
			return []tarEntry{
				{name: "rootfs/evil", link: outside, typ: tar.TypeSymlink},
				{name: "rootfs/stolen", link: "rootfs/evil/secret", typ: tar.TypeLink},
			}
		}},
		{"hard link dotdot", func(string) []tarEntry {
			return []tarEntry{{name: "rootfs/stolen", link: "rootfs/../outside/secret", typ: tar.TypeLink}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			dst := filepath.Join(base, "dst")
			for _, d := range []string{outside, dst} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Unpack(context.Background(), bytes.NewReader(makeTar(t, tc.entries(outside)...)), dst)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Unpack error = %v, want ErrInvalid", err)
			}
			for _, p := range []string{filepath.Join(base, "x"), filepath.Join(outside, "x")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was created outside dst", p)
				}
			}
		})
	}
}

func TestUnpackReplacesSymlinkInsteadOfWritingThrough(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(base, "dst")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	data := makeTar(t,
		tarEntry{name: "rootfs/f", link: target, typ: tar.TypeSymlink},
		tarEntry{name: "rootfs/f", body: "replaced"},
	)
	if _, err := Unpack(context.Background(), bytes.NewReader(data), dst); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "original" {
		t.Fatalf("file outside dst was overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "replaced" {
		t.Fatalf("dst/f = %q, want replaced", b)
	}
}

func TestUnpackImpliedParentsAndInRootLinks(t *testing.T) {
	requireRoot(t)
	dst := t.TempDir()
	data := makeTar(t,
		tarEntry{name: "rootfs/usr/lib/", typ: tar.TypeDir},
		tarEntry{name: "rootfs/lib", link: "usr/lib", typ: tar.TypeSymlink},
		tarEntry{name: "rootfs/lib/libx.so", body: "elf"}, // through an in-root symlink: allowed
		tarEntry{name: "./rootfs/a/b/c", body: "deep"},    // implied parents
	)
	if _, err := Unpack(context.Background(), bytes.NewReader(data), dst); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	for p, want := range map[string]string{"usr/lib/libx.so": "elf", "a/b/c": "deep"} {
		if b, err := os.ReadFile(filepath.Join(dst, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
}

// TestUnpackWithoutOpenat2 runs the confinement tests with the
// per-component walk that kernels without openat2 get.
func TestUnpackWithoutOpenat2(t *testing.T) {
	prev := inroot.ForceWalk(true)
	defer inroot.ForceWalk(prev)
	t.Run("RefusesEscapes", TestUnpackRefusesEscapes)
	t.Run("ReplacesSymlink", TestUnpackReplacesSymlinkInsteadOfWritingThrough)
	t.Run("ImpliedParentsAndInRootLinks", TestUnpackImpliedParentsAndInRootLinks)
	t.Run("RoundTrip", TestPackUnpackRoundTrip)
}
