package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/idmap"
	"github.com/shoal-dev/shoal/node/runtime/runtimetest"
)

// testLogger sends runtime logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newRuntime returns a Runtime with a private lxcpath and config dir.
func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	runtimetest.Require(t)
	dir := t.TempDir()
	rt, err := New(filepath.Join(dir, "lxc"), filepath.Join(dir, "conf"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// uniqueName returns "rt-<random>".
func uniqueName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "rt-" + hex.EncodeToString(b[:])
}

// testContainer defines (and, with start, starts) a busybox container and
// registers a cleanup that force-stops and undefines it.
func testContainer(t testing.TB, rt *Runtime, privileged bool, start bool, mod func(*Spec)) Spec {
	t.Helper()
	dir := t.TempDir()
	root := runtimetest.BusyboxRootfs(t, dir)
	spec := Spec{Name: uniqueName(), Rootfs: root, Privileged: privileged}
	if !privileged {
		m, err := idmap.FromSubID("root")
		if err != nil {
			runtimetest.Missing(t, "a subordinate id range for root in /etc/subuid and /etc/subgid ("+err.Error()+")")
		}
		if err := idmap.Shift(context.Background(), root, m); err != nil {
			t.Fatal(err)
		}
		spec.IDMap = m
	}
	if mod != nil {
		mod(&spec)
	}
	ctx := context.Background()
	if err := rt.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Undefine(context.Background(), spec.Name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: %v", err)
		}
	})
	if start {
		if err := rt.Start(ctx, spec.Name); err != nil {
			log, _ := os.ReadFile(filepath.Join(rt.LXCPath(), spec.Name, "lxc.log"))
			t.Fatalf("%v\nlxc.log:\n%s", err, log)
		}
	}
	return spec
}

// run executes cmd in the container and returns exit code, stdout, stderr.
func run(t testing.TB, rt *Runtime, name string, cmd ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := rt.Exec(ctx, name, ExecRequest{Cmd: cmd, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return code, out.String(), errb.String()
}

// mustRun is run that requires exit 0 and returns trimmed stdout.
func mustRun(t testing.TB, rt *Runtime, name string, cmd ...string) string {
	t.Helper()
	code, out, errs := run(t, rt, name, cmd...)
	if code != 0 {
		t.Fatalf("exec %q: exit %d, stdout %q, stderr %q", cmd, code, out, errs)
	}
	return strings.TrimSpace(out)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hostCgroupFile returns the host path of a v1 controller file of the
// container whose init is pid.
func hostCgroupFile(t testing.TB, pid int, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return filepath.Join("/sys/fs/cgroup", controller, parts[2], file)
			}
		}
	}
	t.Fatalf("no %s cgroup for pid %d", controller, pid)
	return ""
}

// fileUID returns the owner of fi.
func fileUID(fi os.FileInfo) uint32 { return fi.Sys().(*syscall.Stat_t).Uid }
