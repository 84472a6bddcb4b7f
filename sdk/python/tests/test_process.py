"""The agent as a real process: SIGTERM finishes calls in flight, an orphan exits with status 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from sidecar_double import WAIT_S, CallFrame, SidecarDouble, open_invocation

AGENT = Path(__file__).parent / "agents" / "echo_agent.py"


class AgentProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def line(self, text: str, timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not any(text in line for line in self.lines):
                if self._reader.done():
                    raise AssertionError(f"agent exited before printing {text!r}: {self.lines}")
                self._changed.clear()
                await self._changed.wait()

    async def exit_code(self, timeout_s: float = WAIT_S) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)


Spawn = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    started: list[AgentProcess] = []

    async def start(sidecar: SidecarDouble, **env: str) -> AgentProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(AGENT),
            env={
                **os.environ,
                "AGENTMESH_SIDECAR_ADDR": sidecar.address,
                "AGENTMESH_INSTANCE_ID": "py-process",
                **env,
            },
            stdout=asyncio.subprocess.PIPE,
        )
        agent = AgentProcess(process)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.process.returncode is None:
            agent.process.kill()
            await agent.process.wait()


async def test_sigterm_finishes_the_call_in_flight_then_exits_cleanly(sidecar: SidecarDouble, spawn: Spawn) -> None:
    agent: AgentProcess = await spawn(sidecar)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "py.echo", json.dumps({"tag": "slow", "delayMs": 300}).encode()))
    await agent.line("call slow received")

    agent.process.send_signal(signal.SIGTERM)
    await agent.line("draining 1 call(s)")
    await session.send(open_invocation(2, "py.echo", b""))

    refused = await session.received.next(lambda frame: frame.call_id == 2)
    assert refused.kind == CallFrame.KIND_END
    assert refused.status_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert refused.refused_before_delivery
    finished = await session.received.next(lambda frame: frame.call_id == 1)
    assert finished.kind == CallFrame.KIND_DATA
    assert json.loads(finished.payload)["tag"] == "slow"
    await asyncio.wait_for(session.agent_ended.wait(), WAIT_S)
    assert await agent.exit_code() == 0


async def test_an_orphaned_agent_exits_with_status_1(sidecar: SidecarDouble, spawn: Spawn) -> None:
    agent: AgentProcess = await spawn(sidecar, ECHO_AGENT_ORPHAN_TIMEOUT_S="0.3")
    await sidecar.attached()
    await sidecar.stop()
    assert await agent.exit_code() == 1
