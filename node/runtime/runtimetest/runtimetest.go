package runtimetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BusyboxPath is the static busybox binary copied into test images.
const BusyboxPath = "/bin/busybox"

// Require fails (CI=true) or skips the test unless it runs as root with
// LXC, liblxc's shared config and a static busybox available.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (euid 0)")
	}
	for _, bin := range []string{"lxc-start", "lxc-attach"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" (Debian package lxc)")
		}
	}
	for _, f := range []string{"/usr/share/lxc/config/common.conf", "/usr/share/lxc/config/common.seccomp", BusyboxPath} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		Missing(t, strings.Join(missing, ", "))
	}
}

// Missing reports a missing prerequisite: t.Fatal under CI=true, else t.Skip.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing prerequisite: %s", what)
	}
	t.Skipf("missing prerequisite: %s", what)
}

const inittab = `::sysinit:/etc/init.d/rcS
::respawn:/bin/sh -c 'while :; do sleep 3600; done'
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
`

const rcS = `#!/bin/sh
hostname -F /etc/hostname 2>/dev/null
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
	udhcpc -b -i eth0 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
fi
`

// udhcpcScript is busybox's simple.script: it applies the lease with ip.
const udhcpcScript = `#!/bin/sh
[ -z "$1" ] && echo "Error: should be called from udhcpc" && exit 1
RESOLV_CONF="/etc/resolv.conf"
[ -n "$subnet" ] && NETMASK="/$(ipcalc -p "$ip" "$subnet" 2>/dev/null | sed 's/PREFIX=//')"
[ "$NETMASK" = "/" ] && NETMASK=""
case "$1" in
	deconfig)
		ip -4 addr flush dev "$interface"
		ip link set "$interface" up
		;;
	renew|bound)
		ip -4 addr flush dev "$interface"
		ip -4 addr add "$ip$NETMASK" ${broadcast:+broadcast $broadcast} dev "$interface"
		if [ -n "$router" ]; then
			while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
			for i in $router; do
				ip -4 route add default via "$i" dev "$interface"
			done
		fi
		: >"$RESOLV_CONF"
		[ -n "$domain" ] && echo "search $domain" >>"$RESOLV_CONF"
		for i in $dns; do
			echo "nameserver $i" >>"$RESOLV_CONF"
		done
		;;
esac
exit 0
`

// BusyboxRootfs builds a minimal busybox system under dir/rootfs and
// returns its path: /bin/busybox with every applet linked, busybox init
// with no getty (containers have no ttys), and a udhcpc script. Every
// directory from dir up is made traversable (0711) so that an
// unprivileged container's root can reach it.
func BusyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "rootfs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("busybox rootfs: %v", err)
		}
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys",
		"dev", "tmp", "root", "mnt", "run", "var/log", "usr/share/udhcpc"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	bb, err := os.ReadFile(BusyboxPath)
	must(err)
	must(os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755))
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	must(err)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		p := filepath.Join(root, applet)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.Symlink("/bin/busybox", p))
	}
	files := map[string]struct {
		content string
		mode    os.FileMode
	}{
		"etc/inittab":                     {inittab, 0o644},
		"etc/init.d/rcS":                  {rcS, 0o755},
		"usr/share/udhcpc/default.script": {udhcpcScript, 0o755},
		"etc/passwd":                      {"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644},
		"etc/group":                       {"root:x:0:\nnogroup:x:65534:\n", 0o644},
		"etc/hostname":                    {"busybox\n", 0o644},
		"etc/resolv.conf":                 {"", 0o644},
	}
	for name, f := range files {
		must(os.WriteFile(filepath.Join(root, name), []byte(f.content), f.mode))
	}
	for d := dir; d != "/" && d != "." && d != os.TempDir(); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		must(err)
		if fi.Mode().Perm()&0o011 != 0o011 {
			must(os.Chmod(d, fi.Mode().Perm()|0o011))
		}
	}
	return root
}

// RequireCRIU fails (CI=true) or skips the test unless `criu check` passes
// (Shoal's bundle and wrapper from scripts/criu-bundle.sh).
func RequireCRIU(t testing.TB) {
	t.Helper()
	Require(t)
	out, err := exec.Command("criu", "check").CombinedOutput()
	if err != nil {
		Missing(t, "a working CRIU (`criu check`: "+strings.TrimSpace(string(out))+"; run scripts/criu-bundle.sh)")
	}
	if _, err := exec.LookPath("lxc-checkpoint"); err != nil {
		Missing(t, "lxc-checkpoint (Debian package lxc)")
	}
}

// RequireLazyPages is RequireCRIU plus what CRIU's lazy pages (post-copy)
// need here: userfaultfd's non-cooperative mode, and for unprivileged
// containers vm.unprivileged_userfaultfd = 1 (scripts/install.sh sets it).
func RequireLazyPages(t testing.TB, unprivileged bool) {
	t.Helper()
	RequireCRIU(t)
	if out, err := exec.Command("criu", "check", "--feature", "uffd-noncoop").CombinedOutput(); err != nil {
		Missing(t, "userfaultfd non-cooperative mode (criu check --feature uffd-noncoop: "+strings.TrimSpace(string(out))+")")
	}
	if unprivileged {
		b, _ := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
		if strings.TrimSpace(string(b)) != "1" {
			Missing(t, "vm.unprivileged_userfaultfd = 1 (run scripts/install.sh)")
		}
	}
}
