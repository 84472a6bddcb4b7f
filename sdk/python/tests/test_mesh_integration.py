"""The SDK in a real mesh: `agentmesh server` and `agentmesh sidecar` (--insecure-dev, real
processes, real sockets) run tests/agents/echo_agent.py from a manifest; Python callers
reach it through the sidecar's local port, as agents beside it would.

Needs the compiled CLI (`npm run build`; `npm test` builds before it runs pytest).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmesh import InvalidArgument, MeshCaller, Unavailable
from agentmesh.errors import MeshError

REPO_ROOT = Path(__file__).resolve().parents[3]
CLI = REPO_ROOT / "bin" / "agentmesh.js"
AGENT = Path(__file__).parent / "agents" / "echo_agent.py"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


class JsonLogProcess:
    """A child whose stdout is pino JSON lines, collected by a reader thread."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = START_TIMEOUT_S, start: int = 0
    ) -> dict[str, Any]:
        """The first line at index `start` or later that matches (bounded)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.args[2]} exited ({self.process.returncode}): {''.join(self.stderr)[-2000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for a log line of {self.args[2]}: {''.join(self.stderr)[-2000:]}"
                    )
                self._changed.wait(remaining)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Mesh:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.server: JsonLogProcess | None = None
        self.sidecar: JsonLogProcess | None = None
        self.local_address = ""

    def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH: the integration test runs the agentmesh CLI")
        if not (REPO_ROOT / "dist" / "cli" / "main.js").exists():
            pytest.fail("dist/cli/main.js is missing: run `npm run build` first (`npm test` does)")
        self.server = JsonLogProcess(
            [
                node,
                str(CLI),
                "server",
                "--insecure-dev",
                "--port",
                "0",
                "--http-port",
                "0",
                "--data-dir",
                str(self.work_dir / "server"),
            ]
        )
        server_address = self.server.wait_for(lambda line: line.get("msg") == "listening")["grpcAddress"]
        manifest = self.work_dir / "py-echo.yaml"
        manifest.write_text(
            "\n".join(
                [
                    "kind: Deployment",
                    "name: py-echo",
                    "version: 1.0.0",
                    "replicas: 1",
                    "capabilities: [py.echo@1.4.2, py.tokens@1.0.0, py.relay@1.0.0, py.block@1.0.0]",
                    "labels: {lang: python}",
                    "process:",
                    f"  command: {json.dumps(sys.executable)}",
                    f"  args: [{json.dumps(str(AGENT))}]",
                    '  env: {ECHO_AGENT_VERSION: "1.4.2"}',
                    # The default 1 s interval: the sidecar pings every 500 ms and calls an agent
                    # hung after 1.5 s of silence, which a loaded CI machine never causes by itself.
                    "health: {readinessTimeout: 10s}",
                    "restartPolicy: {initialBackoff: 50ms, maxBackoff: 200ms}",
                    "",
                ]
            )
        )
        self.sidecar = JsonLogProcess(
            [
                node,
                str(CLI),
                "sidecar",
                "--insecure-dev",
                "--server",
                str(server_address),
                "--host",
                "py-host",
                "--inbound-port",
                "0",
                "--local-port",
                "0",
                "--data-dir",
                str(self.work_dir / "sidecar"),
                "--manifest",
                str(manifest),
            ]
        )
        self.local_address = str(
            self.sidecar.wait_for(lambda line: line.get("msg") == "sidecar listening")["localAddress"]
        )

    def agent_states(self) -> list[dict[str, Any]]:
        assert self.sidecar is not None
        return [line for line in self.sidecar.lines if line.get("msg") == "agent process state changed"]

    def stop(self) -> None:
        # The sidecar first: it stops its agent (drain, SIGTERM) on the way out.
        for process in (self.sidecar, self.server):
            if process is not None:
                process.stop()


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with tempfile.TemporaryDirectory(prefix="agentmesh-py-") as work_dir:
        running = Mesh(Path(work_dir))
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest.fixture
async def caller(mesh: Mesh) -> AsyncIterator[MeshCaller]:
    async with MeshCaller(mesh.local_address) as mesh_caller:
        await until_routable(mesh_caller)
        yield mesh_caller


async def until_routable(caller: MeshCaller, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Calls py.echo until it answers: the agent is READY and in the sidecar's routing set."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await caller.invoke("py.echo", b"", timeout_s=2, idempotent=True)
            answer: dict[str, Any] = json.loads(result.payload)
            return answer
        except MeshError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_python_caller_reaches_a_python_agent_by_version_range_and_labels(caller: MeshCaller) -> None:
    result = await caller.invoke("py.echo", json.dumps({"tag": "a"}), version_range="^1.4.0", labels="lang=python")
    answer = json.loads(result.payload)
    assert answer["tag"] == "a"
    assert result.version == "1.4.2"
    assert result.instance_id == answer["instanceId"] != ""
    instances = await caller.discover("py.echo", "^1.4.0", {"lang": "python"})
    assert [instance.instance_id for instance in instances] == [answer["instanceId"]]


@pytest.mark.parametrize(
    ("version_range", "labels"),
    [("^2.0.0", None), ("^1.0.0", "lang=go")],
)
async def test_no_matching_instance_is_unavailable(caller: MeshCaller, version_range: str, labels: str | None) -> None:
    with pytest.raises(Unavailable):
        await caller.invoke("py.echo", b"", version_range=version_range, labels=labels, timeout_s=5)


async def test_streams_chunks_through_the_mesh(caller: MeshCaller) -> None:
    chunks = [chunk async for chunk in caller.invoke_stream("py.tokens", "one two three", version_range="1.x")]
    assert chunks == [b"one", b"two", b"three"]


async def test_an_error_the_agent_raises_reaches_the_caller_typed(caller: MeshCaller) -> None:
    with pytest.raises(InvalidArgument, match=r"^payload needs a name$"):
        await caller.invoke("py.echo", json.dumps({"fail": "payload needs a name"}))


async def test_an_agent_calls_another_agent_through_its_sidecar(caller: MeshCaller) -> None:
    result = await caller.invoke("py.relay", json.dumps({"capability": "py.echo", "payload": json.dumps({"tag": "r"})}))
    assert result.payload.startswith(b"relay:")
    assert json.loads(result.payload.removeprefix(b"relay:"))["tag"] == "r"


async def test_kill_9_of_the_agent_restarts_it_and_calls_resume(mesh: Mesh, caller: MeshCaller) -> None:
    first = await until_routable(caller)
    os.kill(int(first["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        answer = await until_routable(caller)
        if answer["pid"] != first["pid"]:
            break
        assert time.monotonic() < deadline, "the agent was not restarted"
        await asyncio.sleep(0.1)
    states = [line["state"] for line in mesh.agent_states() if line.get("pid") == answer["pid"]]
    assert "ready" in states


async def test_the_sidecar_hears_pongs_through_busy_calls_and_sees_a_frozen_agent_hung(
    mesh: Mesh, caller: MeshCaller
) -> None:
    sidecar = mesh.sidecar
    assert sidecar is not None
    first = await until_routable(caller)
    since = len(sidecar.lines)
    # 2.5 s of handler work with no reply in between: longer than the 1.5 s of silence after
    # which the sidecar calls an agent hung, so only the pongs keep it routable.
    busy = await asyncio.gather(
        caller.invoke("py.echo", json.dumps({"delayMs": 2500}), timeout_s=15),
        caller.invoke("py.block", "2500", timeout_s=15),
    )
    assert busy[1].payload == b"unblocked"
    assert not [line for line in sidecar.lines[since:] if line.get("msg") == "agent stopped answering pings"]

    pid = int(first["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        # In a thread: the test's own event loop keeps serving its caller meanwhile.
        await asyncio.to_thread(
            sidecar.wait_for, lambda line: line.get("msg") == "agent stopped answering pings", start=since
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.to_thread(
        sidecar.wait_for,
        lambda line: (
            line.get("msg") == "agent process state changed"
            and line.get("pid") == pid
            and line.get("state") == "ready"
            and line.get("previous") == "unresponsive"
        ),
        start=since,
    )
    assert (await until_routable(caller))["pid"] == pid
