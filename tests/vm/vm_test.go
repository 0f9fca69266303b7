package vm_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/vm"
)

// guestExit is the exit code TestGuest uses inside the VM once its checks
// pass, so that the host sees both the output and the code come back.
const guestExit = 3

// TestGuest is the program the smoke test runs inside the VM: it checks
// the guest is the stock host the lane promises, then exits guestExit.
// Outside the VM it does nothing.
func TestGuest(t *testing.T) {
	if !vm.InVM() {
		t.Skip("runs inside the VM only (TestSmoke starts it there)")
	}
	for _, want := range []struct{ file, has string }{
		{"/sys/kernel/security/lsm", "apparmor"},
		{"/sys/fs/cgroup/cgroup.controllers", "memory"},
		{"/sys/fs/cgroup/cgroup.controllers", "cpu"},
		{"/proc/self/mountinfo", " /sys/fs/cgroup "},
	} {
		b, err := os.ReadFile(want.file)
		if err != nil || !strings.Contains(string(b), want.has) {
			t.Errorf("%s: %q does not contain %q (%v)", want.file, b, want.has, err)
		}
	}
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		t.Errorf("no device-mapper: %v", err)
	}
	if fi, err := os.Stat(vm.Disk()); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Errorf("SHOAL_VM_DISK=%q is not a device: %v", vm.Disk(), err)
	}
	if os.Getenv("SHOAL_VM_SMOKE") != "marker" {
		t.Errorf("the environment did not come through: SHOAL_VM_SMOKE=%q", os.Getenv("SHOAL_VM_SMOKE"))
	}
	if t.Failed() {
		return
	}
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	os.Stdout.WriteString("guest-ok kernel " + strings.TrimSpace(string(b)) + "\n")
	os.Exit(guestExit)
}

// TestSmoke boots the VM once, runs TestGuest inside and checks that its
// output, its exit code and the environment travel as they should.
func TestSmoke(t *testing.T) {
	if vm.InVM() {
		t.Skip("the host side")
	}
	vm.Require(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	res, err := vm.RunWith(context.Background(), t, vm.Options{Env: []string{"SHOAL_VM_SMOKE=marker"}, Timeout: 5 * time.Minute},
		self, "-test.run=^TestGuest$", "-test.v")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != guestExit || !bytes.Contains(res.Output, []byte("guest-ok kernel ")) {
		t.Fatalf("exit %d, output %q: want exit %d and guest-ok", res.ExitCode, res.Output, guestExit)
	}
	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if bytes.Contains(res.Output, []byte("guest-ok kernel "+strings.TrimSpace(string(host))+"\n")) {
		t.Fatalf("the guest runs the host's kernel %s", host)
	}
	t.Logf("boot, run and power-off took %v", res.Duration.Round(time.Millisecond))
}

// TestTimeout checks the hard timeout: a program that never ends is
// killed with its VM, and no qemu of the run is left.
func TestTimeout(t *testing.T) {
	if vm.InVM() {
		t.Skip("the host side")
	}
	vm.Require(t)
	// The run's files (named on qemu's command line) go under our own
	// temp dir, so that other VMs running meanwhile are not counted.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	start := time.Now()
	_, err := vm.RunWith(context.Background(), t, vm.Options{Timeout: 12 * time.Second}, "/bin/sleep", "600")
	if !errors.Is(err, vm.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Fatalf("the timeout took %v to act", d)
	}
	if left := qemus(t, tmp); left != "" {
		t.Fatalf("qemu still running after the timeout: %s", left)
	}
}

// qemus lists the running qemu processes whose command lines name a
// file under dir.
func qemus(t *testing.T, dir string) string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cl := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.HasPrefix(cl, "qemu-system") && strings.Contains(cl, dir+"/") {
			out = append(out, e.Name()+": "+cl)
		}
	}
	return strings.Join(out, "\n")
}
