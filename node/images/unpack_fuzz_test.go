package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// FuzzUnpack unpacks tarballs of three entries whose names, link targets,
// types and bodies the fuzzer picks (images come from remotes and users;
// raw bytes would mostly fail tar's checksums), into a directory beside
// another one holding a secret. Properties: no panic; nothing but dst
// changes: no new name beside it, nothing written, linked or created in
// the other directory, and the secret keeps its content, mode and single
// link.
func FuzzUnpack(f *testing.F) {
	requireRoot(f)
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	dst := filepath.Join(base, "dst")
	secret := filepath.Join(outside, "secret")
	const (
		reg  = tar.TypeReg
		dir  = tar.TypeDir
		sym  = tar.TypeSymlink
		hard = tar.TypeLink
	)
	for _, e := range [][3]tarEntry{
		{{name: "rootfs/etc/", typ: dir}, {name: "rootfs/etc/hostname", body: "c1"}, {name: "rootfs/x", typ: reg}},
		{{name: "rootfs/evil", link: outside, typ: sym}, {name: "rootfs/evil/x", body: "pwned", typ: reg}, {name: "rootfs/evil/d/", typ: dir}},
		{{name: "rootfs/evil", link: "../outside", typ: sym}, {name: "rootfs/evil/x/", typ: dir}, {name: "rootfs/evil/x", typ: reg}},
		{{name: "rootfs/stolen", link: "rootfs/../outside/secret", typ: hard}, {name: "rootfs/a", link: "/", typ: sym}, {name: "rootfs/b", link: "rootfs/a/../outside/secret", typ: hard}},
		{{name: "rootfs/a", link: "..", typ: sym}, {name: "rootfs/a/outside/secret", body: "x", typ: reg}, {name: "../x", body: "pwned", typ: reg}},
		{{name: "rootfs/f", body: "1", typ: reg}, {name: "rootfs/f", body: "2", typ: reg}, {name: "rootfs/p", typ: tar.TypeFifo}},
	} {
		f.Add(e[0].name, e[0].link, e[0].typ, e[1].name, e[1].link, e[1].typ, e[2].name, e[2].link, e[2].typ, "body")
	}
	f.Fuzz(func(t *testing.T, n1, l1 string, t1 byte, n2, l2 string, t2 byte, n3, l3 string, t3 byte, body string) {
		var entries []tarEntry
		for _, e := range []tarEntry{{name: n1, link: l1, typ: t1}, {name: n2, link: l2, typ: t2}, {name: n3, link: l3, typ: t3}} {
			switch e.typ {
			case reg, dir, sym, hard, tar.TypeFifo:
			default:
				e.typ = reg
			}
			if e.typ == reg {
				e.body = body
			}
			if len(e.name) > 200 || len(e.link) > 200 {
				return
			}
			entries = append(entries, e)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range append([]tarEntry{{name: "rootfs/", typ: dir}}, entries...) {
			hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatPAX}
			if tw.WriteHeader(hdr) != nil {
				return
			}
			tw.Write([]byte(e.body))
		}
		if tw.Close() != nil {
			return
		}
		for _, d := range []string{outside, dst} {
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		Unpack(context.Background(), &buf, dst)
		if names := dirNames(t, base); !slices.Equal(names, []string{"dst", "outside"}) {
			t.Fatalf("unpack of %+v created %v beside dst", entries, names)
		}
		if names := dirNames(t, outside); !slices.Equal(names, []string{"secret"}) {
			t.Fatalf("unpack of %+v created %v in the other directory", entries, names)
		}
		fi, err := os.Lstat(secret)
		b, _ := os.ReadFile(secret)
		if err != nil || !fi.Mode().IsRegular() || string(b) != "s" || fi.Mode().Perm() != 0o600 || linkCount(fi) != 1 {
			t.Fatalf("unpack of %+v changed the secret beside dst: %v %q %v links %d", entries, fi.Mode(), b, err, linkCount(fi))
		}
	})
}

func linkCount(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Nlink
	}
	return 0
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestUnpackRefusesSparse: GNU tar's sparse entries expand to their
// declared size (here ten kilobytes of tarball would write 1 GiB); import
// and unpack refuse them, saying so.
func TestUnpackRefusesSparse(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "tar", "tar")
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	md := "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: hand\n  release: \"1\"\ntemplates: {}\n"
	if err := os.WriteFile(filepath.Join(src, "metadata.yaml"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(src, "rootfs", "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, format := range []string{"pax", "gnu"} {
		out, err := exec.Command("tar", "-C", src, "--sparse", "--format="+format, "-cf", "-", "metadata.yaml", "rootfs").Output()
		if err != nil {
			t.Fatal(err)
		}
		dst := t.TempDir()
		_, err = Unpack(context.Background(), bytes.NewReader(out), dst)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "sparse") {
			t.Errorf("%s sparse entry (%d bytes of tar): Unpack = %v, want ErrInvalid naming sparse", format, len(out), err)
		}
		if fi, err := os.Stat(filepath.Join(dst, "big")); err == nil && fi.Size() > 0 {
			t.Errorf("%s: unpack wrote %d bytes of big", format, fi.Size())
		}
		if _, err := validate(context.Background(), bytes.NewReader(out)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: import check = %v, want ErrInvalid", format, err)
		}
	}
}
