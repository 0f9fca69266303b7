#!/usr/bin/env bash
# vm.sh: a disposable Debian 12 host in QEMU, for the tests that need what
# this machine's kernel lacks (device-mapper/LVM, ZFS, AppArmor, a pure
# cgroup v2 layout). Debian's own kernel boots under TCG (no KVM needed).
#
#   scripts/vm.sh build                 build the image once (cached), print its directory
#   scripts/vm.sh path                  print the current image's directory; exit 1 if not built
#   scripts/vm.sh key                   print the cache key (packages, kernel, recipe)
#   scripts/vm.sh build-zfs             build the ZFS overlay for the image's kernel (dkms, minutes; cached)
#   scripts/vm.sh run [OPTIONS] BINARY [ARGS...]
#        --timeout SECS   hard limit for the whole VM run (default 900); qemu is killed after it
#        --mem MIB        guest memory (default 3072)
#        --env NAME=VALUE set in the program's environment (repeatable)
#        --status FILE    write "exit N", "timeout" or "vm-error: ..." there
#        --console FILE   keep the serial console log there (default: printed on failure)
#        --disk-size SIZE size of the raw disk the program gets as $SHOAL_VM_DISK (default 8G)
#        --zfs            unpack the ZFS overlay (module + zfsutils) in the VM and load zfs
#                         (building it first, as build-zfs does, when it is missing)
#
# run boots the image with BINARY and ARGS on a job disk, runs it as root
# inside (cwd /scratch/work, TMPDIR on an ext4 scratch disk, SHOAL_VM=1),
# streams its combined output to stdout, powers off and exits with the
# program's exit code: 124 when the timeout killed the VM, 125 when the VM
# failed before reporting one. The VM has no network device.
#
# The image (root filesystem, kernel, initramfs) lives in
# /var/cache/shoal/vm/<key>/; the key is a hash of the package list, the
# kernel package Debian's archive offers now, and the build recipe, so a
# change to either rebuilds. The root image is shared by concurrent runs
# (each run writes to a throw-away overlay).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

CACHE="${SHOAL_VM_CACHE:-/var/cache/shoal/vm}"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
# RECIPE changes whenever the build below changes in a way that matters.
RECIPE=1
# ZFS_RECIPE is RECIPE for the ZFS overlay (build-zfs).
ZFS_RECIPE=2
PACKAGES=(lxc btrfs-progs lvm2 thin-provisioning-tools apparmor dnsmasq-base nftables iptables kmod iproute2
          e2fsprogs util-linux procps)
# Kernel modules the initramfs loads to find the root and job disks.
INITRD_MODULES=(virtio_pci virtio_blk ext4)
# Module trees not worth carrying into the image (hardware a VM never has).
PRUNE_MODULES=(sound drivers/media drivers/gpu drivers/infiniband drivers/iio drivers/usb drivers/scsi
               drivers/hwmon drivers/net/wireless drivers/net/ethernet drivers/staging drivers/input
               drivers/bluetooth net/bluetooth drivers/isdn drivers/mmc drivers/hid)

say() { printf '==> vm: %s\n' "$*" >&2; }
die() { printf 'vm: %s\n' "$*" >&2; exit 1; }

# kernel_package prints the name and version of the kernel package that
# linux-image-amd64 points at now ("linux-image-6.1.0-57-amd64 6.1.192-3").
kernel_package() {
  local pkg ver
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq >&2 || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64 (is Debian's archive in the apt sources?)"
  ver=$(apt-cache policy "$pkg" | awk '$1 == "Candidate:" {print $2; exit}')
  echo "$pkg $ver"
}

cache_key() {
  { echo "recipe=$RECIPE suite=$SUITE"
    echo "packages=${PACKAGES[*]}"
    echo "kernel=$(kernel_package)"
    echo "modules=${INITRD_MODULES[*]} prune=${PRUNE_MODULES[*]}"
    declare -f initramfs_init
  } | sha256sum | cut -c1-16
}

# initramfs_init is the initramfs's /init (static busybox, quick to start
# under TCG where every dynamically linked exec costs a tenth of a second):
# load the virtio and ext4 modules, mount the root, job and scratch disks
# (found by their serial numbers) and the usual filesystems (cgroup2 only,
# as on a stock systemd host), and hand over to the job's init script.
initramfs_init() {
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
fail() { echo "initramfs: $*"; echo o >/proc/sysrq-trigger; sleep 10; }
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "$m" || echo "initramfs: insmod $m failed"; done </modules.list
disk() { # disk SERIAL: the /dev node of the virtio disk with that serial
  for i in $(seq 1 200); do
    for s in /sys/block/vd*/serial; do
      [ -e "$s" ] && [ "$(cat "$s")" = "$1" ] && { d=${s%/serial}; echo /dev/${d##*/}; return 0; }
    done
    sleep 0.05
  done
  return 1
}
r=/newroot
root=$(disk shoal-root) || fail "no root disk"
mount -t ext4 "$root" $r || fail "cannot mount $root"
for d in job scratch; do
  dev=$(disk shoal-$d) || fail "no $d disk"
  mkdir -p $r/$d && mount -t ext4 -o noatime "$dev" $r/$d || fail "cannot mount $dev on /$d"
done
disk=$(disk shoal-disk)
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount --move /dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $r/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm
mount -t tmpfs -o mode=755 tmpfs $r/run
mount -t tmpfs -o mode=1777 tmpfs $r/tmp
mount -t cgroup2 -o nsdelegate cgroup2 $r/sys/fs/cgroup
mount -t securityfs securityfs $r/sys/kernel/security 2>/dev/null
mkdir -p $r/run/lock $r/run/lvm $r/scratch/tmp $r/scratch/work
echo "SHOAL_VM_DISK=$disk" >$r/run/shoal-disk
ln -sf /proc/self/fd $r/dev/fd; ln -sf /proc/self/fd/0 $r/dev/stdin
ln -sf /proc/self/fd/1 $r/dev/stdout; ln -sf /proc/self/fd/2 $r/dev/stderr
hostname shoal-vm
ip link set lo up
stty -F $r/dev/ttyS1 raw -echo
umount /proc /sys 2>/dev/null
exec switch_root $r /bin/bash /job/init
EOF
}

# guest_init is the job disk's /init, run as PID 1 in the booted image:
# load the device-mapper and loop modules, run the program with its
# output on the second serial port and the job disk, record its exit
# code there and power off.
guest_init() {
  cat <<'EOF'
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
off() { sync; mount -o remount,ro /job 2>/dev/null; sync; echo o >/proc/sysrq-trigger; sleep 10; }
trap off EXIT
if [ -e /job/overlay.tgz ]; then
  tar -C / --keep-directory-symlink -xzf /job/overlay.tgz && ldconfig && depmod -a && modprobe zfs || echo "vm: the ZFS overlay did not load"
fi
modprobe -a loop dm_mod dm_thin_pool || echo "vm: modprobe failed"
export TMPDIR=/scratch/tmp SHOAL_VM=1 "$(</run/shoal-disk)"
while IFS= read -r -d '' kv; do export "$kv"; done </job/env
mapfile -d '' args </job/args
mkdir -p /job/out
cd /scratch/work
read -r up _ </proc/uptime
echo "vm: booted in ${up}s; running ${args[*]}"
set +e
"${args[@]}" </dev/null 2>&1 | tee /job/out/output >/dev/ttyS1
echo "${PIPESTATUS[0]}" >/job/out/rc
echo "vm: exit $(</job/out/rc)"
EOF
}

# cmd_path prints the image the last build made or found current (the
# key is not recomputed here: that asks apt, which takes seconds).
cmd_path() {
  local dir; dir=$(readlink -f "$CACHE/current" 2>/dev/null || true)
  [ -n "$dir" ] && [ -e "$dir/ok" ] || { echo "vm: no image in $CACHE: run scripts/vm.sh build" >&2; exit 1; }
  echo "$dir"
}

cmd_build() {
  [ "$(id -u)" = 0 ] || die "build must run as root"
  for t in mmdebstrap mkfs.ext4 dpkg-deb apt-get; do command -v "$t" >/dev/null || die "build needs $t (scripts/install.sh installs it)"; done
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "build needs a static /bin/busybox (busybox-static)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build.lock"
  flock 9
  local key dir kpkg kver ver
  read -r kpkg ver < <(kernel_package)
  key=$(cache_key)
  dir="$CACHE/$key"
  if [ -e "$dir/ok" ]; then ln -sfn "$key" "$CACHE/current"; echo "$dir"; return; fi
  kver=${kpkg#linux-image-}
  local start=$SECONDS tmp
  tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  chmod 755 "$tmp"
  BUILD_TMP=$tmp
  trap 'rm -rf "$BUILD_TMP"' EXIT
  say "building image $key: Debian $SUITE, kernel $kver ($ver), packages: ${PACKAGES[*]}"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$tmp/sources.list"
  local inc; inc=$(IFS=,; echo "${PACKAGES[*]}")
  mmdebstrap --variant=minbase --mode=root --quiet \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --include="$inc" "$SUITE" "$tmp/root" "$tmp/sources.list" >"$tmp/mmdebstrap.log" 2>&1 ||
    { tail -30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  say "root filesystem ready after $((SECONDS - start)) s"

  # The kernel and its modules, unpacked (no initramfs-tools, no postinst).
  mkdir -p "$CACHE/debs" "$tmp/kernel"
  local deb="$CACHE/debs/${kpkg}_${ver}_amd64.deb"
  if [ ! -e "$deb" ]; then
    (cd "$tmp" && apt-get download -q "$kpkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    mv "$tmp/${kpkg}_"*.deb "$deb" 2>/dev/null || die "could not download $kpkg=$ver"
  fi
  dpkg-deb -x "$deb" "$tmp/kernel"
  cp "$tmp/kernel/boot/vmlinuz-$kver" "$tmp/vmlinuz"
  local mods="$tmp/kernel/lib/modules/$kver"
  for p in "${PRUNE_MODULES[@]}"; do rm -rf "${mods:?}/kernel/$p"; done
  mkdir -p "$tmp/root/lib/modules"
  mv "$mods" "$tmp/root/lib/modules/$kver"
  chroot "$tmp/root" depmod "$kver"
  echo "$kver" >"$tmp/kernel-version"

  # LVM without udev or dmeventd: it makes its own /dev nodes.
  sed -i -e 's/^\(\s*\)# udev_sync = 1/\1udev_sync = 0/' -e 's/^\(\s*\)# udev_rules = 1/\1udev_rules = 0/' \
         -e 's/^\(\s*\)# monitoring = 1/\1monitoring = 0/' "$tmp/root/etc/lvm/lvm.conf"
  [ "$(grep -cE '^\s*(udev_sync|udev_rules|monitoring) = 0' "$tmp/root/etc/lvm/lvm.conf")" = 3 ] ||
    die "could not turn off udev_sync, udev_rules and monitoring in the image's lvm.conf"
  echo shoal-vm >"$tmp/root/etc/hostname"
  rm -rf "$tmp/root/var/cache/apt/"* "$tmp/root/var/lib/apt/lists/"*

  # The initramfs: static busybox, the modules to reach the disks, /init.
  local ird="$tmp/initramfs"
  mkdir -p "$ird/bin"
  cp /bin/busybox "$ird/bin/busybox"
  local m
  for m in "${INITRD_MODULES[@]}"; do
    chroot "$tmp/root" modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' >"$ird/modules.list"
  while read -r m; do mkdir -p "$ird$(dirname "$m")"; cp "$tmp/root$m" "$ird$m"; done <"$ird/modules.list"
  initramfs_init >"$ird/init"
  chmod 755 "$ird/init"
  (cd "$ird" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$tmp/initrd.img"

  # The root image: ext4 made from the tree, with room to spare.
  local used; used=$(du -sm "$tmp/root" | cut -f1)
  truncate -s "$((used + used / 2 + 512))M" "$tmp/root.img"
  mkfs.ext4 -q -F -L shoal-root -d "$tmp/root" "$tmp/root.img"
  rm -rf "$tmp/root" "$tmp/kernel" "$ird"
  printf 'key=%s\nkernel=%s %s\npackages=%s\nbuilt=%s\nseconds=%s\n' "$key" "$kpkg" "$ver" "${PACKAGES[*]}" \
    "$(date -u +%FT%TZ)" "$((SECONDS - start))" >"$tmp/info"
  touch "$tmp/ok"
  mv "$tmp" "$dir"
  trap - EXIT
  ln -sfn "$key" "$CACHE/current"
  # Older images are not used again (ZFS overlays are kept by kernel version).
  for old in "$CACHE"/*/; do
    old=${old%/}
    case "${old##*/}" in zfs-*) continue ;; esac
    [ "$old" = "$dir" ] || [ -L "$old" ] || [ ! -e "$old/ok" ] || rm -rf "$old"
  done
  say "image $key built in $((SECONDS - start)) s: $dir"
  echo "$dir"
}

# cmd_build_zfs builds, once per kernel version, the ZFS overlay that
# `run --zfs` unpacks over the booted image: zfs-dkms (OpenZFS, Debian's
# contrib) compiled by dkms against the image kernel's headers in a
# throw-away chroot on the host, plus the zfsutils-linux userspace and its
# libraries. It is separate from the image because it takes minutes.
cmd_build_zfs() {
  [ "$(id -u)" = 0 ] || die "build-zfs must run as root"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build.lock"
  flock 9
  local kpkg ver kver
  read -r kpkg ver < <(kernel_package)
  kver=${kpkg#linux-image-}
  local dir="$CACHE/zfs-$kver-r$ZFS_RECIPE"
  if [ -e "$dir/ok" ]; then ln -sfn "${dir##*/}" "$CACHE/zfs-current"; echo "$dir"; return; fi
  local start=$SECONDS tmp
  tmp=$(mktemp -d "$CACHE/.build-zfs.XXXXXX")
  chmod 755 "$tmp"
  BUILD_TMP=$tmp
  trap 'rm -rf "$BUILD_TMP"' EXIT
  say "building the ZFS overlay for kernel $kver (dkms; several minutes)"
  printf 'deb %s %s main contrib\ndeb %s %s-updates main contrib\ndeb %s %s-security main contrib\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$tmp/sources.list"
  local pkgs="zfsutils-linux libzfs4linux libzpool5linux libnvpair3linux libuutil3linux"
  # shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell
  mmdebstrap --variant=minbase --mode=root --quiet --aptopt='APT::Install-Recommends "false"' \
    --include="linux-headers-$kver,dkms,zfs-dkms,gcc,make,libc6-dev,${pkgs// /,}" \
    --customize-hook='chroot "$1" sh -c "dkms build zfs/\$(ls /usr/src | sed -n s/^zfs-//p) -k '"$kver"' && dkms install zfs/\$(ls /usr/src | sed -n s/^zfs-//p) -k '"$kver"' --force"' \
    --customize-hook='mkdir -p "$1/overlay/lib/modules/'"$kver"'/updates" && cp -a "$1/lib/modules/'"$kver"'/updates/dkms" "$1/overlay/lib/modules/'"$kver"'/updates/"' \
    --customize-hook='for p in '"$pkgs"'; do chroot "$1" dpkg -L $p; done | while read -r f; do [ -d "$1$f" ] && continue; [ -f "$1$f" ] || [ -L "$1$f" ] || continue; mkdir -p "$1/overlay$(dirname "$f")" && cp -a "$1$f" "$1/overlay$f" || exit 1; done' \
    --customize-hook='for b in zfs zpool; do [ -x "$1/overlay/sbin/$b" ] || [ -x "$1/overlay/usr/sbin/$b" ] || { echo "the overlay has no /sbin/$b" >&2; exit 1; }; done' \
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Version}" zfs-dkms >"$1/overlay/.zfs-version"' \
    --customize-hook='tar -C "$1/overlay" -czf "'"$tmp"'/overlay.tgz" .' \
    "$SUITE" "$tmp/root" "$tmp/sources.list" >"$tmp/mmdebstrap.log" 2>&1 ||
    { tail -30 "$tmp/mmdebstrap.log" >&2; die "the ZFS build failed"; }
  rm -rf "$tmp/root"
  [ -s "$tmp/overlay.tgz" ] || die "the ZFS build made no overlay"
  printf 'kernel=%s %s\nbuilt=%s\nseconds=%s\n' "$kpkg" "$ver" "$(date -u +%FT%TZ)" "$((SECONDS - start))" >"$tmp/info"
  touch "$tmp/ok"
  mv "$tmp" "$dir"
  trap - EXIT
  ln -sfn "${dir##*/}" "$CACHE/zfs-current"
  say "ZFS overlay for $kver built in $((SECONDS - start)) s: $dir"
  echo "$dir"
}

cmd_run() {
  local timeout=900 mem=3072 status="" console="" disksize=8G envs=() zfs=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --timeout) timeout=$2; shift 2 ;;
      --mem) mem=$2; shift 2 ;;
      --env) envs+=("$2"); shift 2 ;;
      --status) status=$2; shift 2 ;;
      --console) console=$2; shift 2 ;;
      --disk-size) disksize=$2; shift 2 ;;
      --zfs) zfs=1; shift ;;
      --) shift; break ;;
      -*) die "run: unknown option $1" ;;
      *) break ;;
    esac
  done
  [ $# -ge 1 ] || die "usage: vm.sh run [OPTIONS] BINARY [ARGS...]"
  local bin=$1; shift
  [ -f "$bin" ] && [ -x "$bin" ] || die "run: $bin is not an executable file"
  report() { [ -z "$status" ] || echo "$*" >"$status"; }
  command -v qemu-system-x86_64 >/dev/null || { report "vm-error: qemu-system-x86_64 is not installed"; die "qemu-system-x86_64 is not installed (scripts/install.sh)"; }
  local img
  img=$(cmd_path) || { report "vm-error: no image (scripts/vm.sh build)"; exit 125; }

  local run
  run=$(mktemp -d "${TMPDIR:-/tmp}/shoal-vm.XXXXXX")
  RUN_DIR=$run RUN_CONSOLE=$console QPID=""
  cleanup() {
    # timeout(1) passes TERM on to qemu; KILL only if that did not end it.
    if [ -n "$QPID" ] && kill -TERM "$QPID" 2>/dev/null; then
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.2; done
      pkill -KILL -P "$QPID" 2>/dev/null || true
      kill -KILL "$QPID" 2>/dev/null || true
    fi
    [ -z "$RUN_CONSOLE" ] || cp "$RUN_DIR/console.log" "$RUN_CONSOLE" 2>/dev/null || true
    rm -rf "$RUN_DIR"
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  # The job disk: the program, its arguments and environment, the init.
  mkdir -p "$run/job/bin"
  local name; name=$(basename "$bin")
  cp "$bin" "$run/job/bin/$name"
  printf '%s\0' "/job/bin/$name" "$@" >"$run/job/args"
  : >"$run/job/env"
  [ ${#envs[@]} -eq 0 ] || printf '%s\0' "${envs[@]}" >"$run/job/env"
  guest_init >"$run/job/init"
  if [ -n "$zfs" ]; then
    # The overlay built for the image's kernel; built here when missing
    # (the first ZFS run on a host: minutes).
    local ov="$CACHE/zfs-$(cat "$img/kernel-version" 2>/dev/null)-r$ZFS_RECIPE"
    if [ ! -e "$ov/ok" ]; then
      say "no ZFS overlay for the image's kernel yet: building it (scripts/vm.sh build-zfs)"
      (cmd_build_zfs) >/dev/null || true
    fi
    [ -e "$ov/ok" ] || { report "vm-error: no ZFS overlay for ${ov##*/zfs-} (scripts/vm.sh build-zfs failed or built another kernel's)"; die "no ZFS overlay $ov: scripts/vm.sh build-zfs failed or built another kernel's"; }
    cp "$ov/overlay.tgz" "$run/job/overlay.tgz"
  fi
  local jobmb; jobmb=$(( $(du -sm "$run/job" | cut -f1) + 256 ))
  truncate -s "${jobmb}M" "$run/job.img"
  mkfs.ext4 -q -F -O ^has_journal -d "$run/job" "$run/job.img"
  truncate -s 16G "$run/scratch.img"
  mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$run/scratch.img"
  truncate -s "$disksize" "$run/disk.img"
  : >"$run/output.log"

  local start=$SECONDS
  TMPDIR=$run timeout -k 5 "$timeout" qemu-system-x86_64 \
    -machine pc,accel=tcg -cpu max -smp 2 -m "$mem" -nographic -monitor none -no-reboot -nic none \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
    -drive "file=$img/root.img,if=none,id=root,format=raw,snapshot=on" -device virtio-blk-pci,drive=root,serial=shoal-root \
    -drive "file=$run/job.img,if=none,id=job,format=raw" -device virtio-blk-pci,drive=job,serial=shoal-job \
    -drive "file=$run/scratch.img,if=none,id=scratch,format=raw,cache=unsafe" -device virtio-blk-pci,drive=scratch,serial=shoal-scratch \
    -drive "file=$run/disk.img,if=none,id=disk,format=raw,cache=unsafe" -device virtio-blk-pci,drive=disk,serial=shoal-disk \
    -serial "file:$run/console.log" -serial "file:$run/output.log" </dev/null >"$run/qemu.log" 2>&1 &
  QPID=$!
  tail -c +1 -F --pid="$QPID" "$run/output.log" 2>/dev/null
  local qrc=0
  wait "$QPID" || qrc=$?
  QPID=""
  local secs=$((SECONDS - start))
  local streamed; streamed=$(stat -c %s "$run/output.log")
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    report "timeout"
    echo "vm: timed out after ${timeout}s; console:" >&2; tail -40 "$run/console.log" >&2
    exit 124
  fi
  # The job disk's copy is complete even where the serial stream lagged.
  debugfs -R "dump /out/output $run/output" "$run/job.img" >/dev/null 2>&1 || true
  if [ -e "$run/output" ] && [ "$(stat -c %s "$run/output")" -gt "$streamed" ]; then
    tail -c +"$((streamed + 1))" "$run/output"
  fi
  local rc
  rc=$(debugfs -R "cat /out/rc" "$run/job.img" 2>/dev/null | tr -dc 0-9)
  if [ -z "$rc" ]; then
    report "vm-error: the VM stopped after ${secs}s without an exit code (qemu exit $qrc)"
    echo "vm: no exit code from the VM (qemu exit $qrc) after ${secs}s; qemu: $(cat "$run/qemu.log"); console:" >&2
    tail -60 "$run/console.log" >&2
    exit 125
  fi
  report "exit $rc"
  say "exit $rc after ${secs}s in the VM"
  exit "$rc"
}

case "${1:-}" in
  build) cmd_build ;;
  build-zfs) cmd_build_zfs ;;
  path) cmd_path ;;
  key) cache_key ;;
  run) shift; cmd_run "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
