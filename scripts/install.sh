#!/usr/bin/env bash
# install.sh installs everything Shoal needs on a Debian 12 host, as root:
# Debian packages (LXC, btrfs, dnsmasq, nftables, debootstrap, busybox, QEMU),
# a subordinate id range for root, the CRIU bundle, the pinned Go
# code-generation tools, and the VM lane's image (scripts/vm.sh build).
# Idempotent and quick when nothing is missing. `install.sh packages` installs
# only the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf '==> %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "install: must run as root" >&2; exit 1; }
command -v go >/dev/null || { echo "install: Go 1.26 is required (put it at /usr/local/go)" >&2; exit 1; }

# umoci: the OCI image test (tests/oci_test.go) builds its image with it.
pkgs=(lxc lxc-dev libcap-dev libseccomp-dev pkg-config gcc btrfs-progs dnsmasq-base nftables iptables
      busybox-static debootstrap iproute2 ca-certificates xz-utils iputils-ping iperf3 squashfs-tools
      qemu-system-x86 mmdebstrap e2fsprogs umoci)

# install_packages installs the Debian packages of pkgs that are missing.
install_packages() {
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
install_packages
# `install.sh packages` stops here (only the Debian packages).
[ "${1:-}" = packages ] && exit 0

# Unprivileged containers map into root's subordinate range, as LXD/Incus do.
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q '^root:' "$f" || { say "adding root:1000000:1000000000 to $f"; echo 'root:1000000:1000000000' >>"$f"; }
done

# The local sockets are root's and this group's (mode 0660), as incus-admin
# is for Incus: membership is how an operator delegates.
getent group shoal-admin >/dev/null || { say "creating group shoal-admin"; groupadd --system shoal-admin; }

bash scripts/criu-bundle.sh
bash scripts/tools.sh
# The disposable Debian host of the VM lane (tests/vm): about a minute on a
# cold cache, nothing when the cached image's key still matches.
bash scripts/vm.sh build >/dev/null
