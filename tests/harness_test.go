package tests

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := harness.Build("..", dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// Simulated hosts left by a test binary that was killed (its cleanups
	// never ran) are swept first.
	if removed, err := netns.CleanLeftovers(); err != nil {
		fmt.Fprintln(os.Stderr, "sweep simulated hosts:", err)
	} else if len(removed) > 0 {
		fmt.Fprintln(os.Stderr, "swept leftovers of an interrupted run:", removed)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startDaemon starts a daemon for a test; a host missing prerequisites fails
// the test under CI=true and skips it elsewhere, naming what is missing.
func startDaemon(t *testing.T) *harness.Daemon {
	t.Helper()
	if missing := harness.Missing(); len(missing) > 0 {
		msg := "end-to-end tests need: " + strings.Join(missing, ", ") + " (run scripts/install.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return harness.StartDaemon(t, binDir)
}

var (
	uniq    = harness.Uniq
	randHex = harness.RandHex
	hostRun = harness.HostRun
)

// pidOf returns a running container's init pid.
func pidOf(t *testing.T, d *harness.Daemon, name string) int {
	t.Helper()
	pid, _ := strconv.Atoi(d.List()[name].State.Pid)
	if pid <= 0 {
		t.Fatalf("container %s has no pid: %+v", name, d.List()[name])
	}
	return pid
}
