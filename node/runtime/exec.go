package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/creack/pty"
	lxc "github.com/lxc/go-lxc"
	"golang.org/x/sys/unix"
)

// defaultPath is the PATH of executed commands unless Env sets one.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExecRequest describes a command to run inside a running container.
type ExecRequest struct {
	// Cmd is the program and its arguments (looked up in PATH).
	Cmd []string
	// Env is added to a clean environment holding PATH and LANG, and for
	// root HOME=/root and USER=root (LXD's defaults).
	Env []string
	// UID and GID are the user and group the command runs as, as the
	// container sees them (0: root). Supplementary groups are dropped.
	UID, GID uint32
	// Cwd is the working directory ("/" when empty).
	Cwd string
	// Stdin feeds the command's standard input; nil gives it EOF.
	Stdin io.Reader
	// Stdout and Stderr receive its output; nil discards it. With TTY,
	// Stdout receives the terminal's output and Stderr is unused.
	Stdout, Stderr io.Writer
	// TTY runs the command on a terminal inside the container.
	TTY bool
	// Rows and Cols are the initial terminal size (TTY only).
	Rows, Cols uint16
	// Resize delivers terminal size changes as {rows, cols} (TTY only).
	Resize <-chan [2]uint16
	// Signals delivers signal numbers to send to the command (as lxc exec
	// forwards the signals its client gets).
	Signals <-chan int
}

// Exec runs req.Cmd in the running container name and returns its exit
// code (128+signal when killed). Cancelling ctx hangs the command up: it is
// killed, and the processes it started that are still in its process group
// and session get SIGHUP, as on a terminal's hangup (with TTY the closed
// terminal does that); what ignores SIGHUP (nohup) or left the session
// (setsid) keeps running. A normal return kills nothing: a background
// process whose standard streams are redirected outlives the exec. One that
// keeps the exec's stdout or stderr open keeps Exec waiting for its end (as
// lxc-attach and LXD do) until ctx ends.
//
// Without TTY the command is attached in-process through liblxc (no helper
// binary) with separate stdin/stdout/stderr pipes; every other descriptor
// of this process is close-on-exec, so the command holds exactly 0, 1 and 2.
// With TTY the command runs under lxc-attach, which allocates the terminal
// from the container's devpts, makes it the controlling terminal and
// forwards window size changes.
func (r *Runtime) Exec(ctx context.Context, name string, req ExecRequest) (int, error) {
	if len(req.Cmd) == 0 {
		return -1, fmt.Errorf("%w: empty command", ErrInvalid)
	}
	c, err := r.container(name)
	if err != nil {
		return -1, err
	}
	switch st := r.status(c); st {
	case StatusRunning:
	case StatusStopped:
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, ErrNotRunning)
	default:
		return -1, fmt.Errorf("runtime: exec in %s: %w (%s)", name, ErrNotRunning, st)
	}
	if req.UID == math.MaxUint32 || req.GID == math.MaxUint32 {
		return -1, fmt.Errorf("%w: user and group ids must be below %d", ErrInvalid, uint32(math.MaxUint32))
	}
	env := execEnv(req.Env, req.UID)
	markInheritedCloexec()
	if req.TTY {
		return r.execTTY(ctx, name, req, env)
	}
	return r.execPipes(ctx, c, name, req, env)
}

// markInheritedCloexec sets close-on-exec on every descriptor above 2 of
// this process. Go opens its own descriptors close-on-exec, but ones
// inherited from our parent (or opened by C code) are not, and liblxc's
// attach execs the command without closing them: a leaked host descriptor
// in a container later makes CRIU refuse to dump it.
func markInheritedCloexec() {
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}

// execEnv builds the environment as LXD does: PATH and LANG, and for root
// (uid 0) HOME=/root and USER=root, each unless extra sets it.
func execEnv(extra []string, uid uint32) []string {
	env := []string{}
	has := func(k string) bool {
		for _, e := range extra {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		env = append(env, defaultPath)
	}
	if !has("LANG") {
		env = append(env, "LANG=C.UTF-8")
	}
	if uid == 0 && !has("HOME") {
		env = append(env, "HOME=/root")
	}
	if uid == 0 && !has("USER") {
		env = append(env, "USER=root")
	}
	return append(env, extra...)
}

// execPipes attaches in-process with three pipes.
func (r *Runtime) execPipes(ctx context.Context, c *lxc.Container, name string, req ExecRequest, env []string) (int, error) {
	var toClose []*os.File
	closeAll := func() {
		for _, f := range toClose {
			f.Close()
		}
		toClose = nil
	}
	defer closeAll()
	pipe := func() (*os.File, *os.File, error) {
		rd, wr, err := os.Pipe() // O_CLOEXEC
		if err == nil {
			toClose = append(toClose, rd, wr)
		}
		return rd, wr, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	outR, outW, err := pipe()
	if err != nil {
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	errR, errW, err := pipe()
	if err != nil {
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = "/"
	}
	opts := lxc.AttachOptions{
		Namespaces: -1,
		Arch:       -1,
		Cwd:        cwd,
		UID:        int(req.UID),
		GID:        int(req.GID),
		ClearEnv:   true,
		Env:        env,
		StdinFd:    inR.Fd(),
		StdoutFd:   outW.Fd(),
		StderrFd:   errW.Fd(),
	}
	pid, err := c.RunCommandNoWait(req.Cmd, opts)
	if err != nil {
		return -1, fmt.Errorf("runtime: exec %q in %s: %w", req.Cmd[0], name, err)
	}
	// The child holds its own copies now.
	inR.Close()
	outW.Close()
	errW.Close()

	var wg sync.WaitGroup
	copyOut := func(w io.Writer, rd *os.File) {
		if w == nil {
			w = io.Discard
		}
		wg.Go(func() { _, _ = io.Copy(w, rd) })
	}
	copyOut(req.Stdout, outR)
	copyOut(req.Stderr, errR)
	if req.Stdin != nil {
		go func() {
			_, _ = io.Copy(inW, req.Stdin)
			inW.Close()
		}()
	} else {
		inW.Close()
	}

	stopSignals := forwardSignals(req.Signals, func() []int { return []int{pid} })
	status, err := waitPid(ctx, pid, hangUp)
	stopSignals()
	if err != nil {
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	// Output still buffered in the pipes is drained; background processes
	// that keep the pipes open keep Exec waiting (as lxc-attach does)
	// until ctx ends.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		outR.Close()
		errR.Close()
		<-done
	}
	return exitCode(status), nil
}

// waitPid waits for our child pid (liblxc creates the attached process
// with CLONE_PARENT, so it is our child), calling kill(pid) when ctx ends.
func waitPid(ctx context.Context, pid int, kill func(int)) (unix.WaitStatus, error) {
	type res struct {
		ws  unix.WaitStatus
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			ch <- res{ws, err}
			return
		}
	}()
	select {
	case r := <-ch:
		return r.ws, r.err
	case <-ctx.Done():
		kill(pid)
		r := <-ch
		if r.err != nil {
			return r.ws, r.err
		}
		return r.ws, ctx.Err()
	}
}

// exitCode maps a wait status to a shell-style exit code.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// execTTY runs the command under lxc-attach on a host pty.
func (r *Runtime) execTTY(ctx context.Context, name string, req ExecRequest, env []string) (int, error) {
	args := []string{"-n", name, "-P", r.lxcPath, "-f", r.ConfigPath(name), "--clear-env",
		"-u", strconv.FormatUint(uint64(req.UID), 10), "-g", strconv.FormatUint(uint64(req.GID), 10)}
	for _, e := range env {
		args = append(args, "-v", e)
	}
	args = append(args, "--")
	if req.Cwd != "" && req.Cwd != "/" {
		// lxc-attach has no working-directory option.
		args = append(args, "/bin/sh", "-c", `cd "$1" && shift && exec "$@"`, "sh", req.Cwd)
	}
	args = append(args, req.Cmd...)

	ptmx, tty, err := pty.Open()
	if err != nil {
		return -1, fmt.Errorf("runtime: exec in %s: open pty: %w", name, err)
	}
	defer ptmx.Close()
	if req.Rows > 0 && req.Cols > 0 {
		_ = pty.Setsize(ptmx, &pty.Winsize{Rows: req.Rows, Cols: req.Cols})
	}
	// lxc-attach proxies a terminal of the container's own; ours only
	// carries bytes, so it must be raw (else "\n" becomes "\r\r\n").
	if err := makeRaw(tty); err != nil {
		ptmx.Close()
		tty.Close()
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	cmd := exec.Command("lxc-attach", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = []string{}
	cmd.Dir = "/" // lxc-attach starts the command in its own cwd
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		tty.Close()
		return -1, fmt.Errorf("runtime: exec in %s: lxc-attach: %w", name, err)
	}
	tty.Close()

	out := req.Stdout
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, ptmx) // ends with EIO once the pty hangs up
		close(copied)
	}()
	if req.Stdin != nil {
		go func() { _, _ = io.Copy(ptmx, req.Stdin) }()
	}
	stopResize := make(chan struct{})
	defer close(stopResize)
	if req.Resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-req.Resize:
					if !ok {
						return
					}
					_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz[0], Cols: sz[1]})
				case <-stopResize:
					return
				}
			}
		}()
	}
	// The command is lxc-attach's child (lxc-attach forwards no signals
	// on a terminal of its own).
	defer forwardSignals(req.Signals, func() []int {
		var kids []int
		for p, info := range readProcs() {
			if info.ppid == cmd.Process.Pid {
				kids = append(kids, p)
			}
		}
		return kids
	})()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		// The command is lxc-attach's child; hang it up as the pipes
		// path does, then end lxc-attach. The command, orphaned, is
		// reparented to us (a child subreaper): reap it.
		cmdPids := procTree(readProcs(), cmd.Process.Pid)
		for _, p := range cmdPids {
			if info, ok := readProcs()[p]; ok && info.ppid == cmd.Process.Pid {
				hangUp(p)
			}
		}
		_ = cmd.Process.Kill()
		<-waitErr
		for _, p := range cmdPids {
			go reapIfOurs(p)
		}
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, ctx.Err())
	}
	<-copied
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return exitCode(unix.WaitStatus(ws)), nil
}

// makeRaw puts a terminal in raw mode (cfmakeraw).
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set termios: %w", err)
	}
	return nil
}

// forwardSignals sends each signal from sigs to the commands roots
// returns at the time, until the returned stop is called: SIGINT, SIGQUIT
// and SIGTSTP, a terminal's keyboard signals, go to each command's
// foreground job (it and its descendants in its process group and
// session), as a terminal delivers them; the others to the command
// alone, as kill(1) does. Numbers outside 1-64 are dropped.
func forwardSignals(sigs <-chan int, roots func() []int) (stop func()) {
	if sigs == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case sig, ok := <-sigs:
				if !ok {
					return
				}
				if sig < 1 || sig > 64 {
					continue
				}
				s := unix.Signal(sig)
				for _, pid := range roots() {
					targets := []int{pid}
					if s == unix.SIGINT || s == unix.SIGQUIT || s == unix.SIGTSTP {
						targets = foregroundJob(pid)
					}
					for _, t := range targets {
						_ = unix.Kill(t, s)
					}
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// foregroundJob is pid and its descendants that share its process group
// and session.
func foregroundJob(pid int) []int {
	procs := readProcs()
	self, ok := procs[pid]
	if !ok {
		return []int{pid}
	}
	out := []int{pid}
	for _, d := range procTree(procs, pid) {
		if p := procs[d]; p.pgid == self.pgid && p.sid == self.sid {
			out = append(out, d)
		}
	}
	return out
}
