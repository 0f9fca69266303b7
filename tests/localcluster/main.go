// Command localcluster starts a Shoal cluster of simulated hosts on this
// machine — each node a real shoald in its own network and mount namespace
// (tests/netns), joined with tokens — builds the busybox image, launches
// containers across the nodes and shows where they run, moves one live,
// and kills the host of an HA container to show it restart elsewhere with
// its data. With --keep it
// stays up until interrupted and prints how to reach each node; otherwise
// it tears everything down. Run as root after scripts/install.sh:
//
//	go run ./tests/localcluster [--nodes 3] [--keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/netns"
)

func main() {
	nodes := flag.Int("nodes", 3, "cluster members")
	keep := flag.Bool("keep", false, "stay up until interrupted")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "localcluster needs:", strings.Join(missing, ", "), "(run scripts/install.sh)")
		os.Exit(1)
	}
	step("building shoal and shoald")
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	step(fmt.Sprintf("starting %d nodes, each in its own network namespace, joined with one-time tokens", *nodes))
	_, ms := harness.StartCluster(t, bin, *nodes)
	first := ms[0]
	step("shoal cluster list")
	fmt.Print(first.MustShoal("cluster", "list"))
	step("shoal image build busybox   (on n1; the other nodes pull it from a peer when they need it)")
	fmt.Print(first.MustShoal("image", "build", "busybox"))
	for i := 1; i <= *nodes; i++ {
		name := fmt.Sprintf("c%d", i)
		step(fmt.Sprintf("shoal launch busybox %s -c scheduler.group=demo -c scheduler.group.max_per_node=1", name))
		first.MustShoal("launch", "busybox", name, "-c", "scheduler.group=demo", "-c", "scheduler.group.max_per_node=1")
	}
	for i := 1; i <= *nodes; i++ {
		first.WaitAddress(fmt.Sprintf("c%d", i), 60e9)
	}
	step("shoal list   (from n1: one view of all nodes)")
	fmt.Print(first.MustShoal("list"))
	last := ms[len(ms)-1]
	for i := 1; i <= *nodes; i++ {
		name := fmt.Sprintf("c%d", i)
		step(fmt.Sprintf("shoal exec %s -- hostname   (from %s; forwarded to the owner)", name, last.Host.Name))
		fmt.Print(last.MustShoal("exec", name, "--", "hostname"))
	}
	// Containers on different members talk over the cluster's default
	// network, an overlay: by name, through every member's own DNS.
	step("shoal network list   (the cluster's default network is an overlay: one segment across the members)")
	fmt.Print(first.MustShoal("network", "list"))
	for i := 1; i <= *nodes; i++ {
		from, to := fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i%*nodes+1)
		if from == to {
			break
		}
		step(fmt.Sprintf("shoal exec %s -- ping -c1 %s.shoal   (%s on %s, %s on %s)", from, to,
			from, first.List()[from].Container.Node, to, first.List()[to].Container.Node))
		fmt.Print(first.MustShoal("exec", from, "--", "ping", "-c", "1", "-W", "5", to+".shoal"))
	}
	// A live move: a shell in live1 keeps a counter in memory and writes
	// it out every 100 ms; it goes on, uninterrupted, on the next node.
	from, to := ms[0].Host.Name, ms[1].Host.Name
	step("shoal launch busybox live1 --target " + from)
	first.MustShoal("launch", "busybox", "live1", "--target", from)
	step("shoal exec live1 -- setsid sh -c '...a counter in memory, written to /root/count every 100 ms...' &")
	first.MustShoal("exec", "live1", "--", "setsid", "sh", "-c",
		"(i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")
	netns.WaitFor(t, "the counter", 30e9, func() bool {
		out, _, code := first.Shoal("file", "pull", "live1/root/count", "-")
		return code == 0 && atoi(out) >= 10
	})
	before, _, _ := first.Shoal("file", "pull", "live1/root/count", "-")
	step(fmt.Sprintf("shoal move live1 --target %s --live   (counter at %s)", to, strings.TrimSpace(before)))
	fmt.Print(first.MustShoal("move", "live1", "--target", to, "--live"))
	netns.WaitFor(t, "the counter on the new node", 30e9, func() bool {
		out, _, _ := first.Shoal("file", "pull", "live1/root/count", "-")
		return atoi(out) > atoi(before)+5
	})
	after, _, _ := first.Shoal("file", "pull", "live1/root/count", "-")
	fmt.Printf("live1 now runs on %s; its counter went on from %s to %s (the same process: no restart)\n",
		first.List()["live1"].Container.Node, strings.TrimSpace(before), strings.TrimSpace(after))

	// An HA container survives its host's death: replicated every 2 s to
	// another node, restarted there when its host is killed outright.
	victim := ms[len(ms)-1]
	step("shoal launch busybox ha1 --target " + victim.Host.Name + " -c ha.enabled=true -c ha.rpo=2s")
	first.MustShoal("launch", "busybox", "ha1", "--target", victim.Host.Name, "-c", "ha.enabled=true", "-c", "ha.rpo=2s")
	first.MustShoal("exec", "ha1", "--", "setsid", "sh", "-c",
		"(i=0; while :; do i=$((i+1)); echo rec$i >> /root/log; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")
	netns.WaitFor(t, "a replica of ha1", 60e9, func() bool {
		out, _, _ := first.Shoal("info", "ha1")
		return strings.Contains(out, "HA: replicas n")
	})
	time.Sleep(3 * time.Second)
	step("shoal info ha1")
	fmt.Print(first.MustShoal("info", "ha1"))
	step(fmt.Sprintf("killing %s: its link cut, its shoald SIGKILLed, ha1's processes killed", victim.Host.Name))
	killed := time.Now()
	if err := victim.Host.Cut(); err != nil {
		t.Fatalf("%v", err)
	}
	victim.Kill()
	lxcPath := filepath.Join(victim.StateDir, "lxc")
	if out, err := victim.Host.Run(context.Background(), "lxc-stop", "-P", lxcPath, "-n", "ha1", "-k"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	written, _ := victim.Host.Run(context.Background(), "sh", "-c", "wc -l < "+filepath.Join(victim.StateDir, "storage-pools", "default", "volumes", "containers%2Fha1", "root", "log"))
	netns.WaitFor(t, "ha1 running on another node", 90e9, func() bool {
		c, ok := first.List()["ha1"]
		return ok && c.Container.Node != victim.Host.Name && strings.EqualFold(c.State.Status, "running")
	})
	took := time.Since(killed)
	kept, _, _ := first.Shoal("exec", "ha1", "--", "sh", "-c", "wc -l < /root/log")
	step("shoal list")
	fmt.Print(first.MustShoal("list"))
	fmt.Printf("ha1 runs on %s %s after %s died, with %s of the %s records written (one every 100 ms)\n",
		first.List()["ha1"].Container.Node, took.Round(100*time.Millisecond), victim.Host.Name, strings.TrimSpace(kept), strings.TrimSpace(written))
	step(victim.Host.Name + " comes back: it drops its stale copy of ha1")
	if err := victim.Host.Heal(); err != nil {
		t.Fatalf("%v", err)
	}
	victim.Start()
	netns.WaitFor(t, victim.Host.Name+" back and answering", 60e9, func() bool {
		_, _, code := first.Shoal("info", fmt.Sprintf("c%d", len(ms)))
		return code == 0 && first.Members()[victim.Host.Name].Status == "online"
	})
	if !*keep {
		step("tearing down")
		for i := 1; i <= *nodes; i++ {
			first.MustShoal("delete", "-f", fmt.Sprintf("c%d", i))
		}
		first.MustShoal("delete", "-f", "live1")
		first.MustShoal("delete", "-f", "ha1")
		return
	}
	step("the cluster is up; reach a node with:")
	for _, m := range ms {
		fmt.Printf("  SHOAL_SOCKET=%s shoal cluster list\n", m.Socket)
	}
	fmt.Println("Ctrl-C tears it down.")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

func step(s string) { fmt.Printf("==> %s\n", s) }

// atoi parses a counter (-1 when it is not a number).
func atoi(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return -1
	}
	return n
}
