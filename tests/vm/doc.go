// Package vm runs programs, usually Go test binaries, inside the
// disposable Debian 12 host that scripts/vm.sh builds and boots: Debian's
// own kernel under QEMU (TCG, no KVM) with device-mapper, AppArmor and a
// pure cgroup v2 layout, which this machine's kernel lacks. A test that
// needs them calls RunTest: on the host it re-runs itself inside the VM
// and reports the result; inside (InVM) it does the real work.
//
// The package only drives scripts/vm.sh (the image build and the boot
// live there, in one place) and never touches the host's storage or
// network: the VM has no network device and its disks are throw-away
// files.
package vm
