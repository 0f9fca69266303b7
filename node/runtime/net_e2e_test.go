package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// testBridge creates a throwaway bridge deleted on cleanup.
func testBridge(t *testing.T) string {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "shbr" + hex.EncodeToString(b[:])
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("create bridge: %v", err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(br); err != nil {
			t.Errorf("delete bridge %s: %v", name, err)
		}
	})
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestNIC(t *testing.T) {
	rt := newRuntime(t)
	bridge := testBridge(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	hostVeth := "vrt" + hex.EncodeToString(b[:])
	const mac = "02:5a:00:00:00:42"
	spec := testContainer(t, rt, false, true, func(s *Spec) {
		s.NICs = []NIC{{Name: "eth0", Bridge: bridge, HWAddr: mac, HostName: hostVeth}}
	})
	ctx := context.Background()
	if got := mustRun(t, rt, spec.Name, "cat", "/sys/class/net/eth0/address"); got != mac {
		t.Fatalf("eth0 address %q", got)
	}
	veth, err := netlink.LinkByName(hostVeth)
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	br, _ := netlink.LinkByName(bridge)
	if veth.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("veth %s not on bridge %s", hostVeth, bridge)
	}
	// udhcpc (no server here) may flush eth0 once at boot: retry.
	waitFor(t, 10*time.Second, "a static address to show in Addresses", func() bool {
		_, _, _ = run(t, rt, spec.Name, "ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
		ips, err := rt.Addresses(ctx, spec.Name)
		return err == nil && slices.Contains(ips, "192.0.2.10")
	})
	if err := rt.Stop(ctx, spec.Name, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(hostVeth); err == nil || !errors.As(err, new(netlink.LinkNotFoundError)) {
		// The kernel removes the pair with the container's netns.
		waitFor(t, 5*time.Second, "host veth to go", func() bool {
			_, err := netlink.LinkByName(hostVeth)
			return err != nil
		})
	}
}

func TestAPIErrorsAndListing(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if _, err := rt.State(ctx, "rt-nonexistent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State of unknown: %v", err)
	}
	if err := rt.Define(ctx, Spec{Name: "../x", Rootfs: "/tmp", Privileged: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := rt.Define(ctx, Spec{Name: "rt-x", Rootfs: "/tmp"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unprivileged without idmap: %v", err)
	}
	a := testContainer(t, rt, true, false, nil)
	bb := testContainer(t, rt, true, true, nil)
	names, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{a.Name, bb.Name}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("List = %v, want %v", names, want)
	}
	if _, err := rt.Exec(ctx, a.Name, ExecRequest{Cmd: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("exec in stopped: %v", err)
	}
	if err := rt.Start(ctx, bb.Name); !errors.Is(err, ErrRunning) {
		t.Fatalf("double start: %v", err)
	}
	if err := rt.Freeze(ctx, bb.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Exec(ctx, bb.Name, ExecRequest{Cmd: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("exec in frozen: %v", err)
	}
	// Force stop of a frozen container works.
	if err := rt.Stop(ctx, bb.Name, 0); err != nil {
		t.Fatal(err)
	}
	if log, err := rt.ConsoleLog(ctx, bb.Name); err != nil || log == nil {
		t.Fatalf("console log: %q %v", log, err)
	}
	// A clean stop (busybox init handles SIGPWR) within the timeout.
	if err := rt.Start(ctx, bb.Name); err != nil {
		t.Fatal(err)
	}
	mustRun(t, rt, bb.Name, "true")
	t0 := time.Now()
	if err := rt.Stop(ctx, bb.Name, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("clean stop took %v", time.Since(t0))
	if err := rt.Undefine(ctx, a.Name); err != nil {
		t.Fatal(err)
	}
	if names, _ := rt.List(ctx); len(names) != 1 || !strings.HasPrefix(names[0], "rt-") {
		t.Fatalf("List after undefine = %v", names)
	}
}

func TestNesting(t *testing.T) {
	rt := newRuntime(t)
	spec := testContainer(t, rt, false, true, func(s *Spec) { s.Nesting = true })
	if got := mustRun(t, rt, spec.Name, "sh", "-c", "grep -c ' /dev/.lxc/\\(proc\\|sys\\) ' /proc/self/mounts"); got != "2" {
		t.Fatalf("nesting mounts: %q", got)
	}
}
