#!/usr/bin/env bash
# bench/fuzz.sh [TIME] runs every Go fuzz target of the module (func FuzzX
# in a *_fuzz_test.go file) for TIME each (default 60s; go test's -fuzztime
# syntax, so 3s or 100000x) and prints a table: target, package, execs,
# execs/s, new interesting inputs, crashes (0, or the failing input written
# under the package's testdata/fuzz). FUZZ_PARALLEL sets the workers per
# target (default 1). Each new interesting input is minimized for at most
# FUZZ_MINIMIZE (default 2s; go test's default of 60s stalls the tar targets,
# whose inputs are kilobytes). Exits non-zero when any target failed. Run
# as root (the unpack target chowns and creates device nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
TIME=${1:-60s}
PAR=${FUZZ_PARALLEL:-1}
MIN=${FUZZ_MINIMIZE:-2s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mapfile -t files < <(grep -rl --include='*_fuzz_test.go' '^func Fuzz' . | sort)
printf '%-16s %-24s %12s %10s %8s %s\n' target package execs execs/s new crashes
failed=0 total=0
for f in "${files[@]}"; do
	pkg=./$(dirname "${f#./}")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		log="$tmp/$name.log"
		start=$(date +%s)
		rc=0
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$TIME" -fuzzminimizetime "$MIN" -parallel "$PAR" "$pkg" >"$log" 2>&1 || rc=$?
		secs=$(($(date +%s) - start))
		last=$(grep '^fuzz: elapsed' "$log" | tail -1 || true)
		execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
		newi=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
		elapsed=$(sed -n 's/^fuzz: elapsed: \([0-9]*\)s.*/\1/p' <<<"$last")
		execs=${execs:-0} newi=${newi:-0}
		[ "${elapsed:-0}" -gt 0 ] || elapsed=$((secs > 0 ? secs : 1))
		rate=$((execs / elapsed))
		crash=0
		# go test reports "context deadline exceeded" when -fuzztime ends
		# while it minimizes a new input (golang/go#56238): no input failed,
		# none is written. Every real failure writes its input.
		if [ "$rc" -ne 0 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
			rc=0 crash="0 (time ran out while minimizing)"
		fi
		if [ "$rc" -ne 0 ]; then
			failed=1
			crash=$(sed -n 's/.*Failing input written to \(.*\)/\1/p' "$log" | head -1)
			crash=${crash:-"failed (see below)"}
		fi
		total=$((total + execs))
		printf '%-16s %-24s %12s %10s %8s %s\n' "$name" "${pkg#./}" "$execs" "$rate" "$newi" "$crash"
		if [ "$rc" -ne 0 ]; then
			grep -v '^fuzz: elapsed' "$log" | head -40 | sed 's/^/    /'
		fi
	done
done
printf '%-16s %-24s %12s\n' total "" "$total"
exit "$failed"
