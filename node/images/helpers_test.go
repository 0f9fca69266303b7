package images

import (
	"os"
	"os/exec"
	"testing"
)

// requireRoot fails under CI=true and skips otherwise when not root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root (the test creates device nodes, chowns and chroots)")
	}
}

// requireCommand fails under CI=true and skips otherwise when name is not
// installed.
func requireCommand(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		missing(t, name+" (Debian package "+pkg+")")
	}
}

// requireFile is requireCommand for a fixed path.
func requireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, path+" (Debian package "+pkg+")")
	}
}

// missing reports a missing prerequisite: fatal in CI, a skip elsewhere.
func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}
