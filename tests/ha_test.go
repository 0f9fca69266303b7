package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestHAReplication: an HA container on n1 is replicated to another
// member of three every ha.rpo. A workload appends a numbered record
// every 100 ms; the replica's copy of the file (read on the replica
// member, from its replica volume) is whole — records 1..N in order, no
// torn line — and advances round after round; later rounds are increments
// far smaller than the volume; `shoal info` shows the replica and its lag;
// bad ha.* values and HA on a dir pool are refused naming the key; when
// the replica's member dies a new replica is made on the third member;
// after the container is deleted, the old replica member deletes its copy.
func TestHAReplication(t *testing.T) {
	requireLiveMove(t)
	_, ms := harness.StartCluster(t, binDir, 3)
	m1 := ms[0]
	m1.MustShoal("image", "build", "busybox")
	m1.MustShoal("storage", "create", "plain", "dir")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"launch", "busybox", "bad1", "-c", "ha.enabled=true", "-c", "ha.rpo=100ms"}, "ha.rpo"},
		{[]string{"launch", "busybox", "bad1", "-c", "ha.enabled=true", "-c", "ha.replicas=9"}, "ha.replicas"},
		{[]string{"launch", "busybox", "bad1", "-c", "ha.enabled=true", "-s", "plain"}, "ha.enabled: pool plain uses the dir driver"},
	} {
		if _, errOut, code := m1.Shoal(tc.args...); code == 0 || !strings.Contains(errOut, tc.says) {
			t.Errorf("shoal %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}

	m1.MustShoal("launch", "busybox", "db1", "--target", "n1", "-c", "ha.enabled=true", "-c", "ha.rpo=2s")
	m1.MustShoal("exec", "db1", "--", "sh", "-c",
		`setsid sh -c 'i=0; while :; do i=$((i+1)); echo rec$i >> /root/log; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`)

	var member string
	m1.WaitFor("a replica of db1 in shoal info", 60*time.Second, func() bool {
		out, _, _ := m1.Shoal("info", "db1")
		mt := regexp.MustCompile(`HA: replicas (n\d) \(lag `).FindStringSubmatch(out)
		if mt != nil {
			member = mt[1]
		}
		return mt != nil
	})
	if member == "n1" {
		t.Fatalf("db1's replica is on its owner n1")
	}
	var rm *harness.Member
	for _, m := range ms {
		if m.Host.Name == member {
			rm = m
		}
	}
	t.Logf("db1 (on n1) is replicated to %s", member)
	replicaLog := filepath.Join(rm.StateDir, "storage-pools", "default", "volumes", "replicas%2Fdb1", "root", "log")
	records := func() int {
		t.Helper()
		out, err := rm.Host.Run(context.Background(), "cat", replicaLog)
		if err != nil {
			return 0
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for i, l := range lines {
			if l != fmt.Sprintf("rec%d", i+1) {
				t.Fatalf("the replica's log line %d is %q, want rec%d (torn or out of order)", i+1, l, i+1)
			}
		}
		return len(lines)
	}
	var first int
	rm.WaitFor("records in the replica's log", 30*time.Second, func() bool { first = records(); return first > 0 })
	rm.WaitFor("the replica to advance", 30*time.Second, func() bool { return records() > first+10 })
	t.Logf("the replica on %s went from %d to %d records", member, first, records())

	// Later rounds send increments: far less than the volume.
	var later int64
	var disk int64
	m1.WaitFor("an incremental round", 30*time.Second, func() bool {
		ct := containerJSON(t, m1, "db1")
		disk = ct.State.DiskBytes
		for _, r := range ct.Container.Replicas {
			later = r.LastBytes
		}
		return later > 0 && disk > 0 && later < disk/4
	})
	t.Logf("an incremental round sent %d bytes; the volume holds %d", later, disk)
	if info := m1.MustShoal("info", "db1"); !strings.Contains(info, "RPO 2s") {
		t.Errorf("info db1 has no RPO:\n%s", info)
	}

	// A live move carries the snapshot the replica is based on: the new
	// owner's first round is an increment too, not a full copy.
	third := "n2"
	if member == "n2" {
		third = "n3"
	}
	liveMove(t, m1, "db1", third)
	var after int64
	m1.WaitFor("a round from the new owner "+third, 30*time.Second, func() bool {
		ct := containerJSON(t, m1, "db1")
		for _, r := range ct.Container.Replicas {
			if r.From == third && r.Member == member {
				after = r.LastBytes
				return true
			}
		}
		return false
	})
	if after == 0 || after >= disk/4 {
		t.Errorf("after the move to %s, the replica round sent %d bytes of a %d-byte volume: a full copy, not an increment", third, after, disk)
	}
	t.Logf("after a live move to %s, its first round to %s sent %d bytes", third, member, after)

	// The replica's member dies: a new replica is made on the remaining
	// member (n1, the old owner), and info shows it.
	killed := time.Now()
	if err := rm.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	rm.Kill()
	m1.WaitFor("a new replica of db1 on n1", 90*time.Second, func() bool {
		for _, r := range containerJSON(t, m1, "db1").Container.Replicas {
			if r.Member == "n1" {
				return true
			}
		}
		return false
	})
	t.Logf("%s died; db1 replicated to n1 %s later", member, time.Since(killed).Round(100*time.Millisecond))
	if info := m1.MustShoal("info", "db1"); !strings.Contains(info, "HA: replicas n1 (lag ") {
		t.Errorf("info db1 does not show the new replica on n1:\n%s", info)
	}
	if err := rm.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	rm.Start()

	m1.MustShoal("delete", "db1", "--force")
	rm.WaitFor("the old replica member to delete its copy", 60*time.Second, func() bool {
		_, err := rm.Host.Run(context.Background(), "test", "-e", filepath.Dir(filepath.Dir(replicaLog)))
		return err != nil
	})
}

// containerRecord is the part of `shoal info --format json` the HA tests
// read.
type containerRecord struct {
	Container struct {
		Node     string
		Replicas []struct {
			Member, Snapshot, From string
			LastBytes              int64 `json:"last_bytes,string"`
			TakenUnixNano          int64 `json:"taken_unix_nano,string"`
		}
	}
	State struct {
		DiskBytes int64 `json:"disk_bytes,string"`
	}
}

func containerJSON(t *testing.T, m *harness.Member, name string) containerRecord {
	t.Helper()
	out, errOut, code := m.Shoal("info", name, "--format", "json")
	var ct containerRecord
	if code != 0 {
		t.Logf("info %s: %s", name, errOut)
		return ct
	}
	if err := json.Unmarshal([]byte(out), &ct); err != nil {
		t.Fatalf("info %s --format json: %v\n%s", name, err, out)
	}
	return ct
}
