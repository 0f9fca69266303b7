package tests

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// csvRows runs shoal list ... --format csv and parses what it prints.
func csvRows(t *testing.T, d *harness.Daemon, args ...string) [][]string {
	t.Helper()
	out := d.MustShoal(append([]string{"list", "--format", "csv"}, args...)...)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("list %s: not CSV: %v\n%s", strings.Join(args, " "), err, out)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	return rows
}

// TestCLIHabits checks what an Incus user types without thinking: list
// with column letters, csv and filters; start/stop --all; version;
// shell completion with container names; file push -r and -p.
func TestCLIHabits(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	run, idle := uniq("habr"), uniq("habs")
	t.Cleanup(func() { d.Shoal("delete", "-f", run); d.Shoal("delete", "-f", idle) })
	d.MustShoal("launch", "busybox", run, "-c", "user.role=web")
	d.MustShoal("init", "busybox", idle)

	// list -c ns --format csv: one record per container, no header.
	if got, want := csvRows(t, d, "-c", "ns"), [][]string{{run, "RUNNING"}, {idle, "STOPPED"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("list -c ns --format csv = %q, want %q", got, want)
	}
	// Filters pick the right one.
	if got := csvRows(t, d, "-c", "nsL", "status=running"); len(got) != 1 || got[0][0] != run || got[0][2] != "node1" {
		t.Fatalf("status=running: %q", got)
	}
	if got := csvRows(t, d, "-c", "n", "status=stopped"); len(got) != 1 || got[0][0] != idle {
		t.Fatalf("status=stopped: %q", got)
	}
	if got := csvRows(t, d, "-c", "n", "user.role=web"); len(got) != 1 || got[0][0] != run {
		t.Fatalf("user.role=web: %q", got)
	}
	if got := csvRows(t, d, "-c", "n,user.role", idle[:5]); len(got) != 1 || got[0][0] != idle || got[0][1] != "" {
		t.Fatalf("name prefix %s: %q", idle[:5], got)
	}
	if table := d.MustShoal("list", "-c", "ns", "location=node1"); !strings.HasPrefix(table, "NAME") || !strings.Contains(table, run) || !strings.Contains(table, idle) {
		t.Fatalf("table:\n%s", table)
	}
	// Bad input: one line naming what is wrong, non-zero exit.
	mustFail(t, d, "unknown column 'X'", "list", "-c", "nsX")
	mustFail(t, d, "column '6' is not available", "list", "-c", "n6")
	mustFail(t, d, `unknown key "bogus"`, "list", "bogus=1")
	mustFail(t, d, "allowed: running", "list", "status=sleeping")
	mustFail(t, d, "--format", "list", "--format", "xml")
	mustFail(t, d, "--format", "image", "list", "--format", "csv")

	// stop --all, start --all.
	status := func(name string) string { return d.List()[name].State.Status }
	d.MustShoal("stop", "--all", "-f")
	d.WaitFor("both stopped", time.Minute, func() bool { return status(run) == "Stopped" && status(idle) == "Stopped" })
	d.MustShoal("start", "--all")
	d.WaitFor("both running", time.Minute, func() bool { return status(run) == "Running" && status(idle) == "Running" })
	mustFail(t, d, "--all", "stop", "--all", run)
	mustFail(t, d, "--all", "start")

	// version, completion.
	if out := d.MustShoal("version"); !strings.Contains(out, "Client version: ") || !strings.Contains(out, "node1") {
		t.Fatalf("version:\n%s", out)
	}
	if out := d.MustShoal("completion", "bash"); !strings.Contains(out, "bash completion") {
		t.Fatalf("completion bash: %.200q", out)
	}
	if out := d.MustShoal("__complete", "info", run[:5]); !strings.Contains(out, run+"\n") || strings.Contains(out, idle) {
		t.Fatalf("tab after 'shoal info %s': %q", run[:5], out)
	}
	if out := d.MustShoal("__complete", "file", "push", "x", idle[:5]); !strings.Contains(out, idle+"/\n") {
		t.Fatalf("tab after 'shoal file push x %s': %q", idle[:5], out)
	}
	mustFail(t, d, "missing subcommand", "completion")

	// file push -r of a tree, read back from inside.
	site := filepath.Join(t.TempDir(), "site")
	os.MkdirAll(filepath.Join(site, "sub", "deep"), 0o755)
	os.WriteFile(filepath.Join(site, "index.html"), []byte("home\n"), 0o644)
	os.WriteFile(filepath.Join(site, "sub", "deep", "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)
	os.Symlink("index.html", filepath.Join(site, "link.html"))
	d.MustShoal("file", "push", "-r", site, run+"/tmp/")
	if got := d.MustShoal("exec", run, "--", "cat", "/tmp/site/index.html", "/tmp/site/link.html"); got != "home\nhome\n" {
		t.Fatalf("pushed tree, index.html and its symlink read %q", got)
	}
	if got := d.MustShoal("exec", run, "--", "/tmp/site/sub/deep/run.sh"); got != "ran\n" {
		t.Fatalf("pushed tree, run.sh (0755) ran: %q", got)
	}
	// -p makes the missing parents; without it they must exist.
	d.MustShoal("file", "push", "-r", "-p", site, run+"/srv/a/b/")
	if got := d.MustShoal("exec", run, "--", "cat", "/srv/a/b/site/sub/deep/run.sh"); got != "#!/bin/sh\necho ran\n" {
		t.Fatalf("push -r -p: %q", got)
	}
	mustFail(t, d, "no such directory", "file", "push", "-r", site, run+"/nonexistent-dir/")
	d.MustShoal("file", "push", "-p", filepath.Join(site, "index.html"), idle+"/opt/x/y/index.html")
	if got := d.MustShoal("exec", idle, "--", "cat", "/opt/x/y/index.html"); got != "home\n" {
		t.Fatalf("push -p of one file: %q", got)
	}
	// pull -p makes the local parents.
	local := filepath.Join(t.TempDir(), "a", "b", "index.html")
	d.MustShoal("file", "pull", "-p", run+"/tmp/site/index.html", local)
	if b, err := os.ReadFile(local); err != nil || string(b) != "home\n" {
		t.Fatalf("pull -p: %q %v", b, err)
	}
	// file pull -r: TestCLIFileVerbs.
}
