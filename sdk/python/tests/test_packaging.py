"""The package as pip builds it: typed, with its generated code, importable on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

SDK_ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_types_and_generated_code_and_imports_from_it(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(
        SDK_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("agentmesh-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "agentmesh/py.typed",
        "agentmesh/agent.py",
        "agentmesh/caller.py",
        "agentmesh/signing.py",
        "agentmesh/v1/agent_pb2.py",
        "agentmesh/v1/agent_pb2.pyi",
        "agentmesh/v1/agent_pb2_grpc.py",
        "agentmesh/v1/types_pb2.pyi",
    ):
        assert expected in names
    assert not any(name.startswith("tests/") for name in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
    )
    # -S: no site hooks, so the editable install of the test venv cannot answer the import;
    # the dependencies (grpcio, protobuf, cryptography) come from the venv's site-packages.
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import agentmesh, agentmesh.agent, agentmesh.caller, agentmesh.signing\n"
        "from agentmesh.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2_grpc\n"
        "assert agentmesh.__file__.startswith(sys.argv[1]), agentmesh.__file__\n"
        "assert agent_pb2_grpc.SidecarServiceStub and agent_pb2.CallFrame.KIND_PONG == 6\n"
        "print(agentmesh.Agent.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(target), sysconfig.get_paths()["purelib"]],
        check=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "agentmesh.agent"


def test_importing_the_package_loads_neither_grpc_nor_cryptography() -> None:
    probe = "import sys, agentmesh; print(sorted(m for m in ('grpc', 'cryptography') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_serving_an_agent_does_not_load_cryptography() -> None:
    probe = "import sys\nfrom agentmesh import Agent, MeshCaller, InvalidArgument\nprint('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "False"
