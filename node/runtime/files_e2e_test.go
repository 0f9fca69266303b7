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

	// Escapes are refused.
	mustRun(t, rt, spec.Name, "ln", "-s", "../../../../../../../../etc/passwd", "/tmp/escape")
	mustRun(t, rt, spec.Name, "ln", "-s", "../../../../../../../../tmp", "/tmp/escdir")
	for _, p := range []string{"../../etc/passwd", "/../../../etc/passwd", "/tmp/escape", "/tmp/escdir/x"} {
		if _, _, err := rt.PullFile(ctx, spec.Name, p); !errors.Is(err, ErrPathEscape) {
			t.Errorf("pull %s: err %v, want ErrPathEscape", p, err)
		}
	}
	for _, p := range []string{"../../tmp/evil", "/tmp/escape", "/tmp/escdir/evil"} {
		if err := rt.PushFile(ctx, spec.Name, p, strings.NewReader("x"), 0o644, 0, 0); !errors.Is(err, ErrPathEscape) {
			t.Errorf("push %s: err %v, want ErrPathEscape", p, err)
		}
	}
	if _, err := os.Stat("/tmp/evil"); err == nil {
		t.Fatal("push escaped to the host")
	}
	if _, _, err := rt.PullFile(ctx, spec.Name, "/nope/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.Symlink("/a/b", filepath.Join(root, "abs")))
	must(os.Symlink("b", filepath.Join(root, "a/rel")))
	must(os.Symlink("../../..", filepath.Join(root, "a/up")))
	must(os.Symlink("loop", filepath.Join(root, "loop")))
	tests := []struct {
		in, want string
		err      error
	}{
		{"/a/b", "a/b", nil},
		{"a/./b/../b", "a/b", nil},
		{"/abs/new", "a/b/new", nil},
		{"/a/rel", "a/b", nil},
		{"/a/up/x", "", ErrPathEscape},
		{"/..", "", ErrPathEscape},
		{"/a/../../x", "", ErrPathEscape},
		{"/missing/x", "", ErrNotFound},
		{"/loop", "", ErrInvalid},
		{"/", "", nil},
	}
	for _, tc := range tests {
		got, err := resolveInRoot(root, tc.in, true)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("resolve %q = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
