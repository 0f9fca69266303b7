package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGrace is how long Proc.Stop waits after SIGTERM before SIGKILL.
const StopGrace = 10 * time.Second

// Proc is a background process running inside a Host, in a process group of
// its own, with its stdout and stderr captured.
type Proc struct {
	h    *Host
	desc string
	pid  int
	done chan struct{}
	err  error // set before done closes

	mu  sync.Mutex
	out bytes.Buffer
}

// lockedWriter appends to the Proc's buffer under its lock.
type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start starts name with args in the background inside the host, in its own
// process group. Its output is kept (Output) and logged through t.Logf when
// the test has failed; it is killed at cleanup if it still runs.
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	t := h.u.t
	t.Helper()
	cmd := h.Command(context.Background(), name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &Proc{h: h, desc: strings.Join(append([]string{name}, args...), " "), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	// Children that keep the output pipe open must not hold up Wait.
	cmd.WaitDelay = 2 * time.Second
	h.mu.Lock()
	if h.holder == nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("start %s on %s: host is not set up", name, h.Name)
	}
	if err := cmd.Start(); err != nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("start %s on %s: %w", name, h.Name, err)
	}
	p.pid = cmd.Process.Pid
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %q on %s (pid %d, %v):\n%s", p.desc, h.Name, p.pid, p.err, p.Output())
		}
	})
	return p, nil
}

// Pid is the process id (also its process group id).
func (p *Proc) Pid() int { return p.pid }

// Output returns what the process printed so far (stdout and stderr).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signalGroup sends sig to the process group; a group that is gone is fine.
func (p *Proc) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %q on %s: %w", sig, p.desc, p.h.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the whole process group and waits for the process.
func (p *Proc) Kill() {
	_ = p.signalGroup(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM to the process (and SIGCONT, in case it is frozen),
// and SIGKILL to its group when it has not exited after StopGrace. It
// returns the process's exit error.
func (p *Proc) Stop() error {
	if p.Running() {
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
		_ = p.signalGroup(syscall.SIGCONT)
	}
	select {
	case <-p.done:
	case <-time.After(StopGrace):
		p.Kill()
	}
	return p.err
}

// Freeze stops the whole process group with SIGSTOP: it keeps its sockets
// (the kernel still completes TCP handshakes into the backlog) but answers
// nothing until Thaw.
func (p *Proc) Freeze() error {
	if err := p.signalGroup(syscall.SIGSTOP); err != nil {
		return err
	}
	// kill(2) returns before the stop takes effect: wait until every thread
	// of the process is stopped, so the caller's next request meets a
	// frozen process.
	deadline := time.Now().Add(5 * time.Second)
	for !allStopped(p.pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d did not stop", p.pid)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// allStopped reports whether every thread of pid is in state T (stopped).
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true // gone
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue
		}
		// The state follows the parenthesised command name.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// Thaw resumes a frozen process group with SIGCONT.
func (p *Proc) Thaw() error { return p.signalGroup(syscall.SIGCONT) }
