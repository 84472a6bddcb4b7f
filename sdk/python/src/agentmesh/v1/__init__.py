"""Generated protobuf and gRPC modules of the agentmesh.v1 API (scripts/generate-python.sh). Do not edit."""
