package vm

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Sentinels for what went wrong around the program (not in it).
var (
	// ErrUnavailable means the VM cannot run here: qemu is not installed
	// or the image is not built (scripts/vm.sh build).
	ErrUnavailable = errors.New("vm unavailable")
	// ErrTimeout means the hard timeout killed the VM.
	ErrTimeout = errors.New("vm timed out")
	// ErrVM means the VM stopped without reporting an exit code (boot
	// failure, kernel panic, qemu error).
	ErrVM = errors.New("vm failed")
)

// DefaultTimeout bounds a run when neither Options nor the context say less.
const DefaultTimeout = 15 * time.Minute

// Options tune a run.
type Options struct {
	// Env holds NAME=VALUE pairs for the program's environment. CI is
	// passed on from the host's environment unless set here.
	Env []string
	// Timeout is the hard limit for the whole VM run, boot included
	// (DefaultTimeout when 0). A context deadline that comes sooner wins.
	Timeout time.Duration
	// MemoryMiB is the guest's memory (the script's default when 0).
	MemoryMiB int
	// DiskSize is the size of the raw disk the program finds at
	// $SHOAL_VM_DISK, such as "8G" (the script's default when "").
	DiskSize string
	// ZFS unpacks the ZFS overlay (scripts/vm.sh build-zfs: the module
	// built by dkms for the image's kernel, and zfsutils) and loads zfs.
	ZFS bool
}

// Result is what the program did inside the VM.
type Result struct {
	// ExitCode is the program's exit status.
	ExitCode int
	// Output is its standard output and standard error, interleaved.
	Output []byte
	// Duration is the wall time of the whole run, boot and power-off included.
	Duration time.Duration
}

// InVM reports whether this process runs inside the VM.
func InVM() bool { return os.Getenv("SHOAL_VM") == "1" }

// Disk is the raw block device the VM gives the program for pools ("" outside the VM).
func Disk() string { return os.Getenv("SHOAL_VM_DISK") }

// Script returns the path of scripts/vm.sh: $SHOAL_VM_SCRIPT, else found
// from this source file's place in the module, else from the working
// directory upwards.
func Script() (string, error) {
	if p := os.Getenv("SHOAL_VM_SCRIPT"); p != "" {
		return p, nil
	}
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			p := filepath.Join(d, "scripts", "vm.sh")
			if _, err := os.Stat(p); err == nil {
				if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
					return p, nil
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("scripts/vm.sh not found (set SHOAL_VM_SCRIPT): %w", ErrUnavailable)
}

// Available says why the VM cannot run here (nil when it can): qemu, the
// script and a built image must all be there.
func Available(ctx context.Context) error {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("qemu-system-x86_64 is not installed (scripts/install.sh installs it): %w", ErrUnavailable)
	}
	script, err := Script()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "bash", script, "path").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w", strings.TrimSpace(string(out)), ErrUnavailable)
	}
	return nil
}

// Require skips the test when the VM cannot run here, or fails it when
// CI=true: in CI a missing prerequisite is a failure, never a silent skip.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "the VM lane needs root")
	}
	if err := Available(context.Background()); err != nil {
		missing(t, err.Error())
	}
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Run runs binary with args inside the VM, as root, and returns what it
// did; it logs the program's output to t line by line as it arrives. A
// non-zero exit code is a Result, not an error; the error is for the VM
// itself (ErrUnavailable, ErrTimeout, ErrVM, or the context's error).
func Run(ctx context.Context, t testing.TB, binary string, args ...string) (*Result, error) {
	return RunWith(ctx, t, Options{}, binary, args...)
}

// RunWith is Run with options.
func RunWith(ctx context.Context, t testing.TB, opts Options, binary string, args ...string) (*Result, error) {
	script, err := Script()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(binary)
	if err != nil {
		return nil, fmt.Errorf("vm run %s: %w", binary, err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave a moment to clean up before the context ends.
		if left := time.Until(dl) - 10*time.Second; left < timeout {
			timeout = left
		}
	}
	if timeout < 10*time.Second {
		return nil, fmt.Errorf("vm run %s: %v left is too little to boot: %w", binary, timeout, ErrTimeout)
	}
	tmp, err := os.MkdirTemp("", "shoal-vm-run-")
	if err != nil {
		return nil, fmt.Errorf("vm run: %w", err)
	}
	defer os.RemoveAll(tmp)
	status := filepath.Join(tmp, "status")
	console := filepath.Join(tmp, "console.log")

	cmdArgs := []string{script, "run", "--status", status, "--console", console,
		"--timeout", strconv.Itoa(int(timeout.Seconds()))}
	if opts.MemoryMiB > 0 {
		cmdArgs = append(cmdArgs, "--mem", strconv.Itoa(opts.MemoryMiB))
	}
	if opts.DiskSize != "" {
		cmdArgs = append(cmdArgs, "--disk-size", opts.DiskSize)
	}
	if opts.ZFS {
		cmdArgs = append(cmdArgs, "--zfs")
	}
	env := opts.Env
	if ci, ok := os.LookupEnv("CI"); ok && !hasEnv(env, "CI") {
		env = append([]string{"CI=" + ci}, env...)
	}
	for _, kv := range env {
		cmdArgs = append(cmdArgs, "--env", kv)
	}
	cmdArgs = append(cmdArgs, "--", abs)
	cmdArgs = append(cmdArgs, args...)

	cmd := exec.CommandContext(ctx, "bash", cmdArgs...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// The script and everything it starts form one process group; on
	// cancel it gets TERM (its trap stops qemu), then KILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	out := &lineLogger{t: t, prefix: "vm: "}
	cmd.Stdout = out
	cmd.Stderr = &lineLogger{t: t, prefix: "vm.sh: "}
	start := time.Now()
	runErr := cmd.Run()
	out.flush()
	cmd.Stderr.(*lineLogger).flush()
	// Whatever happened, no process of this run outlives it.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	res := &Result{Output: out.all.Bytes(), Duration: time.Since(start)}

	if ctx.Err() != nil {
		return res, fmt.Errorf("vm run %s: %w", binary, ctx.Err())
	}
	st, _ := os.ReadFile(status)
	s := strings.TrimSpace(string(st))
	switch {
	case strings.HasPrefix(s, "exit "):
		code, err := strconv.Atoi(strings.TrimPrefix(s, "exit "))
		if err != nil {
			return res, fmt.Errorf("vm run %s: status %q: %w", binary, s, ErrVM)
		}
		res.ExitCode = code
		return res, nil
	case s == "timeout":
		return res, fmt.Errorf("vm run %s: killed after %v%s: %w", binary, timeout, consoleTail(console), ErrTimeout)
	case strings.HasPrefix(s, "vm-error: no image"), strings.HasPrefix(s, "vm-error: no ZFS overlay"), strings.Contains(s, "not installed"):
		return res, fmt.Errorf("vm run %s: %s: %w", binary, s, ErrUnavailable)
	case s != "":
		return res, fmt.Errorf("vm run %s: %s%s: %w", binary, s, consoleTail(console), ErrVM)
	default:
		return res, fmt.Errorf("vm run %s: vm.sh reported nothing (%v)%s: %w", binary, runErr, consoleTail(console), ErrVM)
	}
}

// RunTest runs the calling test inside the VM: this test binary with the
// host's -test.run (else one anchored to t's name), verbose, and the
// host's -test.timeout. It fails t when the VM fails or
// the test fails inside. The test's code must check InVM first, so that
// inside the VM it runs for real instead of starting another VM.
func RunTest(ctx context.Context, t *testing.T, opts Options) *Result {
	t.Helper()
	Require(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("vm: this test binary: %v", err)
	}
	// The host's -test.run, when it names this test, selects subtests too.
	run := lookupFlag("test.run")
	if run == "" {
		run = "^" + regexpPath(t.Name()) + "$"
	}
	args := []string{"-test.run=" + run, "-test.v", "-test.count=1"}
	if f := lookupFlag("test.timeout"); f != "" && f != "0s" {
		args = append(args, "-test.timeout="+f)
	}
	res, err := RunWith(ctx, t, opts, self, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("%s failed inside the VM: exit %d (output above)", t.Name(), res.ExitCode)
	}
	if !bytes.Contains(res.Output, []byte("--- PASS: "+t.Name())) && !bytes.Contains(res.Output, []byte("--- SKIP: "+t.Name())) {
		t.Fatalf("%s: the VM's output does not say it passed", t.Name())
	}
	t.Logf("%s passed inside the VM in %v (boot and power-off included)", t.Name(), res.Duration.Round(time.Second))
	return res
}

// regexpPath turns a test name (with "/" between subtests) into a
// -test.run pattern that matches exactly it, part by part.
func regexpPath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		var b strings.Builder
		for _, c := range p {
			if strings.ContainsRune(`\.+*?()|[]{}^$`, c) {
				b.WriteByte('\\')
			}
			b.WriteRune(c)
		}
		parts[i] = b.String()
	}
	return strings.Join(parts, "$/^")
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// consoleTail returns the serial console's last lines, for an error.
func consoleTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "; console:\n" + strings.Join(lines, "\n")
}

// lineLogger logs each complete line to t and keeps everything it got.
type lineLogger struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	part   []byte
	all    bytes.Buffer
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.t.Log(l.prefix + string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.t.Log(l.prefix + string(l.part))
		l.part = nil
	}
}

var _ io.Writer = (*lineLogger)(nil)

// lookupFlag is the value of a registered flag ("" when there is none).
func lookupFlag(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
