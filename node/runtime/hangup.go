package runtime

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// hangUp ends a cancelled exec'd command (pid, our child) as a terminal's
// hangup would: the command is stopped (it forks no more), its descendants
// still in its process group and session get SIGHUP and SIGCONT, and the
// command gets SIGKILL. Descendants that left the session or group
// (setsid, a shell's job control) are not touched, and those that ignore
// SIGHUP (nohup) live on: with a TTY, closing the terminal treats them the
// same way.
//
// liblxc's attach leaves the command in shoald's own process group and
// session, so the group cannot be signalled as a whole; the descendants
// are found through /proc.
func hangUp(pid int) {
	_ = unix.Kill(pid, unix.SIGSTOP)
	procs := readProcs()
	self, ok := procs[pid]
	if ok {
		for _, d := range procTree(procs, pid) {
			if p := procs[d]; p.pgid == self.pgid && p.sid == self.sid {
				_ = unix.Kill(d, unix.SIGHUP)
				_ = unix.Kill(d, unix.SIGCONT)
			}
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}

// reapIfOurs waits for pid if it is our child (an orphan reparented to
// us, a child subreaper), so that it leaves no zombie; otherwise it returns
// at once (ECHILD).
func reapIfOurs(pid int) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// procInfo is what hangUp needs of a process: its parent, process group
// and session (host pids).
type procInfo struct{ ppid, pgid, sid int }

// readProcs reads every process's parent, group and session from /proc.
// Processes that exit meanwhile are left out.
func readProcs() map[int]procInfo {
	out := map[int]procInfo{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, info, ok := parseStat(b)
		if ok {
			out[pid] = info
		}
	}
	return out
}

// parseStat parses /proc/PID/stat: "pid (comm) state ppid pgrp session ...";
// comm may hold spaces and parentheses, so the fields are read after its
// last ')'.
func parseStat(b []byte) (int, procInfo, bool) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return 0, procInfo{}, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return 0, procInfo{}, false
	}
	f := bytes.Fields(b[closing+1:])
	if len(f) < 4 {
		return 0, procInfo{}, false
	}
	var n [3]int
	for i := range n {
		if n[i], err = strconv.Atoi(string(f[i+1])); err != nil {
			return 0, procInfo{}, false
		}
	}
	return pid, procInfo{ppid: n[0], pgid: n[1], sid: n[2]}, true
}

// procTree returns the pids below pid in the process tree procs, breadth
// first (pid itself excluded).
func procTree(procs map[int]procInfo, pid int) []int {
	children := map[int][]int{}
	for p, info := range procs {
		children[info.ppid] = append(children[info.ppid], p)
	}
	var out []int
	queue := []int{pid}
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}
