#!/usr/bin/env bash
# Python stubs (messages, .pyi types, grpc services) from proto/ into
# sdk/python/src/agentmesh/v1/, with the grpcio-tools version pinned in
# sdk/python/requirements-codegen.txt (its protoc writes the same bytes every run).
#
# The output directory mirrors the proto package: agentmesh/v1/agent.proto becomes
# the module agentmesh.v1.agent_pb2, inside the SDK's own `agentmesh` package. That
# is exactly the absolute import protoc and the grpc plugin write
# (`from agentmesh.v1 import types_pb2`), so the generated files import each other
# correctly as they are, with no rewriting pass.
set -euo pipefail
cd "$(dirname "$0")/.."

out_root=sdk/python/src
out_dir="$out_root/agentmesh/v1"
bash scripts/python-env.sh
python=.venv/bin/python

rm -rf "$out_dir"
mkdir -p "$out_dir"
"$python" -m grpc_tools.protoc \
  --proto_path=proto \
  --python_out="$out_root" \
  --pyi_out="$out_root" \
  --grpc_python_out="$out_root" \
  proto/agentmesh/v1/*.proto
cat > "$out_dir/__init__.py" <<'PY'
"""Generated protobuf and gRPC modules of the agentmesh.v1 API (scripts/generate-python.sh). Do not edit."""
PY
echo "python stubs written to $out_dir"
