package tests

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// volumeRow is one custom volume as `storage volume list --format json`
// prints it.
type volumeRow struct {
	Pool      string            `json:"pool"`
	Name      string            `json:"name"`
	Node      string            `json:"node"`
	Config    map[string]string `json:"config"`
	UsedBy    []string          `json:"used_by"`
	Snapshots []struct {
		Name string `json:"name"`
	} `json:"snapshots"`
}

// volumes lists the custom volumes a member reports, by name.
func volumes(t *testing.T, d *harness.Daemon) map[string]volumeRow {
	t.Helper()
	var resp struct {
		Volumes []volumeRow `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(d.MustShoal("storage", "volume", "list", "--format", "json")), &resp); err != nil {
		t.Fatalf("volume list: %v", err)
	}
	out := map[string]volumeRow{}
	for _, v := range resp.Volumes {
		out[v.Name] = v
	}
	return out
}

// TestStorageVolumes walks through custom volumes on one member: create
// with a quota, attach to a running container (hot-plugged, writable by
// the container's root), a second container sharing it, snapshot and
// restore, a delete refused while used, detach, copy with snapshots,
// rename, the quota enforced, and bad input refused with nothing changed.
func TestStorageVolumes(t *testing.T) {
	d := startDaemon(t)
	ensureBusybox(t, d)
	c1, c2, v1, v2, v3, vq, qp := uniq("vc"), uniq("vc"), uniq("vol"), uniq("vol"), uniq("vol"), uniq("vol"), uniq("qp")
	t.Cleanup(func() {
		d.Shoal("delete", "-f", c1)
		d.Shoal("delete", "-f", c2)
		for _, v := range []string{v1, v2, v3} {
			d.Shoal("storage", "volume", "delete", "default", v)
		}
		d.Shoal("storage", "volume", "delete", qp, vq)
	})

	d.MustShoal("storage", "volume", "create", "default", v1, "user.purpose=test")
	if got := strings.TrimSpace(d.MustShoal("storage", "volume", "get", "default", v1, "user.purpose")); got != "test" {
		t.Fatalf("user.purpose = %q", got)
	}
	// The default pool runs without qgroups: a size would not hold there.
	mustFail(t, d, "enforces no sizes", "storage", "volume", "create", "default", uniq("vol"), "size=64MiB")
	d.MustShoal("launch", "busybox", c1)
	// Hot-plugged into the running container, writable by its root.
	d.MustShoal("storage", "volume", "attach", "default", v1, c1, "/data")
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo one > /data/f")
	if got := d.MustShoal("exec", c1, "--", "cat", "/data/f"); got != "one\n" {
		t.Fatalf("/data/f = %q", got)
	}
	if row := volumes(t, d)[v1]; len(row.UsedBy) != 1 || row.UsedBy[0] != c1 {
		t.Fatalf("volume used by %v, want [%s]", row.UsedBy, c1)
	}
	// A second container on the same member sees the same files.
	d.MustShoal("launch", "busybox", c2)
	d.MustShoal("config", "device", "add", c2, "shared", "disk", "pool=default", "source="+v1, "path=/mnt/shared", "readonly=true")
	if got := d.MustShoal("exec", c2, "--", "cat", "/mnt/shared/f"); got != "one\n" {
		t.Fatalf("the second container reads %q", got)
	}
	if _, _, code := d.Shoal("exec", c2, "--", "sh", "-c", "echo x > /mnt/shared/g"); code == 0 {
		t.Fatalf("a readonly attachment was writable")
	}
	mustFail(t, d, "is used by", "storage", "volume", "delete", "default", v1)

	// Snapshot, change, restore (the users stopped).
	d.MustShoal("storage", "volume", "snapshot", "create", "default", v1, "s1")
	d.MustShoal("exec", c1, "--", "sh", "-c", "echo two > /data/f")
	mustFail(t, d, "stop it first", "storage", "volume", "restore", "default", v1, "s1")
	d.MustShoal("stop", c1, c2)
	d.MustShoal("storage", "volume", "restore", "default", v1, "s1")
	d.MustShoal("start", c1)
	if got := d.MustShoal("exec", c1, "--", "cat", "/data/f"); got != "one\n" {
		t.Fatalf("after the restore /data/f = %q, want one", got)
	}
	// Kept across a restart of the container.
	d.MustShoal("restart", c1)
	if got := d.MustShoal("exec", c1, "--", "cat", "/data/f"); got != "one\n" {
		t.Fatalf("after a restart /data/f = %q", got)
	}

	// On a pool with quotas a size holds: 64 MiB cannot take 100; then
	// grown live to 256 MiB, it can.
	d.MustShoal("storage", "create", qp, "btrfs", "size=512MiB", "btrfs.quotas=true")
	d.MustShoal("storage", "volume", "create", qp, vq, "size=64MiB")
	d.MustShoal("storage", "volume", "attach", qp, vq, c1, "/q")
	if _, _, code := d.Shoal("exec", c1, "--", "sh", "-c", "dd if=/dev/zero of=/q/big bs=1M count=100 && sync"); code == 0 {
		t.Fatalf("wrote 100 MiB into a 64 MiB volume")
	}
	d.MustShoal("exec", c1, "--", "rm", "-f", "/q/big")
	d.MustShoal("exec", c1, "--", "sync")
	d.MustShoal("storage", "volume", "set", qp, vq, "size=256MiB")
	d.MustShoal("exec", c1, "--", "sh", "-c", "dd if=/dev/zero of=/q/big bs=1M count=100 && sync")
	if info := d.MustShoal("storage", "volume", "info", qp, vq); !strings.Contains(info, "Size: 256MiB") || !strings.Contains(info, "Usage: 10") {
		t.Fatalf("volume info:\n%s", info)
	}
	d.MustShoal("storage", "volume", "detach", qp, vq, c1)
	d.MustShoal("storage", "volume", "delete", qp, vq)

	// Detach: gone from inside, files kept in the volume.
	d.MustShoal("storage", "volume", "detach", "default", v1, c1)
	d.MustShoal("config", "device", "remove", c2, "shared")
	if out, _, _ := d.Shoal("exec", c1, "--", "cat", "/data/f"); out == "one\n" {
		t.Fatalf("still visible after detach")
	}
	// Copy with snapshots, then rename the copy.
	d.MustShoal("storage", "volume", "copy", "default/"+v1, "default/"+v2)
	d.MustShoal("storage", "volume", "move", "default/"+v2, "default/"+v3)
	vs := volumes(t, d)
	if _, ok := vs[v2]; ok {
		t.Fatalf("%s still listed after the rename", v2)
	}
	if row, ok := vs[v3]; !ok || len(row.Snapshots) != 1 || row.Snapshots[0].Name != "s1" || row.Config["user.purpose"] != "test" {
		t.Fatalf("the copy is %+v, want snapshot s1 and user.purpose", vs[v3])
	}
	d.MustShoal("storage", "volume", "attach", "default", v3, c1, "copy", "/copy")
	if got := d.MustShoal("exec", c1, "--", "cat", "/copy/f"); got != "one\n" {
		t.Fatalf("the copy's f = %q", got)
	}
	if show := d.MustShoal("storage", "volume", "show", "default", v3); !strings.Contains(show, "used_by:\n  - "+c1) || !strings.Contains(show, "- s1") {
		t.Fatalf("volume show:\n%s", show)
	}

	// Bad input, each refused with one line naming the field; nothing changes.
	mustFail(t, d, "config.size", "storage", "volume", "create", "default", uniq("vol"), "size=lots")
	mustFail(t, d, "config.colour", "storage", "volume", "create", "default", uniq("vol"), "colour=blue")
	mustFail(t, d, "already exists", "storage", "volume", "create", "default", v1)
	mustFail(t, d, "not found", "storage", "volume", "show", "default", uniq("nope"))
	mustFail(t, d, "pool", "storage", "volume", "create", uniq("nopool"), uniq("vol"))
	mustFail(t, d, "not found", "config", "device", "add", c1, "x", "disk", "pool=default", "source="+uniq("nope"), "path=/x")
	mustFail(t, d, "is used by", "storage", "volume", "rename", "default", v3, uniq("vol"))
	mustFail(t, d, "not POOL/VOLUME", "storage", "volume", "copy", v1, "default/x")
	mustFail(t, d, "unknown subcommand", "storage", "volume", "frobnicate")
	if got := d.MustShoal("exec", c1, "--", "cat", "/copy/f"); got != "one\n" {
		t.Fatalf("after the refused calls the copy's f = %q", got)
	}
	d.MustShoal("storage", "volume", "detach", "default", v3, c1)
	d.MustShoal("storage", "volume", "delete", "default", v3)
	d.MustShoal("storage", "volume", "delete", "default", v1)
	if vs := volumes(t, d); len(vs) != 0 {
		t.Fatalf("volumes left: %v", vs)
	}
}

// TestVolumesAcrossMembers: a volume is created on a chosen member; a
// container whose profile attaches it is placed there; a live move (CRIU)
// carries the volume with the running container, a process holding a file
// open on it surviving; a cold move carries it back; and a detached volume
// is copied and moved to another member on its own.
func TestVolumesAcrossMembers(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 2)
	n1 := ms[0]
	n1.MustShoal("image", "build", "busybox")
	ct, c2, v1, v1c, prof := uniq("vm"), uniq("vm"), uniq("vol"), uniq("vol"), uniq("pv")

	n1.MustShoal("storage", "volume", "create", "default", v1, "--target", "n2")
	if row := volumes(t, n1.Daemon)[v1]; row.Node != "n2" {
		t.Fatalf("volume on %q, want n2", row.Node)
	}
	n1.MustShoal("profile", "create", prof)
	n1.MustShoal("profile", "device", "add", prof, "data", "disk", "pool=default", "source="+v1, "path=/data")
	mustFail(t, n1.Daemon, "are on n2", "launch", "busybox", uniq("vm"), "-p", "default", "-p", prof, "--target", "n1")
	n1.MustShoal("launch", "busybox", ct, "-p", "default", "-p", prof)
	if node := n1.List()[ct].Container.Node; node != "n2" {
		t.Fatalf("the container was placed on %s, not with its volume on n2", node)
	}
	n1.MustShoal("exec", ct, "--", "sh", "-c", "echo hello > /data/f")
	// A process appending to a file on the volume, every 100 ms.
	n1.MustShoal("exec", ct, "--", "setsid", "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i >> /data/ticks; sleep 0.1; done </dev/null >/dev/null 2>&1 &")
	if !hasCustomVolume(ms[1], v1) || hasCustomVolume(ms[0], v1) {
		t.Fatalf("before the move, n2 holds %s: %v, n1: %v", v1, hasCustomVolume(ms[1], v1), hasCustomVolume(ms[0], v1))
	}
	lines := func() int {
		out, _, _ := n1.Shoal("exec", ct, "--", "wc", "-l", "/data/ticks")
		n, _ := strconv.Atoi(strings.Fields(out + " 0")[0])
		return n
	}
	n1.WaitFor("the ticker to write", 10*time.Second, func() bool { return lines() > 3 })

	// Live: the volume's files and the process writing to it go along.
	down := liveMove(t, n1, ct, "n1")
	t.Logf("live move with a custom volume: downtime %v", down)
	row := n1.List()[ct]
	if row.Container.Node != "n1" || row.State.Status != "Running" {
		t.Fatalf("after the live move %s is %+v, want Running on n1", ct, row)
	}
	before := lines()
	n1.WaitFor("the ticker to go on after the live move", 10*time.Second, func() bool { return lines() > before+3 })
	if v := volumes(t, n1.Daemon)[v1]; v.Node != "n1" {
		t.Fatalf("after the live move the volume is on %s", v.Node)
	}
	if hasCustomVolume(ms[1], v1) || !hasCustomVolume(ms[0], v1) {
		t.Fatalf("after the live move, n2 holds %s: %v, n1: %v", v1, hasCustomVolume(ms[1], v1), hasCustomVolume(ms[0], v1))
	}

	// Cold, back to n2.
	out := n1.MustShoal("move", ct, "--target", "n2")
	t.Logf("move: %s", strings.TrimSpace(out))
	row = n1.List()[ct]
	if row.Container.Node != "n2" || row.State.Status != "Running" {
		t.Fatalf("after the cold move %s is %+v, want Running on n2", ct, row)
	}
	if got := n1.MustShoal("exec", ct, "--", "cat", "/data/f"); got != "hello\n" {
		t.Fatalf("after the moves /data/f = %q", got)
	}
	if v := volumes(t, n1.Daemon)[v1]; v.Node != "n2" {
		t.Fatalf("the volume stayed on %s", v.Node)
	}
	if hasCustomVolume(ms[0], v1) {
		t.Fatalf("n1 still holds a copy of %s", v1)
	}

	// Detached, it travels alone: copied to n1, then moved there.
	n1.MustShoal("profile", "remove", ct, prof)
	n1.MustShoal("storage", "volume", "copy", "default/"+v1, "default/"+v1c, "--target", "n1")
	n1.MustShoal("storage", "volume", "move", "default/"+v1, "--target", "n1")
	vs := volumes(t, n1.Daemon)
	if vs[v1].Node != "n1" || vs[v1c].Node != "n1" {
		t.Fatalf("after copy and move: %s on %s, %s on %s; want both on n1", v1, vs[v1].Node, v1c, vs[v1c].Node)
	}
	if hasCustomVolume(ms[1], v1) {
		t.Fatalf("n2 still holds a copy of %s", v1)
	}
	n1.MustShoal("launch", "busybox", c2, "--target", "n1")
	n1.MustShoal("storage", "volume", "attach", "default", v1, c2, "/orig")
	n1.MustShoal("storage", "volume", "attach", "default", v1c, c2, "/copy")
	for _, p := range []string{"/orig/f", "/copy/f"} {
		if got := n1.MustShoal("exec", c2, "--", "cat", p); got != "hello\n" {
			t.Fatalf("%s on n1 = %q", p, got)
		}
	}
	// A container on n2 cannot attach a volume on n1.
	mustFail(t, n1.Daemon, "on n1", "storage", "volume", "attach", "default", v1c, ct, "/x")
}

// hasCustomVolume reports whether a member's pool holds a custom volume.
func hasCustomVolume(m *member, name string) bool { return poolHolds(m, "custom%2F"+name) }

// TestHAHealsWithVolume: an HA container whose workload appends records to
// a custom volume every 100 ms loses its host; the cluster restarts it on
// a member holding its replica with the volume's replica promoted (the
// records whole, in order, no more than were written), the volume recorded
// there; the dead host comes back and keeps its stale copy of the volume
// as the volume's replica.
func TestHAHealsWithVolume(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	victim, survivors := pick(ms, false)
	s := survivors[0]
	s.MustShoal("image", "build", "busybox")
	ct, vol, prof := uniq("hv"), uniq("vol"), uniq("pv")
	s.MustShoal("storage", "volume", "create", "default", vol, "--target", victim.Host.Name)
	s.MustShoal("profile", "create", prof)
	s.MustShoal("profile", "device", "add", prof, "data", "disk", "pool=default", "source="+vol, "path=/data")
	s.MustShoal("launch", "busybox", ct, "-p", "default", "-p", prof, "-c", "ha.enabled=true", "-c", "ha.rpo=2s", "-c", "ha.replicas=2")
	if node := s.List()[ct].Container.Node; node != victim.Host.Name {
		t.Fatalf("%s placed on %s, not with its volume on %s", ct, node, victim.Host.Name)
	}
	s.MustShoal("exec", ct, "--", "sh", "-c",
		`setsid sh -c 'i=0; while :; do i=$((i+1)); echo rec$i >> /data/log; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`)
	s.WaitFor("replicas of "+ct+" on both survivors", 60*time.Second, func() bool {
		return len(containerJSON(t, s, ct).Container.Replicas) == 2
	})
	time.Sleep(3 * time.Second)

	killed := time.Now()
	if err := victim.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	if out, err := victim.Host.Run(context.Background(), "lxc-stop", "-P", filepath.Join(victim.StateDir, "lxc"), "-n", ct, "-k"); err != nil {
		t.Fatalf("kill %s on %s: %v %s", ct, victim.Host.Name, err, out)
	}
	written := countRecords(t, victim, filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "custom%2F"+vol, "log"))

	var owner string
	s.WaitFor(ct+" running on a survivor", 90*time.Second, func() bool {
		c, ok := s.List()[ct]
		owner = c.Container.Node
		return ok && owner != victim.Host.Name && strings.EqualFold(c.State.Status, "running")
	})
	took := time.Since(killed)
	out := s.MustShoal("exec", ct, "--", "cat", "/data/log")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if l != "rec"+strconv.Itoa(i+1) {
			t.Fatalf("the volume's log after the heal, line %d: %q (torn or out of order)", i+1, l)
		}
	}
	if kept := len(lines); kept == 0 || kept > written {
		t.Fatalf("%s on %s has %d records on its volume; %d were written", ct, owner, kept, written)
	} else {
		t.Logf("%s died; %s ran on %s %s later with %d of %d records on its volume (RPO 2s)",
			victim.Host.Name, ct, owner, took.Round(100*time.Millisecond), kept, written)
	}
	if v := volumes(t, s.Daemon)[vol]; v.Node != owner {
		t.Fatalf("after the heal the volume is recorded on %s, want %s", v.Node, owner)
	}

	// Back: its stale copy of the volume becomes the volume's replica.
	if err := victim.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	victim.Start()
	replica := filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "replicas-custom%2F"+vol)
	victim.WaitFor(victim.Host.Name+" to keep its copy of the volume as a replica", 60*time.Second, func() bool {
		_, err := victim.Host.Run(context.Background(), "test", "-d", replica)
		return err == nil
	})
	if _, err := victim.Host.Run(context.Background(), "test", "-e", filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "custom%2F"+vol)); err == nil {
		t.Errorf("%s still holds %s as its own volume after coming back", victim.Host.Name, vol)
	}
	if c := s.List()[ct]; c.Container.Node != owner || !strings.EqualFold(c.State.Status, "running") {
		t.Errorf("after %s came back, %s is %s on %s, want running on %s", victim.Host.Name, ct, c.State.Status, c.Container.Node, owner)
	}
}
