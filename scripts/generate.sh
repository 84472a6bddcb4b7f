#!/usr/bin/env bash
# `npm run generate`: every language's stubs from proto/, reproducibly. Each
# language is its own function with its own pinned generator, so adding one
# touches nothing else; `npm run check:generated` fails CI when any is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"

# TypeScript: buf lint (STANDARD rules), then ts-proto through buf (proto/buf.gen.yaml).
generate_typescript() {
  (cd proto && buf lint && buf generate)
}

# Python: grpcio-tools' protoc (pinned in sdk/python/requirements-codegen.txt).
generate_python() {
  bash scripts/generate-python.sh
}

generate_typescript
generate_python
