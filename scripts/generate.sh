#!/usr/bin/env bash
# `npm run generate`: every language's stubs from proto/, reproducibly. Each
# generator is its own block with its own pinned versions, so adding a language
# touches nothing else; `npm run check:generated` fails CI when any is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"

# TypeScript (ts-proto) and Go (protoc-gen-go and protoc-gen-go-grpc, installed at
# pinned versions by scripts/install-tools.sh): buf's local plugins, as listed in
# proto/buf.gen.yaml, after buf lint (STANDARD rules).
generate_buf() {
  bash scripts/install-tools.sh --protoc-plugins
  (cd proto && buf lint && buf generate)
}

# Python: grpcio-tools' protoc (pinned in sdk/python/requirements-dev.txt).
generate_python() {
  bash scripts/generate-python.sh
}

generate_buf
generate_python
