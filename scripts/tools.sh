#!/usr/bin/env bash
# tools.sh installs the pinned Go code-generation tools (buf and protoc plugins)
# into $(go env GOPATH)/bin. Skips what is already at the pinned version.
set -euo pipefail
gobin="$(go env GOPATH)/bin"
want() { # name module@version
  local name=$1 mod=$2
  if [ -x "$gobin/$name" ] && go version -m "$gobin/$name" 2>/dev/null | grep -q "${mod#*@}"; then return; fi
  echo "==> go install $mod"
  go install "$mod"
}
want buf github.com/bufbuild/buf/cmd/buf@v1.75.0
want protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
want protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
want protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0
want protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0
