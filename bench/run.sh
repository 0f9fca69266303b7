#!/usr/bin/env bash
# bench/run.sh prints Shoal's single-node figures (issue: single-node Shoal):
# launch, stop -f, delete -f, exec, snapshot create/restore, copy, list with
# 100 running, daemon RSS and host memory per idle container, beside the raw
# LXC/btrfs floor measured in the same run. Run as root after scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go run ./bench/lifecycle "$@"
