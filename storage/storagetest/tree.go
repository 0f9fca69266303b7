package storagetest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// Owner used for files owned by a container's (shifted) root.
const shiftedID = 1000000

// testXattr is set on a file to check that xattrs survive copies.
const testXattr = "user.shoal.test"

// populate fills root with every kind of file a container rootfs holds:
// a shifted-owner setuid binary, a directory, symlinks, a hardlink pair, a
// fifo, a character device (1,3), an xattr, and size bytes of random data
// in "big".
func populate(t testing.TB, root string, size int) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "file"), []byte("hello\n"), 0o644))
	must(syscall.Setxattr(filepath.Join(root, "file"), testXattr, []byte("value"), 0))

	suid := filepath.Join(root, "suid")
	must(os.WriteFile(suid, []byte("#!/bin/true\n"), 0o755))
	must(os.Lchown(suid, shiftedID, shiftedID))
	must(syscall.Chmod(suid, 0o4755)) // os.Chmod wants os.ModeSetuid, not 04000

	dir := filepath.Join(root, "dir")
	must(os.Mkdir(dir, 0o750))
	must(os.WriteFile(filepath.Join(dir, "nested"), []byte("nested\n"), 0o600))
	must(os.Lchown(filepath.Join(dir, "nested"), shiftedID+1, shiftedID+2))
	must(os.Lchown(dir, shiftedID, shiftedID))

	must(os.Symlink("file", filepath.Join(root, "symlink")))
	must(os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")))
	must(os.Lchown(filepath.Join(root, "symlink"), shiftedID, shiftedID))

	must(os.WriteFile(filepath.Join(root, "hl1"), []byte("linked\n"), 0o640))
	must(os.Link(filepath.Join(root, "hl1"), filepath.Join(dir, "hl2")))

	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	must(syscall.Mknod(filepath.Join(root, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
	must(os.Lchown(filepath.Join(root, "null"), shiftedID, shiftedID))
	must(os.Chmod(filepath.Join(root, "null"), 0o666)) // past the umask

	if size > 0 {
		writeRandom(t, filepath.Join(root, "big"), size)
	}
	must(os.Chmod(root, 0o711))
	must(os.Lchown(root, shiftedID, shiftedID))
}

// writeRandom writes size random bytes to p.
func writeRandom(t testing.TB, p string, size int) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// describe maps every entry of the tree at root to a line saying its type,
// mode, owner, content digest, symlink target, device number, user xattrs,
// file mtime and hardlink group, so two trees compare with one map compare.
func describe(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	first := map[uint64]string{} // inode → first path seen (walk is sorted)
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		d := fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			d += fmt.Sprintf(" size=%d sha=%s mtime=%d.%09d", st.Size, hex.EncodeToString(sum[:8]), st.Mtim.Sec, st.Mtim.Nsec)
			if st.Nlink > 1 {
				if f, ok := first[st.Ino]; ok {
					d += " hardlink=" + f
				} else {
					first[st.Ino] = rel
					d += fmt.Sprintf(" nlink=%d", st.Nlink)
				}
			}
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			d += " target=" + target
		case syscall.S_IFCHR, syscall.S_IFBLK:
			d += fmt.Sprintf(" rdev=%d,%d", st.Rdev>>8&0xfff, st.Rdev&0xff|(st.Rdev>>12)&^0xff)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			if v, err := getXattr(p, testXattr); err == nil {
				d += " xattr=" + v
			}
		}
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatalf("describe %s: %v", root, err)
	}
	return out
}

func getXattr(p, name string) (string, error) {
	b := make([]byte, 256)
	n, err := syscall.Getxattr(p, name, b)
	if err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

// sameTree fails the test when the trees at got and want differ.
func sameTree(t testing.TB, what, got, want string) {
	t.Helper()
	g, w := describe(t, got), describe(t, want)
	var diffs []string
	for k, wv := range w {
		if gv, ok := g[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  missing %s (%s)", k, wv))
		} else if gv != wv {
			diffs = append(diffs, fmt.Sprintf("  %s:\n    got  %s\n    want %s", k, gv, wv))
		}
	}
	for k, gv := range g {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  extra %s (%s)", k, gv))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("%s: %s differs from %s:\n%s", what, got, want, strings.Join(diffs, "\n"))
	}
}

// checkSpecial fails the test unless the tree at root holds what populate
// made (guards against comparing two equally broken trees).
func checkSpecial(t testing.TB, root string) {
	t.Helper()
	d := describe(t, root)
	want := map[string]string{
		".":       "mode=40711 uid=1000000 gid=1000000",
		"suid":    "mode=104755 uid=1000000 gid=1000000",
		"dir":     "mode=40750 uid=1000000 gid=1000000",
		"symlink": "uid=1000000 gid=1000000 target=file",
		"fifo":    "mode=10600",
		"null":    "mode=20666 uid=1000000 gid=1000000 rdev=1,3",
		"hl1":     "hardlink=dir/hl2",
		"file":    "xattr=value",
	}
	for k, sub := range want {
		if !strings.Contains(d[k], sub) {
			t.Errorf("%s/%s = %q, want it to contain %q", root, k, d[k], sub)
		}
	}
}
