#!/usr/bin/env bash
# The tools the tests and the code generator drive, in .tools/bin:
#   bash scripts/install-tools.sh                  grpcurl and grpc-health-probe (end-to-end tests, `npm test`)
#   bash scripts/install-tools.sh --protoc-plugins the Go protobuf plugins `npm run generate` runs through buf
# A test tool already on PATH is used as it is (no Go needed); a missing one is
# installed with `go install` from the Go module proxy. The protoc plugins are always
# the pinned versions, so generated code never depends on whatever is on the machine.
# Idempotent. AGENTMESH_TOOLS_BIN overrides the directory (tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_BIN="${AGENTMESH_TOOLS_BIN:-$PWD/.tools/bin}"
export GOBIN="$TOOLS_BIN"
mkdir -p "$TOOLS_BIN"

need_go() {
  command -v go >/dev/null 2>&1 && return 0
  echo "install-tools: $1 is not on PATH or in $TOOLS_BIN, and installing it needs Go (https://go.dev/dl/); or put $1 on PATH" >&2
  exit 1
}

# --- test tools: the one on PATH, else .tools/bin, else go install.
install_test_tool() { # name module@version
  local name="$1" module="$2"
  if [ -x "$TOOLS_BIN/$name" ]; then
    echo "install-tools: $name: $TOOLS_BIN/$name"
    in_tools_bin=1
  elif command -v "$name" >/dev/null 2>&1; then
    # The tests look in .tools/bin first, then on PATH (test/helpers/processes.ts toolPath).
    echo "install-tools: $name: $(command -v "$name") (on PATH)"
  else
    need_go "$name"
    go install "$module"
    echo "install-tools: $name: installed $TOOLS_BIN/$name"
    in_tools_bin=1
  fi
}

# --- Go stubs (sdk/go/gen): protoc-gen-go must match sdk/go's google.golang.org/protobuf.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.1
installed_version() { [ -x "$TOOLS_BIN/$1" ] && "$TOOLS_BIN/$1" --version 2>/dev/null | awk '{print $2}'; }
install_protoc_plugins() {
  if [ "$(installed_version protoc-gen-go)" != "$PROTOC_GEN_GO_VERSION" ]; then
    need_go protoc-gen-go
    go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  fi
  if [ "$(installed_version protoc-gen-go-grpc)" != "${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
    need_go protoc-gen-go-grpc
    go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  fi
}

in_tools_bin=0
case "${1:-}" in
  --protoc-plugins) install_protoc_plugins ;;
  "")
    install_test_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
    install_test_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
    ;;
  *)
    echo "usage: bash scripts/install-tools.sh [--protoc-plugins]" >&2
    exit 2
    ;;
esac

# Nothing puts .tools/bin on the user's PATH (the tests find it themselves): say how.
if [ "$in_tools_bin" = 1 ] && [[ ":$PATH:" != *":$TOOLS_BIN:"* ]]; then
  echo "install-tools: to run them yourself: export PATH=\"$TOOLS_BIN:\$PATH\""
fi
