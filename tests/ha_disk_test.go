package tests

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestHAReplicaNeedsDisk fills one member's pool so that a copy of the
// container's volume no longer fits: the owner never picks it for a
// replica (fewer replicas than asked, rather than a send that fills the
// pool); once space returns, the member gets its replica.
func TestHAReplicaNeedsDisk(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	owner, full, other := ms[0], ms[1], ms[2]
	owner.MustShoal("image", "build", "busybox")

	// Fill full's default pool to within 256 KiB (a few tries: btrfs
	// keeps some of its free space to itself).
	pool := filepath.Join(full.StateDir, "storage-pools", "default")
	filler := filepath.Join(pool, "filler")
	ctx := context.Background()
	avail := func() int64 {
		out, err := full.Host.Run(ctx, "df", "-B1", "--output=avail", pool)
		if err != nil {
			t.Fatalf("df %s on %s: %v %s", pool, full.Host.Name, err, out)
		}
		f := strings.Fields(out)
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			t.Fatalf("df: %q", out)
		}
		return n
	}
	for try := 0; try < 5 && avail() > 1<<20; try++ {
		size := avail() - 256<<10
		if out, err := full.Host.Run(ctx, "fallocate", "-l", strconv.FormatInt(size, 10), filler+strconv.Itoa(try)); err != nil {
			t.Logf("fallocate %d: %v %s", size, err, out)
		}
	}
	t.Cleanup(func() { _, _ = full.Host.Run(ctx, "sh", "-c", "rm -f "+filler+"*") })
	if a := avail(); a > 1<<20 {
		t.Fatalf("could not fill %s's pool: %d bytes still free", full.Host.Name, a)
	}
	t.Logf("%s's pool has %d bytes free", full.Host.Name, avail())
	// The pool's usage, as the member reports it, counts the filler.
	info := full.MustShoal("storage", "info", "default")
	var used int64
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(strings.ReplaceAll(k, "_", ""), "usedbytes") {
			used, _ = strconv.ParseInt(strings.Trim(strings.TrimSpace(v), `"'`), 10, 64)
		}
	}
	if used < 1<<30 {
		t.Errorf("storage info default on %s: used %d bytes after filling the pool\n%s", full.Host.Name, used, info)
	}
	// Members gossip their free space every 5 s: let the owner hear it.
	time.Sleep(6 * time.Second)

	owner.MustShoal("launch", "busybox", "db1", "--target", owner.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s", "-c", "ha.replicas=2")
	// A few MB of data, more than the filled pool has.
	owner.MustShoal("exec", "db1", "--", "sh", "-c", "dd if=/dev/urandom of=/root/data bs=1M count=4 2>/dev/null")
	replicas := func() []string {
		var out []string
		for _, r := range containerJSON(t, owner, "db1").Container.Replicas {
			out = append(out, r.Member)
		}
		slices.Sort(out)
		return out
	}
	owner.WaitFor("a replica of db1 on "+other.Host.Name, 60*time.Second, func() bool {
		return slices.Contains(replicas(), other.Host.Name)
	})
	// Several rounds (RPO 2 s, gossip every 5 s): none goes to the full pool.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		if r := replicas(); slices.Contains(r, full.Host.Name) {
			t.Fatalf("replicas %v: a replica was placed on %s, whose pool has no room", r, full.Host.Name)
		}
		time.Sleep(time.Second)
	}
	// Nor was one tried there (a send that would fill the pool and fail).
	for _, line := range strings.Split(owner.Log(), "\n") {
		if strings.Contains(line, "replication failed") && strings.Contains(line, "member="+full.Host.Name) {
			t.Fatalf("the owner tried to replicate to the full pool of %s: %s", full.Host.Name, line)
		}
	}
	if out, err := full.Host.Run(ctx, "sh", "-c", "rm -f "+filler+"*"); err != nil {
		t.Fatalf("free the pool: %v %s", err, out)
	}
	owner.WaitFor(fmt.Sprintf("a replica of db1 on %s once its pool has room", full.Host.Name), 60*time.Second, func() bool {
		return slices.Contains(replicas(), full.Host.Name)
	})
	t.Logf("replicas after the pool was freed: %v", replicas())
	owner.MustShoal("delete", "-f", "db1")
}
