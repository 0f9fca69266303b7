#!/usr/bin/env bash
# clean-test-leftovers.sh removes what an interrupted end-to-end run can leave
# behind (a test binary killed by its timeout runs no cleanups): containers,
# dnsmasq, bridges and nftables tables of test daemons, pool mounts and loop
# devices, and the state dirs under /tmp/shoal-e2e-*.
set -uo pipefail
for state in /tmp/shoal-e2e-*; do
  [ -d "$state" ] || continue
  pkill -f "shoald --state-dir $state( |$)" 2>/dev/null
  for c in "$state"/lxc/*/ "$state"/raw-lxc/*/; do
    [ -d "$c" ] && lxc-stop -P "$(dirname "$c")" -n "$(basename "$c")" -k >/dev/null 2>&1
  done
  for br in "$state"/networks/*/; do
    br=$(basename "$br")
    [ "$br" = "*" ] && continue
    pkill -f -- "--interface=$br( |$)" 2>/dev/null
    ip link del "$br" 2>/dev/null
    nft delete table inet "shoal_$br" 2>/dev/null
  done
  for m in "$state"/storage-pools/*; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  for img in "$state"/disks/*.img; do
    [ -f "$img" ] || continue
    for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
  done
  rm -rf "$state" && echo "removed leftovers of $state"
done
# network/overlay's tests keep everything inside namespaces of their own.
for ns in /run/netns/shoal-ovt-*; do
  [ -e "$ns" ] || continue
  ip netns del "$(basename "$ns")" && echo "removed leftover namespace $(basename "$ns")"
done
exit 0
