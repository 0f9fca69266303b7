package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// tree makes a small root filesystem whose file "f" holds content.
func tree(t *testing.T, content string) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "f"), []byte(content), 0o640))
	must(t, os.WriteFile(filepath.Join(root, "etc/sub/g"), []byte("g"), 0o755))
	must(t, os.Symlink("../f", filepath.Join(root, "etc/link")))
	must(t, os.Link(filepath.Join(root, "f"), filepath.Join(root, "etc/hard")))
	if os.Getuid() == 0 {
		must(t, os.Lchown(filepath.Join(root, "etc/sub/g"), 1001000, 1001005))
	}
	must(t, os.Chmod(filepath.Join(root, "etc/sub/g"), 0o755|os.ModeSetuid))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func index(snaps ...string) *Index {
	ix := &Index{Name: "c1", Backend: "dir", Pool: "default", Type: "container", Snapshots: snaps}
	ct := &shoalv1.Container{Name: "c1", Config: map[string]string{"limits.memory": "256MiB"}, Profiles: []string{"default"}}
	for _, s := range snaps {
		ct.Snapshots = append(ct.Snapshots, &shoalv1.Snapshot{Name: s})
	}
	if err := ix.SetContainer(ct); err != nil {
		panic(err)
	}
	return ix
}

// write makes a plain backup with one snapshot (content "old") and the
// container (content "new").
func write(t *testing.T, compression string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, compression)
	must(t, err)
	must(t, w.Index(index("s1")))
	ctx := context.Background()
	shift := func(uid, gid int) (int, int) { return uid - 1000000, gid - 1000000 }
	must(t, w.Tree(ctx, "s1", tree(t, "old"), shift))
	must(t, w.Tree(ctx, "", tree(t, "new"), shift))
	must(t, w.Close())
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, comp := range []string{Gzip, None} {
		t.Run(comp, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(write(t, comp)))
			must(t, err)
			defer r.Close()
			ix := r.Index()
			if ix.Name != "c1" || len(ix.Snapshots) != 1 || ix.Snapshots[0] != "s1" {
				t.Fatalf("index: %+v", ix)
			}
			ct, err := ix.Container()
			must(t, err)
			if ct.GetConfig()["limits.memory"] != "256MiB" || ct.GetSnapshots()[0].GetName() != "s1" {
				t.Fatalf("record: %v", ct)
			}
			unshift := func(uid, gid int) (int, int) { return uid + 2000000, gid + 2000000 }
			want := map[string]string{"s1": "old", "": "new"}
			for _, name := range []string{"s1", ""} {
				p, err := r.Next()
				must(t, err)
				if p.Snapshot != name || p.Optimized {
					t.Fatalf("part %+v, want snapshot %q", p, name)
				}
				dst := t.TempDir()
				must(t, r.Extract(context.Background(), dst, unshift))
				check(t, dst, want[name])
			}
			if _, err := r.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the container: %v, want EOF", err)
			}
		})
	}
}

// check verifies an extracted tree.
func check(t *testing.T, dst, content string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dst, "f"))
	must(t, err)
	if string(b) != content {
		t.Errorf("f = %q, want %q", b, content)
	}
	if l, err := os.Readlink(filepath.Join(dst, "etc/link")); err != nil || l != "../f" {
		t.Errorf("symlink: %q %v", l, err)
	}
	var a, h unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "f"), &a))
	must(t, unix.Lstat(filepath.Join(dst, "etc/hard"), &h))
	if a.Ino != h.Ino {
		t.Error("hard link not kept")
	}
	var g unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "etc/sub/g"), &g))
	if g.Mode&0o7777 != 0o4755 {
		t.Errorf("mode %o, want 4755", g.Mode&0o7777)
	}
	if os.Getuid() == 0 && (g.Uid != 2001000 || g.Gid != 2001005) {
		t.Errorf("owner %d:%d, want 2001000:2001005 (shifted out and in)", g.Uid, g.Gid)
	}
}

func TestOptimizedRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Gzip)
	must(t, err)
	ix := index("s1", "s2")
	ix.Optimized, ix.Backend = true, "btrfs"
	must(t, w.Index(ix))
	for _, s := range []string{"s1", "s2", ""} {
		data := "stream of " + s
		must(t, w.Stream(s, int64(len(data)), strings.NewReader(data)))
	}
	must(t, w.Close())
	r, err := NewReader(&buf)
	must(t, err)
	for _, s := range []string{"s1", "s2", ""} {
		p, err := r.Next()
		must(t, err)
		if p.Snapshot != s || !p.Optimized {
			t.Fatalf("part %+v, want %q", p, s)
		}
		if s == "s2" {
			continue // Next skips what is not read
		}
		sr, err := r.Stream()
		must(t, err)
		b, err := io.ReadAll(sr)
		must(t, err)
		if string(b) != "stream of "+s {
			t.Fatalf("stream %q", b)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

// craft writes a plain tarball of the given entries after a valid index.
func craft(t *testing.T, ix *Index, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, None)
	must(t, err)
	must(t, w.Index(ix))
	for _, h := range entries {
		must(t, w.tw.WriteHeader(h))
		if h.Size > 0 {
			_, err := w.tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			must(t, err)
		}
	}
	must(t, w.Close())
	return buf.Bytes()
}

// importAll reads every part into fresh directories, as an import does.
func importAll(t *testing.T, b []byte) (string, error) {
	t.Helper()
	var dst string
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return dst, err
	}
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
		if p.Optimized {
			sr, err := r.Stream()
			if err != nil {
				return dst, err
			}
			if _, err := io.Copy(io.Discard, sr); err != nil {
				return dst, err
			}
			continue
		}
		dst = t.TempDir()
		if err := r.Extract(context.Background(), dst, nil); err != nil {
			return dst, err
		}
	}
}

func TestRefused(t *testing.T) {
	dir := func(n string) *tar.Header { return &tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755} }
	file := func(n string) *tar.Header { return &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: 3} }
	outside := t.TempDir()
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"traversal", craft(t, index(), dir("backup/container/"), file("backup/container/../../x")), "escapes"},
		{"absolute", craft(t, index(), dir("backup/container/"), file("/backup/container/x")), "unexpected entry"},
		{"through a symlink", craft(t, index(), dir("backup/container/"),
			&tar.Header{Typeflag: tar.TypeSymlink, Name: "backup/container/l", Linkname: outside},
			file("backup/container/l/x")), "outside"},
		{"hard link out of the tree", craft(t, index("s1"), dir("backup/snapshots/s1/"), file("backup/snapshots/s1/a"),
			dir("backup/container/"), &tar.Header{Typeflag: tar.TypeLink, Name: "backup/container/b", Linkname: "backup/snapshots/s1/a"}), "outside"},
		{"missing container", craft(t, index(), dir("backup/other/")), "unexpected entry"},
		{"no container at all", craft(t, index()), "backup/container is missing"},
		{"missing snapshot", craft(t, index("s1"), dir("backup/container/")), "snapshot s1 is missing"},
		{"snapshot not in the index", craft(t, index(), dir("backup/snapshots/s9/"), dir("backup/container/")), "not the next one"},
		{"optimized part in a plain backup", craft(t, index(), file("backup/container.bin")), "optimized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := importAll(t, tc.b)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("a file was written outside the destination")
	}
}

func TestNoIndex(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/", Mode: 0o755}))
	must(t, tw.Close())
	for _, b := range [][]byte{buf.Bytes(), nil, []byte("not a tarball at all, just text")} {
		if _, err := NewReader(bytes.NewReader(b)); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewReader(%d bytes) = %v, want ErrInvalid", len(b), err)
		}
	}
}

func TestTruncated(t *testing.T) {
	for _, comp := range []string{Gzip, None} {
		full := write(t, comp)
		for _, cut := range []int{len(full) / 3, len(full) / 2, len(full) - 1, max(len(full)-512, 1), max(len(full)-1024, 1), max(len(full)-2048, 1)} {
			_, err := importAll(t, full[:cut])
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s cut at %d of %d: err = %v, want ErrInvalid", comp, cut, len(full), err)
			}
		}
		if _, err := importAll(t, full); err != nil {
			t.Errorf("%s whole: %v", comp, err)
		}
	}
}
