#!/usr/bin/env bash
# bench/jepsen.sh runs the linearizability checker (tests/jepsen) many
# times on three simulated hosts and prints runs, operations checked,
# violations, call latency during faults (p50/p99/max) and the longest
# call. Run as root after scripts/install.sh.
#
#   bench/jepsen.sh -runs N [-duration 60s] [-seed S] [-faults all|none|kill,pause,...] [-keys 2]
#
# Each run's report line comes first; a violation prints its seed (replay
# with -seed S -runs 1, or SHOAL_JEPSEN_SEEDS=S go test -run TestLinearizable
# ./tests) and writes porcupine's HTML view (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
exec go run ./tests/jepsen/bench "$@"
