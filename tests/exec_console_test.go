package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// psArgs lists the command lines of a container's processes.
func psArgs(t *testing.T, d *harness.Daemon, name string) string {
	t.Helper()
	return d.MustShoal("exec", name, "--", "ps", "-o", "args")
}

// running reports whether a process whose command line is exactly args
// runs in the container.
func running(t *testing.T, d *harness.Daemon, name, args string) bool {
	t.Helper()
	for _, l := range strings.Split(psArgs(t, d, name), "\n") {
		if strings.TrimSpace(l) == args {
			return true
		}
	}
	return false
}

// startShoal starts the CLI against d without waiting for it; the process
// is killed at cleanup if it still runs.
func startShoal(t *testing.T, d *harness.Daemon, stdin *os.File, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(filepath.Join(d.BinDir, "shoal"), args...)
	cmd.Env = append(os.Environ(), "SHOAL_SOCKET="+d.Socket)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out
}

// TestExecUserAndProcesses checks LXD's exec habits: --user/--group as
// numeric ids, root's HOME and USER, bad ids refused naming the flag;
// background processes whose streams are redirected outlive the exec, with
// and without a terminal; an interrupted exec takes its foreground
// command with it; without a terminal, the client's signals reach the
// command.
func TestExecUserAndProcesses(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c := uniq("exu")
	t.Cleanup(func() { d.Shoal("delete", "-f", c) })
	d.MustShoal("launch", "busybox", c)

	if got := d.MustShoal("exec", c, "--user", "1000", "--group", "1000", "--", "sh", "-c", "id -u; id -g"); got != "1000\n1000\n" {
		t.Fatalf("exec --user 1000 --group 1000 -- id -u; id -g = %q", got)
	}
	if got := d.MustShoal("exec", c, "--user", "1000", "--", "id", "-g"); got != "0\n" {
		t.Fatalf("--user alone: group %q, want 0 (LXD's default)", got)
	}
	env := d.MustShoal("exec", c, "--", "env")
	for _, want := range []string{"HOME=/root", "USER=root", "LANG=C.UTF-8", "PATH="} {
		if !strings.Contains(env, want) {
			t.Errorf("root's environment lacks %s:\n%s", want, env)
		}
	}
	if env := d.MustShoal("exec", c, "--user", "1000", "--env", "X=1", "--cwd", "/tmp", "--", "sh", "-c", "env; pwd"); strings.Contains(env, "HOME=/root") || !strings.Contains(env, "X=1") || !strings.HasSuffix(env, "/tmp\n") {
		t.Errorf("uid 1000 with --env X=1 --cwd /tmp:\n%s", env)
	}
	mustFail(t, d, "--user 70000 is outside the ids of "+c, "exec", c, "--user", "70000", "--", "id")
	mustFail(t, d, "--group 4294967295", "exec", c, "--group", "4294967295", "--", "id")
	mustFail(t, d, `"--user"`, "exec", c, "--user", "alice", "--", "id")
	// With a terminal too (lxc-attach's -u/-g).
	if got := d.MustShoal("exec", "-t", c, "--user", "1000", "--group", "1001", "--", "sh", "-c", "id -u; id -g"); strings.ReplaceAll(got, "\r", "") != "1000\n1001\n" {
		t.Fatalf("exec -t --user 1000 --group 1001: %q", got)
	}

	// nohup'd background processes outlive the exec, which returns at once.
	// With a terminal the kernel sends SIGHUP to the terminal's foreground
	// group the moment the command (the session leader) exits, as over
	// ssh -t: the child must have ignored SIGHUP by then, so the -t command
	// waits until nohup did (SigIgn's lowest bit) before it exits.
	base := 100000 + rand.IntN(800000)
	for i, tty := range []string{"-T", "-t"} {
		sleep := fmt.Sprintf("sleep %d", base+i)
		script := "nohup " + sleep + " </dev/null >/dev/null 2>&1 &"
		if tty == "-t" {
			script += ` until grep -q '^SigIgn:.*[13579bdf]$' /proc/$!/status; do :; done`
		}
		t0 := time.Now()
		d.MustShoal("exec", tty, c, "--", "sh", "-c", script)
		if took := time.Since(t0); took > 10*time.Second {
			t.Errorf("exec %s with a detached child took %v", tty, took)
		}
		if !running(t, d, c, sleep) {
			t.Fatalf("exec %s: the nohup'd %q is gone once exec returned:\n%s", tty, sleep, psArgs(t, d, c))
		}
	}
	// setsid'd ones too.
	sleep := fmt.Sprintf("sleep %d", base+2)
	d.MustShoal("exec", c, "--", "sh", "-c", "setsid "+sleep+" </dev/null >/dev/null 2>&1 &")
	if !running(t, d, c, sleep) {
		t.Fatalf("the setsid'd %q is gone:\n%s", sleep, psArgs(t, d, c))
	}

	// A cancelled exec: the foreground command (a shell and its sleep) is
	// gone; a nohup'd child of that shell stays.
	for i, tc := range []struct {
		tty string
		sig syscall.Signal
	}{{"-T", syscall.SIGINT}, {"-t", syscall.SIGTERM}} {
		fg := fmt.Sprintf("sleep %d", base+10+i)
		bg := fmt.Sprintf("sleep %d", base+20+i)
		cli, out := startShoal(t, d, nil, "exec", tc.tty, c, "--", "sh", "-c",
			"nohup "+bg+" </dev/null >/dev/null 2>&1 & "+fg+"; echo finished")
		d.WaitFor(fg+" running", 30*time.Second, func() bool { return running(t, d, c, fg) })
		if err := cli.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cli.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("exec %s: the client did not exit on %v", tc.tty, tc.sig)
		}
		if strings.Contains(out.String(), "finished") {
			t.Fatalf("exec %s: the command ran to its end: %q", tc.tty, out)
		}
		d.WaitFor(fg+" gone", 30*time.Second, func() bool { return !running(t, d, c, fg) })
		if !running(t, d, c, bg) {
			t.Errorf("exec %s cancelled: its nohup'd child %q died too:\n%s", tc.tty, bg, psArgs(t, d, c))
		}
	}
	// Without a terminal the signals the client gets go to the command:
	// a shell trapping SIGTERM answers it, and its exit code comes back.
	trapped := fmt.Sprintf("sleep %d", base+30)
	cli, out := startShoal(t, d, nil, "exec", "-T", c, "--", "sh", "-c",
		`trap 'echo got TERM; kill $!; exit 7' TERM; `+trapped+` & wait`)
	d.WaitFor(trapped+" running", 30*time.Second, func() bool { return running(t, d, c, trapped) })
	if err := cli.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cli.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("exec -T: the command did not answer the SIGTERM sent to the client")
	}
	if code := cli.ProcessState.ExitCode(); code != 7 || !strings.Contains(out.String(), "got TERM") {
		t.Fatalf("exec -T with SIGTERM forwarded: exit %d, output %q; want the trap's exit 7 and its message", code, out)
	}
	// The container is as it was: one exec after all that.
	if got := d.MustShoal("exec", c, "--", "echo", "ok"); got != "ok\n" {
		t.Fatalf("exec afterwards: %q", got)
	}
}
