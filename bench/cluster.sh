#!/usr/bin/env bash
# bench/cluster.sh prints Shoal's cluster figures (issue: cluster) on three
# simulated hosts (network namespaces): placements committed per second with
# concurrent clients, leader kill -9 → next successful write (median of 10),
# and leader kill -9 → marked offline by gossip. Run as root after
# scripts/install.sh. The scheduler's own figure (5,000 nodes, 100,000
# containers) is a Go benchmark: go test -bench Place -cpu 1 ./scheduler/
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go run ./bench/cluster "$@"
