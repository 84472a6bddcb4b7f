#!/usr/bin/env bash
# Installs the operator tools the end-to-end tests drive (grpcurl, grpc-health-probe)
# into .tools/bin from the Go module proxy. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN="$PWD/.tools/bin"
mkdir -p "$GOBIN"
[ -x "$GOBIN/grpcurl" ] || go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
[ -x "$GOBIN/grpc-health-probe" ] || go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
"$GOBIN/grpcurl" -version
