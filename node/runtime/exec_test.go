package runtime

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExecEnv(t *testing.T) {
	root := execEnv([]string{"FOO=1"}, 0)
	want := []string{defaultPath, "LANG=C.UTF-8", "HOME=/root", "USER=root", "FOO=1"}
	if !reflect.DeepEqual(root, want) {
		t.Errorf("root: %q, want %q", root, want)
	}
	// LXD sets HOME and USER for root only.
	if got, want := execEnv(nil, 1000), []string{defaultPath, "LANG=C.UTF-8"}; !reflect.DeepEqual(got, want) {
		t.Errorf("uid 1000: %q, want %q", got, want)
	}
	// What the caller sets wins and is not doubled.
	got := execEnv([]string{"HOME=/srv", "PATH=/bin", "LANG=fr_FR.UTF-8"}, 0)
	if want := []string{"USER=root", "HOME=/srv", "PATH=/bin", "LANG=fr_FR.UTF-8"}; !reflect.DeepEqual(got, want) {
		t.Errorf("overrides: %q, want %q", got, want)
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		pid  int
		info procInfo
		ok   bool
	}{
		{"42 (sleep) S 7 42 3 0 -1", 42, procInfo{7, 42, 3}, true},
		// comm may hold spaces and parentheses.
		{"9 (a (b) c) R 1 2 3 4", 9, procInfo{1, 2, 3}, true},
		{"9 (x) R 1 2", 0, procInfo{}, false},
		{"garbage", 0, procInfo{}, false},
	} {
		pid, info, ok := parseStat([]byte(tc.in))
		if pid != tc.pid || info != tc.info || ok != tc.ok {
			t.Errorf("parseStat(%q) = %d %+v %v", tc.in, pid, info, ok)
		}
	}
}

func TestProcTree(t *testing.T) {
	procs := map[int]procInfo{
		1: {ppid: 0}, 10: {ppid: 1}, 11: {ppid: 10}, 12: {ppid: 11}, 13: {ppid: 10}, 20: {ppid: 1},
	}
	got := procTree(procs, 10)
	slices.Sort(got)
	if want := []int{11, 12, 13}; !reflect.DeepEqual(got, want) {
		t.Errorf("procTree(10) = %v, want %v", got, want)
	}
	if got := procTree(procs, 12); len(got) != 0 {
		t.Errorf("procTree(leaf) = %v", got)
	}
}

// TestHangUp runs a shell with a foreground child, a child that ignores
// SIGHUP and one in a session of its own; hangUp kills the shell and the
// foreground child and leaves the other two running.
func TestHangUp(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	pidFile := t.TempDir() + "/pids"
	sh := exec.Command("/bin/sh", "-c", `
		(trap '' HUP; exec sleep 301) & echo $! >>"$1"
		setsid sleep 302 & echo $! >>"$1"
		sleep 303 & echo $! >>"$1"
		wait`, "sh", pidFile)
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	deadline := time.Now().Add(10 * time.Second)
	for len(pids) < 3 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	if len(pids) < 3 {
		t.Fatalf("children not started: %v", pids)
	}
	// Let setsid's child leave the session before the hangup.
	for time.Now().Before(deadline) {
		if info, ok := readProcs()[pids[1]]; ok && info.sid == pids[1] {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	hangUp(sh.Process.Pid)
	_ = sh.Wait()
	alive := func(pid int) bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		return len(f) > 0 && f[0] != "Z"
	}
	gone := func(pid int) bool {
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if !alive(pid) {
				return true
			}
		}
		return false
	}
	if !gone(pids[2]) {
		t.Errorf("foreground child %d survived the hangup", pids[2])
	}
	if !alive(pids[0]) {
		t.Errorf("child ignoring SIGHUP (%d) died", pids[0])
	}
	if !alive(pids[1]) {
		t.Errorf("child in its own session (%d) died", pids[1])
	}
}
