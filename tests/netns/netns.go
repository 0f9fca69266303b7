package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// T is the part of testing.TB the package needs (the same as tests/harness.T).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// Name prefixes of everything the package creates.
const (
	BridgePrefix = "shu"  // bridge in the root netns: "shu"+id
	VethPrefix   = "shv"  // host-side veth: "shv"+id+NN
	NetnsPrefix  = "shn-" // named netns: "shn-<name>-"+id
)

// MarkerDir holds one directory per live underlay, named by its id, with an
// "owner" file naming the owning process, so CleanLeftovers can tell live
// underlays from leftovers.
const MarkerDir = "/run/shoal-netns"

// idRe matches an underlay id.
var idRe = regexp.MustCompile(`^[0-9a-f]{6}$`)

// Missing names what the machine lacks for simulated hosts (empty when
// nothing).
func Missing() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"ip", "nft", "nsenter", "unshare", "mount", "mountpoint", "sleep"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

// Require fails the test under CI=true, and skips it elsewhere, naming what
// is missing for simulated hosts.
func Require(t testing.TB) {
	t.Helper()
	missing := Missing()
	if len(missing) == 0 {
		return
	}
	msg := "simulated hosts need: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// WaitFor polls cond every 20ms until it holds, and fails the test when
// timeout passes first.
func WaitFor(t T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// run runs a root-namespace command and returns its error with its output.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output runs a root-namespace command and returns its stdout.
func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), nil
}

// startTime returns a process's start time in clock ticks since boot (field
// 22 of /proc/PID/stat), which tells a live owner from a reused pid.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return fields[19], nil
}

// writeMarker records this process as the owner of underlay id.
func writeMarker(id string) error {
	dir := filepath.Join(MarkerDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create marker %s: %w", dir, err)
	}
	st, err := startTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("own start time: %w", err)
	}
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), st)
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(owner), 0o644); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	return nil
}

// ownerAlive reports whether the process that created underlay id still runs.
func ownerAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(MarkerDir, id, "owner"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	st, err := startTime(pid)
	return err == nil && st == f[1]
}

// Resources lists, by kind ("netns", "link", "marker"), what exists on the
// machine for underlay id; with id "" it lists everything carrying the
// package's prefixes.
func Resources(id string) (map[string][]string, error) {
	out := map[string][]string{}
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list /run/netns: %w", err)
	}
	for _, e := range ents {
		if nsID, ok := netnsID(e.Name()); ok && (id == "" || nsID == id) {
			out["netns"] = append(out["netns"], e.Name())
		}
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if lID, ok := linkID(l.Name()); ok && (id == "" || lID == id) {
			out["link"] = append(out["link"], l.Name())
		}
	}
	marks, err := os.ReadDir(MarkerDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", MarkerDir, err)
	}
	for _, m := range marks {
		if idRe.MatchString(m.Name()) && (id == "" || m.Name() == id) {
			out["marker"] = append(out["marker"], m.Name())
		}
	}
	return out, nil
}

// netnsID returns the underlay id in a netns name of ours.
func netnsID(name string) (string, bool) {
	if !strings.HasPrefix(name, NetnsPrefix) {
		return "", false
	}
	i := strings.LastIndexByte(name, '-')
	if i < len(NetnsPrefix) || !idRe.MatchString(name[i+1:]) {
		return "", false
	}
	return name[i+1:], true
}

// linkID returns the underlay id in a bridge or veth name of ours.
func linkID(name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, BridgePrefix) && len(name) == len(BridgePrefix)+6:
		id := name[len(BridgePrefix):]
		return id, idRe.MatchString(id)
	case strings.HasPrefix(name, VethPrefix) && len(name) == len(VethPrefix)+8:
		id := name[len(VethPrefix) : len(VethPrefix)+6]
		return id, idRe.MatchString(id)
	}
	return "", false
}

// CleanLeftovers removes every netns, bridge, veth and marker of ours whose
// owning process is gone (a test binary that was killed), killing whatever
// still runs in those namespaces. Underlays of live test processes are left
// alone. It returns what it removed.
func CleanLeftovers() ([]string, error) {
	all, err := Resources("")
	if err != nil {
		return nil, err
	}
	dead := map[string]bool{}
	check := func(id string) bool {
		if v, ok := dead[id]; ok {
			return v
		}
		dead[id] = !ownerAlive(id)
		return dead[id]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var removed []string
	var errs []error
	for _, ns := range all["netns"] {
		id, _ := netnsID(ns)
		if !check(id) {
			continue
		}
		if err := killNetnsProcs(ctx, ns, nil); err != nil {
			errs = append(errs, err)
		}
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+ns)
	}
	for _, l := range all["link"] {
		id, _ := linkID(l)
		if !check(id) {
			continue
		}
		// Deleting a bridge or one end of a veth may take the other with it.
		if _, err := os.Stat(filepath.Join("/sys/class/net", l)); err != nil {
			continue
		}
		if err := run(ctx, "ip", "link", "del", l); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "link "+l)
	}
	for _, m := range all["marker"] {
		if !check(m) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(MarkerDir, m)); err != nil {
			errs = append(errs, fmt.Errorf("remove marker %s: %w", m, err))
			continue
		}
		removed = append(removed, "marker "+m)
	}
	return removed, errors.Join(errs...)
}

// killNetnsProcs SIGKILLs every process in named netns ns (except those in
// keep) and waits until none is left.
func killNetnsProcs(ctx context.Context, ns string, keep map[int]bool) error {
	for {
		out, err := output(ctx, "ip", "netns", "pids", ns)
		if err != nil {
			return fmt.Errorf("processes in %s: %w", ns, err)
		}
		var left int
		for _, f := range strings.Fields(out) {
			pid, err := strconv.Atoi(f)
			if err != nil || keep[pid] {
				continue
			}
			left++
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes in %s survive SIGKILL: %s", ns, strings.TrimSpace(out))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
