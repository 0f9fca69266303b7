#!/usr/bin/env bash
# test.sh runs Shoal's whole test suite as root: installs what is missing,
# checks that generated code is up to date and the protos lint clean, vets,
# and runs every unit and end-to-end test against real LXC, btrfs and
# dnsmasq. CI=true turns a missing prerequisite into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"
export CI="${CI:-true}"
say() { printf '==> %s\n' "$*"; }

bash scripts/install.sh
bash scripts/clean-test-leftovers.sh

say "checking generated code"
buf lint
buf generate --template proto/buf.gen.yaml
if [ -n "$(git status --porcelain -- proto/gen)" ]; then
  git status --porcelain -- proto/gen
  echo "generated code is stale: run 'buf generate --template proto/buf.gen.yaml' and commit" >&2
  exit 1
fi

say "go vet"
go vet ./...
if [ -n "$(gofmt -l $(git ls-files '*.go'))" ]; then
  gofmt -l $(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1
fi

say "go test"
go test -count=1 -timeout 45m -p 1 ./... 2>&1 | tee /tmp/shoal-test.log

say "fuzz (a short pass: 3 s per target; bench/fuzz.sh TIME for longer)"
bash bench/fuzz.sh 3s
