package inroot

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// modes runs f once with openat2 and once with the per-component walk.
func modes(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) {
			prev := ForceWalk(walk)
			defer ForceWalk(prev)
			f(t)
		})
	}
}

// tree builds a small root with every kind of link the tests resolve.
func tree(t testing.TB) (root string, fd int) {
	t.Helper()
	root = t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "a/b/f"), []byte("F"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("inside"), 0o644))
	must(os.Symlink("/a/b", filepath.Join(root, "abs")))
	must(os.Symlink("b", filepath.Join(root, "a/rel")))
	must(os.Symlink("../../..", filepath.Join(root, "a/up")))
	must(os.Symlink("../../../../../../etc", filepath.Join(root, "esc")))
	must(os.Symlink("/etc", filepath.Join(root, "absesc")))
	must(os.Symlink("loop", filepath.Join(root, "loop")))
	must(os.Symlink("/nonexistent", filepath.Join(root, "dangling")))
	must(os.Symlink("f", filepath.Join(root, "a/b/flink")))
	must(unix.Mkfifo(filepath.Join(root, "a/fifo"), 0o644))
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(err)
	t.Cleanup(func() { unix.Close(fd) })
	return root, fd
}

func content(t *testing.T, fd int) string {
	t.Helper()
	f := os.NewFile(uintptr(fd), "opened")
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpen(t *testing.T) {
	type tc struct {
		path  string
		flags int
		want  string // file content, "dir:<rel>" for a directory, "link" for a symlink itself
		err   error
	}
	inRoot := []tc{
		{"a/b/f", unix.O_RDONLY, "F", nil},
		{"/a/b/f", unix.O_RDONLY, "F", nil},
		{"/abs/f", unix.O_RDONLY, "F", nil},
		{"a/rel/f", unix.O_RDONLY, "F", nil},
		{"a/b/flink", unix.O_RDONLY, "F", nil},
		{"a/up/a/b/f", unix.O_RDONLY, "F", nil},
		{"../../a/b/f", unix.O_RDONLY, "F", nil},
		{"esc/passwd", unix.O_RDONLY, "inside", nil},
		{"absesc/passwd", unix.O_RDONLY, "inside", nil},
		{"a/b/..", unix.O_RDONLY | unix.O_DIRECTORY, "dir:a", nil},
		{"", unix.O_RDONLY | unix.O_DIRECTORY, "dir:.", nil},
		{"/", unix.O_RDONLY | unix.O_DIRECTORY, "dir:.", nil},
		{"a/up", unix.O_RDONLY | unix.O_DIRECTORY, "dir:.", nil},
		{"abs/", unix.O_PATH | unix.O_NOFOLLOW, "dir:a/b", nil},
		{"abs", unix.O_PATH | unix.O_NOFOLLOW, "link", nil},
		{"a/fifo", unix.O_RDONLY | unix.O_NONBLOCK, "", nil},
		{"abs", unix.O_RDONLY | unix.O_NOFOLLOW, "", unix.ELOOP},
		{"loop", unix.O_RDONLY, "", unix.ELOOP},
		{"dangling", unix.O_RDONLY, "", unix.ENOENT},
		{"missing/x", unix.O_RDONLY, "", unix.ENOENT},
		{"a/b/f/x", unix.O_RDONLY, "", unix.ENOTDIR},
		{"a/b/f/", unix.O_RDONLY, "", unix.ENOTDIR},
		{"a/b/f", unix.O_RDONLY | unix.O_DIRECTORY, "", unix.ENOTDIR},
		{"a/b/f", unix.O_RDONLY | unix.O_CREAT, "", unix.EINVAL},
		{"a/b\x00/f", unix.O_RDONLY, "", unix.EINVAL},
	}
	beneath := []tc{
		{"a/b/f", unix.O_RDONLY, "F", nil},
		{"a/rel/f", unix.O_RDONLY, "F", nil},
		{"a/b/flink", unix.O_RDONLY, "F", nil},
		{"a/b/../b/f", unix.O_RDONLY, "F", nil},
		{"/a/b/f", unix.O_RDONLY, "", ErrEscape},
		{"abs/f", unix.O_RDONLY, "", ErrEscape},
		{"a/up/x", unix.O_RDONLY, "", ErrEscape},
		{"../x", unix.O_RDONLY, "", ErrEscape},
		{"esc/passwd", unix.O_RDONLY, "", ErrEscape},
		{"loop", unix.O_RDONLY, "", unix.ELOOP},
	}
	modes(t, func(t *testing.T) {
		root, rfd := tree(t)
		for _, sc := range []struct {
			scope Scope
			cases []tc
		}{{InRoot, inRoot}, {Beneath, beneath}} {
			for _, c := range sc.cases {
				fd, err := Open(rfd, c.path, c.flags, sc.scope)
				if c.err != nil {
					if !errors.Is(err, c.err) {
						t.Errorf("scope %d: open %q: err %v, want %v", sc.scope, c.path, err, c.err)
					}
					if err == nil {
						unix.Close(fd)
					}
					continue
				}
				if err != nil {
					t.Errorf("scope %d: open %q: %v", sc.scope, c.path, err)
					continue
				}
				var st, want unix.Stat_t
				if err := unix.Fstat(fd, &st); err != nil {
					t.Fatal(err)
				}
				switch {
				case strings.HasPrefix(c.want, "dir:"):
					if err := unix.Lstat(filepath.Join(root, strings.TrimPrefix(c.want, "dir:")), &want); err != nil {
						t.Fatal(err)
					}
					if st.Ino != want.Ino || st.Mode&unix.S_IFMT != unix.S_IFDIR {
						t.Errorf("scope %d: open %q: not %s", sc.scope, c.path, c.want)
					}
					unix.Close(fd)
				case c.want == "link":
					if st.Mode&unix.S_IFMT != unix.S_IFLNK {
						t.Errorf("scope %d: open %q: mode %o, want a symlink", sc.scope, c.path, st.Mode)
					}
					unix.Close(fd)
				case st.Mode&unix.S_IFMT == unix.S_IFIFO:
					unix.Close(fd)
				default:
					if got := content(t, fd); got != c.want {
						t.Errorf("scope %d: open %q: read %q, want %q", sc.scope, c.path, got, c.want)
					}
				}
			}
		}
	})
}

// TestMagicLinks checks that procfs magic links are refused, not followed
// to the host's root.
func TestMagicLinks(t *testing.T) {
	modes(t, func(t *testing.T) {
		root, rfd := tree(t)
		proc := filepath.Join(root, "proc")
		if err := os.Mkdir(proc, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("proc", proc, "proc", 0, ""); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("mount proc (needs root): %v", err)
			}
			t.Skipf("mount proc (needs root): %v", err)
		}
		defer unix.Unmount(proc, unix.MNT_DETACH)
		for _, p := range []string{"proc/self/root/etc/hostname", "proc/1/root/etc/hostname", "proc/thread-self/cwd"} {
			fd, err := Open(rfd, p, unix.O_RDONLY, InRoot)
			if err == nil {
				unix.Close(fd)
				t.Errorf("open %s through a magic link succeeded", p)
			} else if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.EACCES) {
				t.Errorf("open %s: %v, want ELOOP (or EACCES from the ptrace check)", p, err)
			}
		}
	})
}

// TestRace swaps a directory of the tree for symlinks leading outside it
// while Open runs: nothing outside may ever be opened.
func TestRace(t *testing.T) {
	modes(t, func(t *testing.T) {
		root, rfd := tree(t)
		outside := t.TempDir()
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("SECRET"), 0o644); err != nil {
			t.Fatal(err)
		}
		real := filepath.Join(root, "realdir")
		if err := os.Mkdir(real, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(real, "secret"), []byte("inside"), 0o644); err != nil {
			t.Fatal(err)
		}
		x := filepath.Join(root, "x")
		hold := filepath.Join(root, "hold")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			targets := []string{outside, "../../../../../../../.." + outside, "/"}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_ = os.Rename(real, x)
				_ = os.Rename(x, real)
				_ = os.Symlink(targets[i%len(targets)], hold)
				_ = os.Rename(hold, x)
				_ = os.Remove(x)
			}
		})
		var inside, missing int
		for i := range 20000 {
			p := "x/secret"
			if i%2 == 1 {
				p = "x" + outside + "/secret"
			}
			for _, scope := range []Scope{InRoot, Beneath} {
				fd, err := Open(rfd, p, unix.O_RDONLY, scope)
				if err != nil {
					missing++
					continue
				}
				got := content(t, fd)
				if got != "inside" {
					close(stop)
					wg.Wait()
					t.Fatalf("open %s (scope %d) read %q from outside the root", p, scope, got)
				}
				inside++
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("%d opens inside, %d refused or missing", inside, missing)
		if inside == 0 || missing == 0 {
			t.Fatalf("the swap never raced the opens (%d inside, %d missing)", inside, missing)
		}
	})
}
