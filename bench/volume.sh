#!/usr/bin/env bash
# bench/volume.sh prints the volume stream's throughput (MB/s) against a raw
# `btrfs send | btrfs receive` pipe between two loop pools (issue:
# migration). Run as root after scripts/install.sh. --size MiB (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go run ./bench/volume "$@"
