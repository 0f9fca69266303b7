package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

type member = harness.Member

func members(t *testing.T, m *member) map[string]harness.MemberRow {
	t.Helper()
	return m.Members()
}

func startMember(t *testing.T, h *netns.Host, token string) *member {
	t.Helper()
	return harness.StartMember(t, binDir, h, token)
}

func roles(rows map[string]harness.MemberRow) string {
	var parts []string
	for _, n := range []string{"n1", "n2", "n3"} {
		parts = append(parts, n+"="+rows[n].Role)
	}
	return strings.Join(parts, " ")
}

// TestClusterFormsAndFailsOver forms a three-node cluster with join tokens,
// each node in its own network namespace, then loses the leader, partitions
// a minority and heals it: a new leader takes writes, the minority refuses
// them with a clear error, and healed or restarted nodes catch up.
// requireCluster fails the test under CI=true, and skips it elsewhere,
// when the host lacks what simulated cluster hosts need, naming it.
func requireCluster(t *testing.T) {
	t.Helper()
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		msg := "cluster tests need: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

func TestClusterFormsAndFailsOver(t *testing.T) {
	requireCluster(t)
	u, err := netns.NewUnderlay(t)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]*netns.Host, 4)
	for i := range hosts {
		if hosts[i], err = u.AddHost(fmt.Sprintf("n%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	m1 := startMember(t, hosts[0], "")
	ms := []*member{m1}
	for _, h := range hosts[1:3] {
		tok := strings.TrimSpace(m1.MustShoal("cluster", "add", h.Name))
		ms = append(ms, startMember(t, h, tok))
		// A token is good for one join only.
		if h.Name == "n2" {
			dir := t.TempDir()
			tokFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, err := h.Command(ctx, binDir+"/shoald", "--state-dir", dir, "--name", "n2",
				"--listen", net.JoinHostPort(h.IP.String(), "9443"), "--join", "@"+tokFile).CombinedOutput()
			cancel()
			if err == nil || !strings.Contains(string(out), "already used") {
				t.Fatalf("a reused join token: err=%v\n%s", err, out)
			}
		}
	}
	netns.WaitFor(t, "three voters", 60*time.Second, func() bool {
		r := members(t, m1)
		voters := 0
		for _, row := range r {
			if row.Role == "leader" || row.Role == "voter" {
				voters++
			}
		}
		return voters == 3
	})
	t.Logf("formed: %s", roles(members(t, m1)))
	table := m1.MustShoal("cluster", "list")
	for _, want := range []string{"NAME", "ROLE", "STATUS", "n1", "n2", "n3", "leader", "ONLINE"} {
		if !strings.Contains(table, want) {
			t.Errorf("cluster list lacks %q:\n%s", want, table)
		}
	}
	// A write on a follower is forwarded to the leader.
	follower := ms[1]
	follower.MustShoal("image", "build", "busybox")
	netns.WaitFor(t, "the image on every member", 10*time.Second, func() bool {
		for _, m := range ms {
			if out, _, _ := m.Shoal("image", "list"); !strings.Contains(out, "busybox") {
				return false
			}
		}
		return true
	})

	// Containers land where --target or the scheduler says; n3 does not hold
	// the image and pulls it from a peer; every call works from every node.
	ms[0].MustShoal("launch", "busybox", "web1", "--target", "n3")
	if got := ms[1].List()["web1"]; got.Container.Node != "n3" || got.State.Pid == "" {
		t.Fatalf("web1 seen from n2: %+v, want it on n3 with its live state", got)
	}
	if got := ms[0].MustShoal("exec", "web1", "--", "hostname"); got != "web1\n" {
		t.Fatalf("exec forwarded to the owner: %q", got)
	}
	if out, _, code := ms[1].Shoal("exec", "web1", "--", "sh", "-c", "exit 5"); code != 5 {
		t.Fatalf("forwarded exec exit code = %d (%q), want 5", code, out)
	}
	src := t.TempDir() + "/f"
	os.WriteFile(src, []byte("across nodes\n"), 0o644)
	ms[1].MustShoal("file", "push", src, "web1/root/f")
	if got := ms[0].MustShoal("file", "pull", "web1/root/f", "-"); got != "across nodes\n" {
		t.Fatalf("file through a non-owner: %q", got)
	}
	ms[0].MustShoal("snapshot", "create", "web1", "s1")
	ms[1].MustShoal("stop", "-f", "web1")
	if st := ms[0].MustShoal("info", "web1"); !strings.Contains(st, "Status: STOPPED") || !strings.Contains(st, "Node: n3") {
		t.Fatalf("info from a non-owner:\n%s", st)
	}
	// A hard spread group puts its members on distinct nodes; a fourth does
	// not fit and the error says why for every node.
	used := map[string]bool{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("g%d", i)
		ms[i%3].MustShoal("launch", "busybox", name, "-c", "scheduler.group=web", "-c", "scheduler.group.max_per_node=1", "-c", "limits.memory=64MiB")
		used[ms[0].List()[name].Container.Node] = true
	}
	if len(used) != 3 {
		t.Fatalf("group members on %v, want three distinct nodes", used)
	}
	_, errOut, code := ms[0].Shoal("launch", "busybox", "g4", "-c", "scheduler.group=web", "-c", "scheduler.group.max_per_node=1")
	if code == 0 || !strings.Contains(errOut, "n1: ") || !strings.Contains(errOut, "n2: ") || !strings.Contains(errOut, "group web") {
		t.Fatalf("a fourth member of a one-per-node group: %d %q", code, errOut)
	}
	// A copy to another member carries the volume and its snapshots.
	ms[0].MustShoal("copy", "web1", "web1-copy", "--target", "n2")
	if got := ms[2].List()["web1-copy"]; got.Container.Node != "n2" || got.State.Status != "Stopped" {
		t.Fatalf("cross-node copy: %+v", got)
	}
	ms[2].MustShoal("start", "web1-copy")
	if got := ms[2].MustShoal("exec", "web1-copy", "--", "cat", "/root/f"); got != "across nodes\n" {
		t.Fatalf("file in the cross-node copy: %q", got)
	}
	if ls := ms[1].MustShoal("snapshot", "list", "web1-copy"); !strings.Contains(ls, "s1") {
		t.Fatalf("snapshots of the cross-node copy: %s", ls)
	}
	if got := ms[0].MustShoal("exec", "web1-copy", "--", "hostname"); got != "web1-copy\n" {
		t.Fatalf("hostname of the copy: %q", got)
	}
	ms[0].MustShoal("delete", "-f", "web1-copy")

	// A cold move carries the volume and its snapshots; the source keeps no
	// copy.
	ms[0].MustShoal("start", "web1")
	out := ms[1].MustShoal("move", "web1", "--target", "n1")
	if got := ms[2].List()["web1"]; got.Container.Node != "n1" || got.State.Status != "Running" {
		t.Fatalf("after move: %+v (%s)", got, out)
	}
	if got := ms[2].MustShoal("exec", "web1", "--", "cat", "/root/f"); got != "across nodes\n" {
		t.Fatalf("file after the move: %q", got)
	}
	if ls := ms[0].MustShoal("snapshot", "list", "web1"); !strings.Contains(ls, "s1") {
		t.Fatalf("snapshot lost in the move: %s", ls)
	}
	ms[2].MustShoal("exec", "web1", "--", "rm", "/root/f")
	ms[2].MustShoal("snapshot", "restore", "web1", "s1")
	if got := ms[2].MustShoal("exec", "web1", "--", "cat", "/root/f"); got != "across nodes\n" {
		t.Fatalf("restoring a moved snapshot: %q", got)
	}

	// Evacuating a member moves its running containers elsewhere and keeps
	// new ones off it; restore brings it back.
	ms[0].MustShoal("move", "web1", "--target", "n3")
	ms[0].MustShoal("cluster", "evacuate", "n3")
	if r := members(t, ms[1])["n3"]; r.Status != "evacuated" {
		t.Fatalf("n3 after evacuate: %+v", r)
	}
	if got := ms[1].List()["web1"]; got.Container.Node == "n3" || got.State.Status != "Running" {
		t.Fatalf("web1 after evacuating n3: %+v", got)
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("spread%d", i)
		ms[0].MustShoal("launch", "busybox", name)
		if node := ms[0].List()[name].Container.Node; node == "n3" {
			t.Fatalf("%s was placed on the evacuated member", name)
		}
		ms[0].MustShoal("delete", "-f", name)
	}
	ms[1].MustShoal("cluster", "restore", "n3")
	if members(t, ms[0])["n3"].Status != "online" {
		t.Fatalf("after restore: n3 %+v", members(t, ms[0])["n3"])
	}
	// What the evacuation moved away comes back.
	if got := ms[1].List()["web1"]; got.Container.Node != "n3" || got.State.Status != "Running" {
		t.Fatalf("web1 after restoring n3: %+v, want it back on n3", got)
	}
	for _, name := range []string{"web1", "g1", "g2", "g3"} {
		ms[2].MustShoal("delete", "-f", name)
	}
	if l := ms[0].List(); len(l) != 0 {
		t.Fatalf("containers left: %v", l)
	}

	// cluster.scheduler switches placement cluster-wide: binpack fills one
	// node before the next; bad values are refused with the allowed ones.
	if _, errOut, code := ms[1].Shoal("cluster", "config", "set", "cluster.scheduler=random"); code == 0 || !strings.Contains(errOut, "spread, binpack") {
		t.Fatalf("bad cluster.scheduler: %d %q", code, errOut)
	}
	ms[1].MustShoal("cluster", "config", "set", "cluster.scheduler=binpack")
	ms[0].MustShoal("launch", "busybox", "bp1")
	ms[2].MustShoal("launch", "busybox", "bp2")
	if a, b := ms[0].List()["bp1"].Container.Node, ms[0].List()["bp2"].Container.Node; a != b {
		t.Fatalf("binpack put bp1 on %s and bp2 on %s", a, b)
	}
	ms[0].MustShoal("cluster", "config", "unset", "cluster.scheduler")
	if show := ms[2].MustShoal("cluster", "config", "show"); strings.Contains(show, "binpack") {
		t.Fatalf("cluster config after unset: %q", show)
	}
	// A write acknowledged through one member shows at once on every other
	// (followers catch up with the leader before they answer a read).
	for i, v := range []string{"binpack", "spread", "binpack", "spread", "binpack", "spread"} {
		ms[i%3].MustShoal("cluster", "config", "set", "cluster.scheduler="+v)
		if show := ms[(i+1)%3].MustShoal("cluster", "config", "show"); !strings.Contains(show, "cluster.scheduler: "+v) {
			t.Fatalf("set cluster.scheduler=%s through %s; %s shows %q", v, ms[i%3].Opts.Name, ms[(i+1)%3].Opts.Name, show)
		}
	}
	ms[0].MustShoal("cluster", "config", "unset", "cluster.scheduler")
	ms[0].MustShoal("delete", "-f", "bp1", "bp2")

	// A remote client trusts the cluster by a client token, then works with
	// its certificate; the token is good once.
	clientTok := strings.TrimSpace(m1.MustShoal("cluster", "add", "laptop", "--role", "client"))
	home := t.TempDir()
	remoteCLI := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := hosts[1].Command(ctx, binDir+"/shoal", args...)
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := remoteCLI("remote", "add", "prod", "https://"+m1.Listen(), "--token", clientTok); err != nil {
		t.Fatalf("remote add: %v\n%s", err, out)
	}
	if out, err := remoteCLI("--remote", "prod", "cluster", "list"); err != nil || !strings.Contains(out, "n3") {
		t.Fatalf("cluster list over a remote: %v\n%s", err, out)
	}
	if out, err := remoteCLI("remote", "switch", "prod"); err != nil {
		t.Fatalf("remote switch: %v\n%s", err, out)
	}
	if out, err := remoteCLI("image", "list"); err != nil || !strings.Contains(out, "busybox") {
		t.Fatalf("image list on the default remote: %v\n%s", err, out)
	}
	if out, err := remoteCLI("remote", "add", "again", "https://"+m1.Listen(), "--token", clientTok); err == nil || !strings.Contains(out, "already used") {
		t.Fatalf("reused client token: %v\n%s", err, out)
	}

	// An untrusted client (no certificate) is refused with Unauthenticated.
	conn, err := grpc.NewClient(m1.Listen(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return hosts[1].Dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = shoalv1.NewClusterServiceClient(conn).ListMembers(ctx, &shoalv1.ListMembersRequest{})
	cancel()
	conn.Close()
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("client without a certificate: %v, want Unauthenticated", err)
	}

	// Kill the leader: the others elect a new one and take writes again.
	leaderName := ""
	for n, r := range members(t, m1) {
		if r.Role == "leader" {
			leaderName = n
		}
	}
	var leader *member
	var rest []*member
	for _, m := range ms {
		if m.Host.Name == leaderName {
			leader = m
		} else {
			rest = append(rest, m)
		}
	}
	killed := time.Now()
	leader.Kill()
	netns.WaitFor(t, "a new leader", 30*time.Second, func() bool {
		r := members(t, rest[0])
		return r[rest[0].Host.Name].Role == "leader" || r[rest[1].Host.Name].Role == "leader"
	})
	netns.WaitFor(t, "a write after failover", 30*time.Second, func() bool {
		_, _, code := rest[0].Shoal("image", "alias", "create", "after-failover", "busybox")
		return code == 0
	})
	t.Logf("write accepted %s after the leader was killed", time.Since(killed))
	netns.WaitFor(t, "the killed leader marked offline", 30*time.Second, func() bool {
		return members(t, rest[0])[leaderName].Status == "offline"
	})
	t.Logf("killed leader marked offline %s after the kill (gossip detection + 5s grace)", time.Since(killed))
	leader.Start()
	netns.WaitFor(t, "the restarted node back online", 30*time.Second, func() bool {
		return members(t, rest[0])[leaderName].Status == "online"
	})
	netns.WaitFor(t, "the old leader to catch up", 30*time.Second, func() bool {
		out, _, _ := leader.Shoal("image", "list")
		return strings.Contains(out, "after-failover")
	})

	// Partition one node away: it refuses writes with a clear error, the
	// majority goes on, and after healing it catches up.
	minority := ms[2]
	if err := minority.Host.Cut(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = minority.Shoal("image", "alias", "create", "from-minority", "busybox")
	if code == 0 || !strings.HasPrefix(errOut, "Error: ") || !strings.Contains(errOut, "leader") {
		t.Fatalf("write on a cut-off node: code=%d %q (want a one-line error about the leader)", code, errOut)
	}
	t.Logf("minority refused the write: %s", strings.TrimSpace(errOut))
	majority := ms[0]
	netns.WaitFor(t, "a write on the majority", 30*time.Second, func() bool {
		_, _, code := majority.Shoal("image", "alias", "create", "during-partition", "busybox")
		return code == 0
	})
	if err := minority.Host.Heal(); err != nil {
		t.Fatal(err)
	}
	netns.WaitFor(t, "the healed node to catch up", 30*time.Second, func() bool {
		out, _, _ := minority.Shoal("image", "list")
		return strings.Contains(out, "during-partition")
	})

	// A fourth node joins as a standby (three voters at most); removing a
	// voter promotes it.
	tok := strings.TrimSpace(m1.MustShoal("cluster", "add", "n4"))
	m4 := startMember(t, hosts[3], tok)
	netns.WaitFor(t, "n4 as a standby", 30*time.Second, func() bool { return members(t, m1)["n4"].Role == "standby" })
	majority.MustShoal("cluster", "remove", "n3")
	netns.WaitFor(t, "the standby promoted", 30*time.Second, func() bool {
		r := members(t, m4)
		_, still := r["n3"]
		return r["n4"].Role == "voter" || r["n4"].Role == "leader" && !still
	})
	t.Logf("after removing n3: %s n4=%s", roles(members(t, m1)), members(t, m1)["n4"].Role)

	// A clean shutdown leaves gossip: the node is recorded as stopped, and
	// stays so past the failure grace period (never reported failed).
	m4.Stop()
	netns.WaitFor(t, "n4 recorded as stopped", 30*time.Second, func() bool { return members(t, m1)["n4"].Status == "stopped" })
	deadline := time.Now().Add(7 * time.Second)
	for time.Now().Before(deadline) {
		if st := members(t, m1)["n4"].Status; st != "stopped" {
			t.Fatalf("cleanly stopped n4 became %q", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
