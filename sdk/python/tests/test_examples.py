"""The README's agent is examples/upper_agent.py, and it works as written."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc

from sidecar_double import WAIT_S, CallFrame, SidecarDouble, open_invocation

SDK_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = SDK_ROOT / "examples" / "upper_agent.py"


def test_the_readme_shows_the_examples_verbatim() -> None:
    readme = (SDK_ROOT / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme
    assert f"```yaml\n{(SDK_ROOT / 'examples' / 'upper-agent.yaml').read_text()}```" in readme


async def test_the_example_agent_serves_its_capabilities(sidecar: SidecarDouble) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        env={**os.environ, "AGENTMESH_SIDECAR_ADDR": sidecar.address, "AGENTMESH_INSTANCE_ID": "upper-1"},
    )
    try:
        session = await sidecar.attached()
        await session.send(
            open_invocation(1, "text.upper", b"hello"),
            open_invocation(2, "text.upper", b""),
            open_invocation(3, "text.words", b"to be", streaming=True),
        )
        upper = await session.received.next(lambda frame: frame.call_id == 1)
        assert upper.payload == b"HELLO"
        empty = await session.received.next(lambda frame: frame.call_id == 2)
        assert (empty.status_code, empty.status_message) == (
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            "payload must not be empty",
        )
        await session.received.next(lambda frame: frame.call_id == 3 and frame.kind == CallFrame.KIND_END)
        assert [frame.payload for frame in session.received.of_call(3) if frame.kind == CallFrame.KIND_DATA] == [
            b"to",
            b"be",
        ]
        process.terminate()
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
