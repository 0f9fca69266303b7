package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLifecyclePrivileged(t *testing.T)   { testLifecycle(t, true) }
func TestLifecycleUnprivileged(t *testing.T) { testLifecycle(t, false) }

func testLifecycle(t *testing.T, privileged bool) {
	rt := newRuntime(t)
	spec := testContainer(t, rt, privileged, true, nil)
	ctx := context.Background()
	st, err := rt.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || st.PID <= 0 {
		t.Fatalf("state = %+v", st)
	}
	t.Logf("state: %+v", st)

	// Separate streams and the exit code.
	code, out, errs := run(t, rt, spec.Name, "sh", "-c", "echo out; echo err >&2; exit 3")
	if code != 3 || out != "out\n" || errs != "err\n" {
		t.Fatalf("exec: code %d stdout %q stderr %q", code, out, errs)
	}
	// stdin passes through.
	var buf bytes.Buffer
	code, err = rt.Exec(ctx, spec.Name, ExecRequest{Cmd: []string{"cat"}, Stdin: strings.NewReader("hello\n"), Stdout: &buf})
	if err != nil || code != 0 || buf.String() != "hello\n" {
		t.Fatalf("stdin: code %d err %v out %q", code, err, buf.String())
	}
	// Only 0, 1, 2 (and ls's own directory fd) are open in an exec.
	if fds := mustRun(t, rt, spec.Name, "ls", "/proc/self/fd"); strings.Join(strings.Fields(fds), " ") != "0 1 2 3" {
		t.Fatalf("leaked fds in exec: %q", fds)
	}
	if got := mustRun(t, rt, spec.Name, "pwd"); got != "/" {
		t.Fatalf("cwd %q", got)
	}
	// TTY exec.
	buf.Reset()
	code, err = rt.Exec(ctx, spec.Name, ExecRequest{Cmd: []string{"tty"}, TTY: true, Rows: 40, Cols: 100, Stdout: &buf})
	if err != nil || code != 0 || !strings.HasPrefix(strings.TrimSpace(buf.String()), "/dev/pts/") {
		t.Fatalf("tty: code %d err %v out %q", code, err, buf.String())
	}
	buf.Reset()
	code, err = rt.Exec(ctx, spec.Name, ExecRequest{Cmd: []string{"stty", "size"}, TTY: true, Rows: 40, Cols: 100, Stdout: &buf})
	if err != nil || code != 0 || strings.TrimSpace(buf.String()) != "40 100" {
		t.Fatalf("tty size: code %d err %v out %q", code, err, buf.String())
	}
	// Init runs under seccomp filter mode.
	status := mustRun(t, rt, spec.Name, "grep", "Seccomp:", "/proc/1/status")
	if !strings.Contains(status, "2") {
		t.Fatalf("init seccomp: %q", status)
	}
	// Freeze and thaw.
	if err := rt.Freeze(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.State(ctx, spec.Name); st.Status != StatusFrozen {
		t.Fatalf("after freeze: %+v", st)
	}
	if err := rt.Unfreeze(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.State(ctx, spec.Name); st.Status != StatusRunning {
		t.Fatalf("after unfreeze: %+v", st)
	}
	mustRun(t, rt, spec.Name, "true")

	t0 := time.Now()
	if err := rt.Stop(ctx, spec.Name, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("force stop took %v", time.Since(t0))
	if st, _ := rt.State(ctx, spec.Name); st.Status != StatusStopped {
		t.Fatalf("after stop: %+v", st)
	}
	if _, err := rt.Exec(ctx, spec.Name, ExecRequest{Cmd: []string{"true"}}); err == nil {
		t.Fatal("exec in a stopped container succeeded")
	}
	if log, err := os.ReadFile(filepath.Join(rt.LXCPath(), spec.Name, "lxc.log")); err == nil && len(log) > 0 {
		t.Logf("lxc.log:\n%s", log)
	}
}
