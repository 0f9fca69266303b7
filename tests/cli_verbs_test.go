package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// listNames is the set of container names shoal list shows.
func listNames(t *testing.T, d *harness.Daemon) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, row := range csvRows(t, d, "-c", "n") {
		out[row[0]] = true
	}
	return out
}

// TestCLIRename: shoal rename OLD NEW and shoal move OLD NEW, as an Incus
// user types them: refused while running, onto a taken name or a bad one;
// afterwards list shows only the new name, the data, snapshots, hostname
// and address came along, and the old name is free again.
func TestCLIRename(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	old, other, renamed, moved := uniq("rena"), uniq("renb"), uniq("renc"), uniq("rend")
	t.Cleanup(func() {
		for _, n := range []string{old, other, renamed, moved} {
			d.Shoal("delete", "-f", n)
		}
	})
	d.MustShoal("launch", "busybox", old)
	d.MustShoal("init", "busybox", other)
	d.MustShoal("exec", old, "--", "sh", "-c", "echo written-before > /root/data")
	ip := d.WaitAddress(old, time.Minute)
	d.MustShoal("snapshot", "create", old, "s1")

	mustFail(t, d, "Renaming of running instance not allowed", "rename", old, renamed)
	d.MustShoal("stop", old, "-f")
	d.WaitFor(old+" stopped", time.Minute, func() bool { return d.List()[old].State.Status == "Stopped" })
	mustFail(t, d, "already exists", "rename", old, other)
	mustFail(t, d, "new_name", "rename", old, "Bad_Name")
	mustFail(t, d, "not found", "rename", uniq("none"), renamed)
	mustFail(t, d, "--target", "move", old, renamed, "--target", "node1")

	d.MustShoal("rename", old, renamed)
	names := listNames(t, d)
	if !names[renamed] || names[old] {
		t.Fatalf("after rename %s %s, list shows %v", old, renamed, names)
	}
	mustFail(t, d, "not found", "info", old)
	if out := d.MustShoal("snapshot", "list", renamed, "--format", "json"); !strings.Contains(out, `"name":"s1"`) && !strings.Contains(out, `"name": "s1"`) {
		t.Fatalf("snapshots of %s after the rename: %q", renamed, out)
	}
	d.MustShoal("start", renamed)
	if got := d.MustShoal("exec", renamed, "--", "cat", "/root/data"); got != "written-before\n" {
		t.Fatalf("exec %s -- cat /root/data = %q", renamed, got)
	}
	if got := d.MustShoal("exec", renamed, "--", "hostname"); got != renamed+"\n" {
		t.Fatalf("hostname after rename %q, want %s", got, renamed)
	}
	if got := d.WaitAddress(renamed, time.Minute); got != ip {
		t.Fatalf("address after rename %s, want the old one %s", got, ip)
	}
	// The snapshot came along as a snapshot: restoring it works.
	d.MustShoal("exec", renamed, "--", "sh", "-c", "echo later > /root/data")
	d.MustShoal("snapshot", "restore", renamed, "s1")
	d.WaitFor(renamed+" running", time.Minute, func() bool { return d.List()[renamed].State.Status == "Running" })
	if got := d.MustShoal("exec", renamed, "--", "cat", "/root/data"); got != "written-before\n" {
		t.Fatalf("after restoring s1: %q", got)
	}
	// The old name is free: a new container may take it.
	d.MustShoal("init", "busybox", old)
	d.MustShoal("delete", old)

	// move OLD NEW (no --target) renames too.
	d.MustShoal("stop", renamed, "-f")
	d.WaitFor(renamed+" stopped", time.Minute, func() bool { return d.List()[renamed].State.Status == "Stopped" })
	d.MustShoal("move", renamed, moved)
	if names := listNames(t, d); !names[moved] || names[renamed] {
		t.Fatalf("after move %s %s, list shows %v", renamed, moved, names)
	}
	// And through REST.
	var body struct{ Code int }
	if code := d.REST("POST", "/v1/containers/"+moved+"/rename", map[string]any{"new_name": renamed}, nil); code != 200 {
		t.Fatalf("REST rename: %d", code)
	}
	if code := d.REST("POST", "/v1/containers/"+renamed+"/rename", map[string]any{"new_name": other}, &body); code != 409 || body.Code != 6 {
		t.Fatalf("REST rename onto a taken name: %d %+v, want 409 AlreadyExists", code, body)
	}
	d.MustShoal("start", renamed)
	if got := d.MustShoal("exec", renamed, "--", "cat", "/root/data"); got != "written-before\n" {
		t.Fatalf("after two more renames: %q", got)
	}
	// A daemon restart finds it as it is (no volume comes back under an
	// old name, nothing is made again from the image).
	d.Stop()
	d.Start()
	if names := listNames(t, d); !names[renamed] || names[moved] || names[old] {
		t.Fatalf("after a restart, list shows %v", names)
	}
	if got := d.MustShoal("exec", renamed, "--", "cat", "/root/data"); got != "written-before\n" {
		t.Fatalf("after a restart: %q", got)
	}
}
