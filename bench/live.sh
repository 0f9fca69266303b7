#!/usr/bin/env bash
# bench/live.sh prints Shoal's live-move figures (issue: migration) between
# two simulated hosts: total time and downtime of moves there and back for
# an idle busybox container and one holding 256 MiB of touched memory
# (median of 10), the downtime seen from inside, and the lxc-checkpoint
# floor on one host. Run as root after scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go run ./bench/live "$@"
