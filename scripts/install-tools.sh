#!/usr/bin/env bash
# The tools the tests and the code generator drive, in .tools/bin:
#   bash scripts/install-tools.sh                  grpcurl and grpc-health-probe (end-to-end tests, `npm test`)
#   bash scripts/install-tools.sh --protoc-plugins the Go protobuf plugins `npm run generate` runs through buf
#   bash scripts/install-tools.sh --deploy-checks  kubeconform with the Kubernetes JSON schemas (deploy/), and
#                                                  compose-config, docker compose v2's loader (docker-compose.yml)
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

# --- Kubernetes schemas: kubeconform downloads its schemas from GitHub, which CI cannot
# reach, so they are built here from the Kubernetes v1.27.0 OpenAPI document that the
# k8s.io/kube-openapi Go module ships (pkg/schemaconv/testdata/swagger.json), into
# .tools/kubernetes-schemas/<version>/ (scripts/kubernetes-schemas.mjs says how).
KUBE_OPENAPI_MODULE=k8s.io/kube-openapi@v0.0.0-20260502001324-b7f5293f4787
KUBERNETES_SCHEMA_VERSION=v1.27.0
install_kubernetes_schemas() {
  local out
  out="$(dirname "$TOOLS_BIN")/kubernetes-schemas/$KUBERNETES_SCHEMA_VERSION"
  if [ -f "$out/.complete" ]; then
    echo "install-tools: kubernetes schemas: $out"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "install-tools: the Kubernetes schemas are not in $out, and building them needs Go (https://go.dev/dl/) to fetch the $KUBE_OPENAPI_MODULE module" >&2
    exit 1
  fi
  local module_dir
  module_dir=$(GOFLAGS=-mod=mod go mod download -json "$KUBE_OPENAPI_MODULE" | node -e 'let s="";process.stdin.on("data",(d)=>{s+=d}).on("end",()=>process.stdout.write(JSON.parse(s).Dir))')
  node scripts/kubernetes-schemas.mjs "$module_dir/pkg/schemaconv/testdata/swagger.json" "$out"
  touch "$out/.complete"
}

# --- compose-config (tools/compose-config): the compose-spec loader docker compose v2 is
# built on, so docker-compose.yml is checked as v2 reads it where the plugin is absent.
install_compose_config() {
  local built="$TOOLS_BIN/compose-config"
  if [ -x "$built" ] && [ "$built" -nt tools/compose-config/main.go ] && [ "$built" -nt tools/compose-config/go.sum ]; then
    echo "install-tools: compose-config: $TOOLS_BIN/compose-config"
    return 0
  fi
  need_go compose-config
  (cd tools/compose-config && go build -o "$TOOLS_BIN/compose-config" .)
  echo "install-tools: compose-config: built $TOOLS_BIN/compose-config"
  in_tools_bin=1
}

in_tools_bin=0
case "${1:-}" in
  --protoc-plugins) install_protoc_plugins ;;
  --deploy-checks)
    install_test_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
    install_kubernetes_schemas
    install_compose_config
    ;;
  "")
    install_test_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
    install_test_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
    ;;
  *)
    echo "usage: bash scripts/install-tools.sh [--protoc-plugins | --deploy-checks]" >&2
    exit 2
    ;;
esac

# Nothing puts .tools/bin on the user's PATH (the tests find it themselves): say how.
if [ "$in_tools_bin" = 1 ] && [[ ":$PATH:" != *":$TOOLS_BIN:"* ]]; then
  echo "install-tools: to run them yourself: export PATH=\"$TOOLS_BIN:\$PATH\""
fi
