package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Post-copy (CRIU lazy pages): the source dumps everything but memory and
// then serves the pages from a page server; the target restores at once
// and its lazy-pages daemon pulls the pages, on fault and in the
// background. The source's dump ends when the last page has gone.

// actionScript runs as CRIU's action script (lxc-checkpoint -A): it marks
// the checkpoint directory when the page server is ready.
const actionScript = `#!/bin/sh
# Written by Shoal: CRIU calls this at each stage of a dump or restore.
[ "$CRTOOLS_SCRIPT_ACTION" = status-ready ] && : > "$(dirname "$0")/page-server.ready"
exit 0
`

// TLSFiles are PEM files CRIU's page server and lazy-pages daemon secure
// their connection with (the cluster CA and this member's certificate).
// A zero value means plain TCP.
type TLSFiles struct {
	CA, Cert, Key string
}

// args returns CRIU's TLS flags (none for a zero value). The common name
// is not checked against the address: both ends are verified as members
// by the cluster CA, which issues certificates to members only.
func (t TLSFiles) args() []string {
	if t.CA == "" {
		return nil
	}
	return []string{"--tls", "--tls-cacert", t.CA, "--tls-cert", t.Cert, "--tls-key", t.Key, "--tls-no-cn-verify"}
}

// WriteTLSFiles writes a CA certificate, a certificate and its key into
// dir (created 0700; the files 0600) and returns their TLSFiles.
func WriteTLSFiles(dir string, caPEM, certPEM, keyPEM []byte) (TLSFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, fmt.Errorf("runtime: tls files: %w", err)
	}
	t := TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	for _, f := range []struct {
		path string
		data []byte
	}{{t.CA, caPEM}, {t.Cert, certPEM}, {t.Key, keyPEM}} {
		if len(f.data) == 0 {
			return TLSFiles{}, fmt.Errorf("runtime: tls files: %s: %w (empty)", filepath.Base(f.path), ErrInvalid)
		}
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return TLSFiles{}, fmt.Errorf("runtime: tls files: %w", err)
		}
	}
	return t, nil
}

// LazyDump is a CRIU dump serving memory pages to a target.
type LazyDump struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error
}

// StartLazyCheckpoint freezes nothing itself: the container must be frozen
// (it stays so). It dumps the container into dir without its memory pages
// and returns once CRIU's page server listens on addr:port for the
// target's lazy-pages daemon. Wait tells when every page has been served.
func (r *Runtime) StartLazyCheckpoint(ctx context.Context, name, dir, addr string, port int, tlsFiles TLSFiles) (*LazyDump, error) {
	c, err := r.container(name)
	if err != nil {
		return nil, err
	}
	if st := r.status(c); st != StatusFrozen {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w (state %s, want FROZEN)", name, ErrInvalid, st)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	script := filepath.Join(dir, "shoal-action.sh")
	if err := os.WriteFile(script, []byte(actionScript), 0o700); err != nil {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	lazyArgs := append([]string{"--lazy-pages", "--address", addr, "--port", strconv.Itoa(port)}, tlsFiles.args()...)
	if err := writeCRIUArgs(dir, dumpArgs(lazyArgs), nil); err != nil {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	out, err := os.Create(filepath.Join(dir, "lxc-dump.out"))
	if err != nil {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	defer out.Close()
	cmd := exec.Command("lxc-checkpoint", "-n", name, "-P", r.lxcPath, "--rcfile", r.ConfigPath(name), "-D", dir, "-A", script)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that Abort reaches criu as well.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	d := &LazyDump{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "lxc-dump.out"))
			err = fmt.Errorf("%w: %v: %s%s", ErrCheckpoint, err, oneLine(b), criuLogTail(filepath.Join(dir, "dump.log")))
		}
		d.err = err
		close(d.done)
	}()
	ready := filepath.Join(dir, "page-server.ready")
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, d.err)
		case <-ctx.Done():
			d.Abort()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	if err := r.shareWithRoot(name, dir); err != nil {
		d.Abort()
		return nil, fmt.Errorf("runtime: lazy checkpoint %s: %w", name, err)
	}
	r.log.Info("checkpointed, serving pages", "container", name, "page_server", net.JoinHostPort(addr, strconv.Itoa(port)), "took", time.Since(t0))
	return d, nil
}

// Wait waits until the dump ended (every page served, or a failure) or
// timeout passed; it returns the dump's verdict.
func (d *LazyDump) Wait(timeout time.Duration) error {
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		return fmt.Errorf("runtime: page server still serving after %v", timeout)
	}
}

// Done is closed when the dump has ended.
func (d *LazyDump) Done() <-chan struct{} { return d.done }

// Abort kills the dump and its page server. The container stays frozen.
func (d *LazyDump) Abort() {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
}

// LazyPages is a target's lazy-pages daemon: it feeds a restored
// container's memory from the source's page server.
type LazyPages struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartLazyPages starts CRIU's lazy-pages daemon for the checkpoint in dir,
// pulling pages from the page server at addr:port, and returns once it
// waits for the restore (RestoreOptions.LazyPages) to connect.
func StartLazyPages(ctx context.Context, dir, addr string, port int, tlsFiles TLSFiles) (*LazyPages, error) {
	args := append([]string{"lazy-pages", "--page-server", "--address", addr, "--port", strconv.Itoa(port),
		"-D", dir, "-o", "lazy-pages.log"}, tlsFiles.args()...)
	cmd := exec.Command("criu", args...)
	out, err := os.Create(filepath.Join(dir, "lazy-pages.out"))
	if err != nil {
		return nil, fmt.Errorf("runtime: lazy pages: %w", err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("runtime: lazy pages: %w", err)
	}
	l := &LazyPages{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: lazy-pages: %v%s", ErrCheckpoint, err, criuLogTail(filepath.Join(dir, "lazy-pages.log")))
		}
		l.err = err
		close(l.done)
	}()
	sock := filepath.Join(dir, "lazy-pages.socket")
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return l, nil
		}
		select {
		case <-l.done:
			return nil, fmt.Errorf("runtime: lazy pages: %w", errors.Join(l.err, errors.New("exited before serving")))
		case <-ctx.Done():
			l.Abort()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// Done is closed when the daemon has exited: every page arrived, or the
// source went away (Err says which).
func (l *LazyPages) Done() <-chan struct{} { return l.done }

// Err is the daemon's verdict once Done is closed (nil: every page arrived).
func (l *LazyPages) Err() error { return l.err }

// Abort kills the daemon.
func (l *LazyPages) Abort() {
	_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	<-l.done
}
