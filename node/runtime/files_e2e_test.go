package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
)

func TestFilesPrivileged(t *testing.T)   { testFiles(t, true) }
func TestFilesUnprivileged(t *testing.T) { testFiles(t, false) }

func testFiles(t *testing.T, privileged bool) {
	rt := newRuntime(t)
	spec := testContainer(t, rt, privileged, false, nil)
	ctx := context.Background()
	hostUID := uint32(0)
	if !privileged {
		hostUID = spec.IDMap.HostUID
	}

	// Works on a stopped container.
	if err := rt.PushFile(ctx, spec.Name, "/root/stopped.txt", strings.NewReader("cold\n"), 0o600, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	if err := rt.PushFile(ctx, spec.Name, "/tmp/pushed", strings.NewReader("hello\n"), 0o4751, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, rt, spec.Name, "stat", "-c", "%u:%g:%a", "/tmp/pushed"); got != "1000:1001:4751" {
		t.Fatalf("pushed file inside: %s", got)
	}
	if got := mustRun(t, rt, spec.Name, "cat", "/tmp/pushed", "/root/stopped.txt"); got != "hello\ncold" {
		t.Fatalf("pushed content: %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(spec.Rootfs, "tmp/pushed"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != hostUID+1000 || st.Gid != hostUID+1001 {
		t.Fatalf("pushed file on host: %d:%d", st.Uid, st.Gid)
	}

	// A file created in the container, pulled back.
	mustRun(t, rt, spec.Name, "sh", "-c", "echo from-inside > /root/made; chmod 640 /root/made")
	rc, fi, err := rt.PullFile(ctx, spec.Name, "/root/made")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "from-inside\n" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("pulled %q mode %v", b, fi.Mode())
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != hostUID {
		t.Fatalf("file made in container has host uid %d, want %d", uid, hostUID)
	}
	// Absolute symlinks resolve inside the rootfs.
	mustRun(t, rt, spec.Name, "ln", "-s", "/root/made", "/tmp/abs-link")
	rc, _, err = rt.PullFile(ctx, spec.Name, "/tmp/abs-link")
	if err != nil {
		t.Fatalf("absolute symlink inside rootfs: %v", err)
	}
	rc.Close()

	// A push through a symlink writes its target, as in the container.
	if err := rt.PushFile(ctx, spec.Name, "/tmp/abs-link", strings.NewReader("through\n"), 0o640, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, rt, spec.Name, "cat", "/root/made"); got != "through" {
		t.Fatalf("push through /tmp/abs-link: /root/made is %q", got)
	}

	// A path that as written climbs above "/" is refused.
	for _, p := range []string{"../../etc/passwd", "/../../../etc/passwd", "/tmp/../../etc/passwd"} {
		if _, _, err := rt.PullFile(ctx, spec.Name, p); !errors.Is(err, ErrPathEscape) {
			t.Errorf("pull %s: err %v, want ErrPathEscape", p, err)
		}
	}
	evil := "evil-" + spec.Name
	if err := rt.PushFile(ctx, spec.Name, "../../tmp/"+evil, strings.NewReader("x"), 0o644, 0, 0); !errors.Is(err, ErrPathEscape) {
		t.Errorf("push ../../tmp/%s: err %v, want ErrPathEscape", evil, err)
	}
	// Symlinks climbing above "/" stop there, as they do in the container:
	// they never reach the host.
	mustRun(t, rt, spec.Name, "ln", "-s", "../../../../../../../../etc/passwd", "/tmp/escape")
	mustRun(t, rt, spec.Name, "ln", "-s", "../../../../../../../../tmp", "/tmp/escdir")
	rc, _, err = rt.PullFile(ctx, spec.Name, "/tmp/escape")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(rc)
	rc.Close()
	if want := mustRun(t, rt, spec.Name, "cat", "/tmp/escape"); strings.TrimSpace(string(b)) != want {
		t.Fatalf("pull /tmp/escape gave %q, the container reads %q", b, want)
	}
	if err := rt.PushFile(ctx, spec.Name, "/tmp/escdir/"+evil, strings.NewReader("x"), 0o644, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, rt, spec.Name, "cat", "/tmp/"+evil); got != "x" {
		t.Fatalf("push through /tmp/escdir: container's /tmp/%s is %q", evil, got)
	}
	if _, err := os.Lstat("/tmp/" + evil); err == nil {
		t.Fatal("push escaped to the host")
	}
	if _, _, err := rt.PullFile(ctx, spec.Name, "/nope/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	// A FIFO is refused at once, not waited on.
	mustRun(t, rt, spec.Name, "mkfifo", "/tmp/fifo")
	if _, _, err := rt.PullFile(ctx, spec.Name, "/tmp/fifo"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pull of a FIFO: %v, want ErrInvalid", err)
	}
	for _, p := range []string{"/", "/tmp/", "/tmp/.."} {
		if err := rt.PushFile(ctx, spec.Name, p, strings.NewReader("x"), 0o644, 0, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("push %s: err %v, want ErrInvalid", p, err)
		}
	}
}

// TestOpenInRoot checks how container paths resolve and which sentinel
// each failure gives, with openat2 and with the walk older kernels use.
func TestOpenInRoot(t *testing.T) {
	for _, walk := range []bool{false, true} {
		t.Run(map[bool]string{false: "openat2", true: "walk"}[walk], func(t *testing.T) {
			prev := inroot.ForceWalk(walk)
			defer inroot.ForceWalk(prev)
			root := t.TempDir()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
			must(os.WriteFile(filepath.Join(root, "a/b/f"), []byte("f"), 0o644))
			must(os.Symlink("/a/b", filepath.Join(root, "abs")))
			must(os.Symlink("b", filepath.Join(root, "a/rel")))
			must(os.Symlink("../../..", filepath.Join(root, "a/up")))
			must(os.Symlink("loop", filepath.Join(root, "loop")))
			rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			must(err)
			defer unix.Close(rootFd)
			tests := []struct {
				in, want string // want: the path below root that opens
				err      error
			}{
				{"/a/b/f", "a/b/f", nil},
				{"a/./b/../b/f", "a/b/f", nil},
				{"/abs/f", "a/b/f", nil},
				{"/a/rel", "a/b", nil},
				{"/a/up/a/b", "a/b", nil}, // a relative symlink above / stops at /
				{"/", ".", nil},
				{"/..", "", ErrPathEscape},
				{"/a/../../x", "", ErrPathEscape},
				{"/missing/x", "", ErrNotFound},
				{"/a/b/f/x", "", ErrNotFound},
				{"/loop", "", ErrInvalid},
				{"/a\x00", "", ErrInvalid},
			}
			for _, tc := range tests {
				err := checkPath(tc.in)
				var fd int
				if err == nil {
					fd, err = openInRoot(rootFd, tc.in, unix.O_PATH)
				}
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Errorf("open %q: %v, want %v", tc.in, err, tc.err)
					}
					if err == nil {
						unix.Close(fd)
					}
					continue
				}
				if err != nil {
					t.Errorf("open %q: %v", tc.in, err)
					continue
				}
				var got, want unix.Stat_t
				must(unix.Fstat(fd, &got))
				unix.Close(fd)
				must(unix.Stat(filepath.Join(root, tc.want), &want))
				if got.Ino != want.Ino {
					t.Errorf("open %q did not open %s", tc.in, tc.want)
				}
			}
		})
	}
}
