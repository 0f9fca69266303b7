package tests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
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
	if poolHas(t, d, "volumes", old, "") || poolHas(t, d, "snapshots", old, "s1") || !poolHas(t, d, "snapshots", renamed, "s1") {
		t.Fatalf("the pool after the rename: old volume or snapshot still there, or the new one's snapshot missing")
	}
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

// startDaemonArgs starts a daemon with extra shoald flags (the host checks
// of startDaemon first).
func startDaemonArgs(t *testing.T, args ...string) *harness.Daemon {
	t.Helper()
	if missing := harness.Missing(); len(missing) > 0 {
		msg := "end-to-end tests need: " + strings.Join(missing, ", ") + " (run scripts/install.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return harness.StartDaemonWith(t, binDir, harness.Options{Args: args})
}

// snapshotNames are a container's snapshots as snapshot list --format json
// gives them.
func snapshotNames(t *testing.T, d *harness.Daemon, name string) map[string]bool {
	t.Helper()
	var resp struct{ Snapshots []struct{ Name string } }
	if err := json.Unmarshal([]byte(d.MustShoal("snapshot", "list", name, "--format", "json")), &resp); err != nil {
		t.Fatalf("snapshot list %s: %v", name, err)
	}
	out := map[string]bool{}
	for _, s := range resp.Snapshots {
		out[s.Name] = true
	}
	return out
}

// TestCLISnapshotVerbs: snapshot rename, show, create without a name
// (snapshots.pattern) and with --expiry, snapshots.schedule (and
// .stopped) taking snapshots on the minute, and the pruner deleting
// expired ones (shoald --snapshot-prune-interval 2s).
func TestCLISnapshotVerbs(t *testing.T) {
	d := startDaemonArgs(t, "--snapshot-prune-interval", "2s")
	ensureBusybox(t, d)
	id := randHex(3)
	idle, idleToo, run := "snpa-"+id, "snpb-"+id, "snpc-"+id // name order: the runner reaches run last
	t.Cleanup(func() {
		for _, n := range []string{idle, idleToo, run} {
			d.Shoal("delete", "-f", n)
		}
	})
	d.MustShoal("launch", "busybox", run)
	d.MustShoal("init", "busybox", idle)
	d.MustShoal("init", "busybox", idleToo)

	// rename and show.
	d.MustShoal("snapshot", "create", run, "s1")
	d.MustShoal("snapshot", "rename", run, "s1", "first")
	if got := snapshotNames(t, d, run); !got["first"] || got["s1"] {
		t.Fatalf("after snapshot rename s1 first: %v", got)
	}
	show := d.MustShoal("snapshot", "show", run, "first")
	for _, want := range []string{"name: first\n", "\ncreated: 20", "\nexpires: \"\"\n", "\nstateful: false\n"} {
		if !strings.Contains(show, want) {
			t.Fatalf("snapshot show: no %q in\n%s", want, show)
		}
	}
	mustFail(t, d, "already exists", "snapshot", "rename", run, "first", "first")
	mustFail(t, d, "not found", "snapshot", "rename", run, "s1", "x")
	mustFail(t, d, "new_name", "snapshot", "rename", run, "first", "a/b")
	mustFail(t, d, "not found", "snapshot", "show", run, "nope")
	mustFail(t, d, "unknown subcommand", "snapshot", "bogus")

	// No name: snapshots.pattern, default snap%d.
	if out := d.MustShoal("snapshot", "create", run); out != "Snapshot snap0 created\n" {
		t.Fatalf("snapshot create without a name: %q", out)
	}
	d.MustShoal("config", "set", run, "snapshots.pattern={{ creation_date|date:'2006-01-02_15-04-05' }}")
	out := d.MustShoal("snapshot", "create", run)
	if !regexp.MustCompile(`^Snapshot 20\d\d-\d\d-\d\d_\d\d-\d\d-\d\d created\n$`).MatchString(out) {
		t.Fatalf("snapshot create with a date pattern: %q", out)
	}

	// Bad keys and expiries: one line naming the field and the forms.
	mustFail(t, d, "snapshots.schedule: \"61 * * * *\" is not valid", "config", "set", run, "snapshots.schedule=61 * * * *")
	mustFail(t, d, "@hourly", "config", "set", run, "snapshots.schedule=@sometimes")
	mustFail(t, d, "snapshots.expiry", "config", "set", run, "snapshots.expiry=1 day")
	mustFail(t, d, "snapshots.pattern", "config", "set", run, "snapshots.pattern={{ hostname }}")
	mustFail(t, d, "expiry: \"1q\" is not valid", "snapshot", "create", run, "x", "--expiry", "1q")
	mustFail(t, d, "--no-expiry", "snapshot", "create", run, "x", "--expiry", "1d", "--no-expiry")

	// --expiry 1M (LXD: M is minutes, m months): the pruner deletes it
	// once the minute has passed.
	start := time.Now()
	d.MustShoal("snapshot", "create", run, "short", "--expiry", "1M")
	if show := d.MustShoal("snapshot", "show", run, "short"); strings.Contains(show, "expires: \"\"") {
		t.Fatalf("snapshot with --expiry 1M shows no expiry:\n%s", show)
	}
	d.MustShoal("snapshot", "create", run, "long", "--expiry", "1d")
	// snapshots.expiry is the default; --no-expiry ignores it.
	d.MustShoal("config", "set", run, "snapshots.expiry=2w")
	d.MustShoal("snapshot", "create", run, "kept", "--no-expiry")
	if show := d.MustShoal("snapshot", "show", run, "kept"); !strings.Contains(show, "expires: \"\"") {
		t.Fatalf("--no-expiry snapshot shows an expiry:\n%s", show)
	}

	// A schedule every minute: the running container and the stopped one
	// with snapshots.schedule.stopped get one; the other stopped one not.
	d.MustShoal("config", "set", run, "snapshots.schedule=* * * * *", "snapshots.pattern=auto%d")
	d.MustShoal("config", "set", idle, "snapshots.schedule=* * * * *", "snapshots.pattern=auto%d")
	d.MustShoal("config", "set", idleToo, "snapshots.schedule=@hourly, * * * * *", "snapshots.schedule.stopped=true", "snapshots.pattern=auto%d")
	d.WaitFor("a scheduled snapshot of "+run, 70*time.Second, func() bool { return snapshotNames(t, d, run)["auto0"] })
	if got := snapshotNames(t, d, idleToo); !got["auto0"] {
		t.Fatalf("stopped %s with snapshots.schedule.stopped=true has no scheduled snapshot: %v", idleToo, got)
	}
	if got := snapshotNames(t, d, idle); len(got) != 0 {
		t.Fatalf("stopped %s without snapshots.schedule.stopped got snapshots: %v", idle, got)
	}
	if show := d.MustShoal("snapshot", "show", run, "auto0"); strings.Contains(show, "expires: \"\"") {
		t.Fatalf("scheduled snapshot did not get snapshots.expiry:\n%s", show)
	}
	d.MustShoal("config", "unset", run, "snapshots.schedule")
	d.MustShoal("config", "unset", idleToo, "snapshots.schedule")

	d.WaitFor("the expired snapshot pruned", 75*time.Second-time.Since(start), func() bool { return !snapshotNames(t, d, run)["short"] })
	if got := snapshotNames(t, d, run); !got["long"] || !got["first"] || !got["kept"] {
		t.Fatalf("the pruner took more than the expired one: %v", got)
	}
	// The host's snapshot went too, not only the record.
	if poolHas(t, d, "snapshots", run, "short") || !poolHas(t, d, "snapshots", run, "long") {
		t.Fatal("the pool still holds the pruned snapshot, or lost the one kept")
	}
}

// memberPoolHas is poolHas on a simulated host (its pools are mounted in
// its own mount namespace).
func memberPoolHas(m *harness.Member, kind, name, snap string) bool {
	p := filepath.Join(m.StateDir, "storage-pools", "*", kind, "containers%2F"+name, snap)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return m.Host.Command(ctx, "sh", "-c", `ls -d -- $1 >/dev/null 2>&1`, "sh", p).Run() == nil
}

// poolHas reports whether the daemon's pool directories hold, under kind
// (volumes or snapshots), container name's volume (with snap: that
// snapshot of it).
func poolHas(t *testing.T, d *harness.Daemon, kind, name, snap string) bool {
	t.Helper()
	p := filepath.Join(d.StateDir, "storage-pools", "*", kind, "containers%2F"+name)
	if snap != "" {
		p = filepath.Join(p, snap)
	}
	m, err := filepath.Glob(p)
	if err != nil {
		t.Fatal(err)
	}
	return len(m) > 0
}

// TestCLIFileVerbs: file edit (through $EDITOR, and from stdin) keeps the
// file's mode and owner; file delete removes a file, a symlink, an empty
// directory and refuses the rest; file pull -r brings a tree out with its
// modes and symlinks, into a directory or to a new name (-p: parents).
func TestCLIFileVerbs(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c := uniq("filv")
	t.Cleanup(func() { d.Shoal("delete", "-f", c) })
	d.MustShoal("launch", "busybox", c)
	local := t.TempDir()
	conf := filepath.Join(local, "app.conf")
	os.WriteFile(conf, []byte("a=1\n"), 0o644)
	d.MustShoal("file", "push", conf, c+"/etc/app.conf", "--mode", "0640", "--uid", "1000", "--gid", "1001")
	stat := func(p string) string {
		return strings.TrimSpace(d.MustShoal("exec", c, "--", "stat", "-c", "%a %u %g", p))
	}

	// edit with an editor (a script standing in for the user's hands).
	editor := filepath.Join(local, "editor.sh")
	os.WriteFile(editor, []byte("#!/bin/sh\nsed -i 's/a=1/a=2/' \"$1\"\n"), 0o755)
	t.Setenv("EDITOR", editor)
	d.MustShoal("file", "edit", c+"/etc/app.conf")
	if got := d.MustShoal("exec", c, "--", "cat", "/etc/app.conf"); got != "a=2\n" {
		t.Fatalf("after file edit: %q", got)
	}
	if got := stat("/etc/app.conf"); got != "640 1000 1001" {
		t.Fatalf("after file edit, mode and owner %q, want 640 1000 1001", got)
	}
	// From stdin (not a terminal): the new content, as LXD.
	if _, errOut, code := d.ShoalIn(strings.NewReader("b=3\n"), "file", "edit", c+"/etc/app.conf"); code != 0 {
		t.Fatalf("file edit from stdin: %d %s", code, errOut)
	}
	if got := d.MustShoal("exec", c, "--", "cat", "/etc/app.conf"); got != "b=3\n" || stat("/etc/app.conf") != "640 1000 1001" {
		t.Fatalf("after file edit from stdin: %q, %s", got, stat("/etc/app.conf"))
	}
	t.Setenv("EDITOR", "false")
	mustFail(t, d, "editor false", "file", "edit", c+"/etc/app.conf")
	mustFail(t, d, "not found", "file", "edit", c+"/etc/none.conf")

	// delete.
	d.MustShoal("exec", c, "--", "sh", "-c", "mkdir -p /srv/empty /srv/full && echo x > /srv/full/f && ln -s /etc/passwd /srv/link")
	d.MustShoal("file", "delete", c+"/etc/app.conf", c+"/srv/empty", c+"/srv/link")
	if got := d.MustShoal("exec", c, "--", "sh", "-c", "ls /etc/app.conf /srv/empty /srv/link 2>&1 | wc -l; cat /etc/passwd | wc -l"); strings.Fields(got)[0] != "3" || strings.Fields(got)[1] == "0" {
		t.Fatalf("after file delete: %q (want 3 missing, /etc/passwd kept)", got)
	}
	mustFail(t, d, "not found", "file", "delete", c+"/srv/none")
	mustFail(t, d, "not empty", "file", "delete", c+"/srv/full")
	mustFail(t, d, "climbs above", "file", "delete", c+"/../etc/passwd")
	mustFail(t, d, "unknown subcommand", "file", "bogus")

	// pull -r.
	d.MustShoal("exec", c, "--", "sh", "-c", `mkdir -p /srv/t/sub /srv/t/emptydir && echo x > /srv/t/a && chmod 0600 /srv/t/a &&
		printf '#!/bin/sh\necho ran\n' > /srv/t/sub/run.sh && chmod 0755 /srv/t/sub/run.sh && chmod 0751 /srv/t/sub &&
		ln -s a /srv/t/link && ln -s /etc /srv/t/outside`)
	into := filepath.Join(local, "into")
	os.Mkdir(into, 0o755)
	d.MustShoal("file", "pull", "-r", c+"/srv/t", into)
	check := func(root string) {
		t.Helper()
		for rel, want := range map[string]os.FileMode{"": os.ModeDir | 0o755, "a": 0o600, "sub": os.ModeDir | 0o751, "sub/run.sh": 0o755, "emptydir": os.ModeDir | 0o755} {
			fi, err := os.Lstat(filepath.Join(root, rel))
			if err != nil || fi.Mode() != want {
				t.Fatalf("pulled %s: %v %v, want mode %v", rel, fi.Mode(), err, want)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(root, "sub", "run.sh")); string(b) != "#!/bin/sh\necho ran\n" {
			t.Fatalf("pulled run.sh: %q", b)
		}
		if l, err := os.Readlink(filepath.Join(root, "link")); err != nil || l != "a" {
			t.Fatalf("pulled link: %q %v", l, err)
		}
		if l, err := os.Readlink(filepath.Join(root, "outside")); err != nil || l != "/etc" {
			t.Fatalf("pulled outside link (kept as a link, not followed): %q %v", l, err)
		}
	}
	check(filepath.Join(into, "t"))
	mustFail(t, d, "exists", "file", "pull", "-r", c+"/srv/t", into)
	// To a new name; -p makes the parents.
	d.MustShoal("file", "pull", "-r", "-p", c+"/srv/t", filepath.Join(local, "x", "y", "copy"))
	check(filepath.Join(local, "x", "y", "copy"))
	mustFail(t, d, "not found", "file", "pull", "-r", c+"/srv/none", into)
	// Of a stopped container too.
	d.MustShoal("stop", c, "-f")
	d.WaitFor(c+" stopped", time.Minute, func() bool { return d.List()[c].State.Status == "Stopped" })
	d.MustShoal("file", "pull", "-r", c+"/srv/t", filepath.Join(local, "stopped"))
	check(filepath.Join(local, "stopped"))
}

// TestCLIInfoResources: shoal info --resources shows the member's CPUs,
// memory, pools and interfaces; --target MEMBER runs it on that member
// (its own network namespace here, so its own address shows). On the same
// two-member cluster, rename, snapshot rename and file delete asked of one
// member run on the owner.
func TestCLIInfoResources(t *testing.T) {
	requireCluster(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	type resources struct {
		Member string
		CPU    struct{ Count int } `json:"cpu"`
		Memory struct {
			Total int64 `json:"total,string"`
			Used  int64 `json:"used,string"`
		}
		Pools []struct {
			Name, Driver string
			Total        int64 `json:"total,string"`
			Used         int64 `json:"used,string"`
		}
		Interfaces []struct {
			Name, Type, State string
			Addresses         []string
		}
	}
	get := func(args ...string) resources {
		t.Helper()
		var r resources
		out := ms[0].MustShoal(append([]string{"info", "--resources", "--format", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("info --resources %v: %v\n%s", args, err, out)
		}
		return r
	}
	hasAddr := func(r resources, ip string) bool {
		for _, i := range r.Interfaces {
			for _, a := range i.Addresses {
				if strings.HasPrefix(a, ip+"/") {
					return true
				}
			}
		}
		return false
	}
	for i, args := range [][]string{nil, {"--target", ms[1].Opts.Name}} {
		m := ms[0]
		if i == 1 {
			m = ms[1]
		}
		r := get(args...)
		if r.Member != m.Opts.Name || r.CPU.Count != goruntime.NumCPU() || r.Memory.Total <= 0 || r.Memory.Used <= 0 || r.Memory.Used > r.Memory.Total {
			t.Fatalf("info --resources %v: %+v", args, r)
		}
		if len(r.Pools) == 0 || r.Pools[0].Driver != "btrfs" || r.Pools[0].Total <= 0 || r.Pools[0].Used <= 0 {
			t.Fatalf("info --resources %v: pools %+v", args, r.Pools)
		}
		if !hasAddr(r, m.Host.IP.String()) {
			t.Fatalf("info --resources %v: no interface with %s: %+v", args, m.Host.IP, r.Interfaces)
		}
		if hasAddr(r, ms[1-i].Host.IP.String()) {
			t.Fatalf("info --resources %v shows the other member's address %s", args, ms[1-i].Host.IP)
		}
	}
	table := ms[0].MustShoal("info", "--resources", "--target", ms[1].Opts.Name)
	for _, want := range []string{"Member: " + ms[1].Opts.Name + "\n", "CPU:\n", "Memory:\n  Total: ", "Storage pools:\n", "(btrfs)", "Network interfaces:\n"} {
		if !strings.Contains(table, want) {
			t.Fatalf("info --resources: no %q in\n%s", want, table)
		}
	}
	mustFail(t, ms[0].Daemon, "not found", "info", "--resources", "--target", "nosuch")
	mustFail(t, ms[0].Daemon, "--resources", "info", "--target", ms[1].Opts.Name)
	mustFail(t, ms[0].Daemon, "drop", "info", "--resources", "c1")

	// The container verbs asked of one member run on the owner.
	ms[0].MustShoal("image", "build", "busybox")
	a, b := uniq("crna"), uniq("crnb")
	t.Cleanup(func() { ms[0].Shoal("delete", "-f", a); ms[0].Shoal("delete", "-f", b) })
	ms[0].MustShoal("init", "busybox", a, "--target", ms[1].Opts.Name)
	ms[0].WaitFor(a+" stopped on "+ms[1].Opts.Name, time.Minute, func() bool { return ms[0].List()[a].State.Status == "Stopped" })
	data := filepath.Join(t.TempDir(), "data")
	os.WriteFile(data, []byte("kept\n"), 0o644)
	ms[0].MustShoal("file", "push", data, a+"/root/data")
	ms[0].MustShoal("snapshot", "create", a, "s1")
	ms[0].MustShoal("snapshot", "rename", a, "s1", "s2")
	ms[0].MustShoal("rename", a, b)
	if l := ms[1].List(); l[a].Container.Name != "" || l[b].Container.Node != ms[1].Opts.Name {
		t.Fatalf("after rename through %s: %v", ms[0].Opts.Name, l)
	}
	if !memberPoolHas(ms[1], "snapshots", b, "s2") || memberPoolHas(ms[1], "volumes", a, "") {
		t.Fatalf("%s's pool after the renames: no %s/s2, or %s still there", ms[1].Opts.Name, b, a)
	}
	ms[0].MustShoal("start", b)
	if got := ms[0].MustShoal("exec", b, "--", "cat", "/root/data"); got != "kept\n" {
		t.Fatalf("exec %s -- cat /root/data: %q", b, got)
	}
	ms[0].MustShoal("file", "delete", b+"/root/data")
	mustFail(t, ms[0].Daemon, "not found", "file", "delete", b+"/root/data")
}
