#!/usr/bin/env bash
# setup.sh installs what is missing, builds shoal and shoald into
# /usr/local/bin, and runs Shoal's main job: a one-node cluster (shoald with a
# btrfs pool on a loop file and the bridge shoalbr0), a busybox image, and a
# launched container with limits; then a three-node cluster of simulated
# hosts (network namespaces) that launches containers across its nodes and
# is torn down again. The one-node shoald keeps running afterwards
# (log: /var/log/shoald.log); `shoal list` shows what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/local/bin"
say() { printf '==> %s\n' "$*"; }

bash scripts/install.sh
say "building shoal and shoald"
mkdir -p bin
go build -o bin/ ./cmd/shoal ./cmd/shoald
install -m 0755 bin/shoal bin/shoald /usr/local/bin/

if ! shoal list >/dev/null 2>&1; then
  say "starting shoald (log: /var/log/shoald.log)"
  setsid shoald >>/var/log/shoald.log 2>&1 < /dev/null &
  for _ in $(seq 600); do shoal list >/dev/null 2>&1 && break; sleep 0.1; done
  shoal list >/dev/null || { echo "shoald did not start; see /var/log/shoald.log" >&2; exit 1; }
fi

say "shoal image build busybox"
shoal image build busybox
name=demo1
if ! shoal info "$name" >/dev/null 2>&1; then
  say "shoal launch busybox $name -c limits.memory=256MiB -c limits.cpu=1"
  shoal launch busybox "$name" -c limits.memory=256MiB -c limits.cpu=1
fi
for _ in $(seq 100); do shoal list -f json | grep -q '"ipv4"' && break; sleep 0.1; done
say "shoal list"
shoal list
say "shoal exec $name -- sh -c 'hostname; ip -4 addr show eth0'"
shoal exec "$name" -- sh -c 'hostname; ip -4 addr show eth0'
say "a three-node cluster on simulated hosts: a live move, and an HA container surviving its host's death (go run ./tests/localcluster; --keep keeps it up)"
go run ./tests/localcluster
say "done: the one-node shoald is running; try 'shoal exec -t $name -- sh'"
