#!/usr/bin/env bash
# Installs the tools the build and the tests drive into .tools/bin from the Go
# module proxy: grpcurl and grpc-health-probe (end-to-end tests), and the Go
# protobuf plugins that `npm run generate` runs through buf. Idempotent; a
# plugin at another version than pinned here is reinstalled, so generated code
# never depends on whatever happens to be on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN="$PWD/.tools/bin"
mkdir -p "$GOBIN"
[ -x "$GOBIN/grpcurl" ] || go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
[ -x "$GOBIN/grpc-health-probe" ] || go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
"$GOBIN/grpcurl" -version

# --- Go stubs (sdk/go/gen): protoc-gen-go must match sdk/go's google.golang.org/protobuf.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.1
installed_version() { [ -x "$GOBIN/$1" ] && "$GOBIN/$1" --version 2>/dev/null | awk '{print $2}'; }
[ "$(installed_version protoc-gen-go)" = "$PROTOC_GEN_GO_VERSION" ] ||
  go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
[ "$(installed_version protoc-gen-go-grpc)" = "${PROTOC_GEN_GO_GRPC_VERSION#v}" ] ||
  go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
