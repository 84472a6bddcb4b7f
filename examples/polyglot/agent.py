"""The polyglot agent in Python: the same capabilities, with the same answers, as
examples/polyglot/agent.ts and go/main.go (see examples/polyglot/README.md).
The cross-language tests and `npm run bench:sdk` run all three side by side.

Run it with the interpreter the SDK is installed in (`pip install ./sdk/python`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from agentmesh import (
    Agent,
    InvalidArgument,
    InvocationContext,
    MeshCaller,
    MeshError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)

LANGUAGE = "py"

#: The names a caller may ask echo to fail with, and the error (so the status) it raises.
FAILURES: dict[str, type[MeshError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "PERMISSION_DENIED": PermissionDenied,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
}

agent = Agent()
_caller: MeshCaller | None = None


def caller() -> MeshCaller:
    global _caller
    if _caller is None:
        _caller = MeshCaller()
    return _caller


def parse(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def remaining_ms(context: InvocationContext) -> int:
    remaining = context.remaining_s()
    return -1 if remaining is None else int(remaining * 1000)


async def echo(payload: bytes, context: InvocationContext) -> str:
    asked = parse(payload)
    tag = str(asked.get("tag", ""))
    if tag:
        print(f"call {tag} received", flush=True)
    if asked.get("delayMs"):
        try:
            await asyncio.sleep(int(asked["delayMs"]) / 1000)
        except asyncio.CancelledError:
            print(f"call {tag} cancelled", flush=True)
            raise
    fail = str(asked.get("fail", ""))
    if fail == "INTERNAL":
        raise RuntimeError("a bug the caller must not see")
    if fail in FAILURES:
        raise FAILURES[fail](f"asked to fail with {fail}")
    return json.dumps(
        {
            "language": LANGUAGE,
            "capability": context.capability,
            "version": context.version,
            "instanceId": os.environ.get("AGENTMESH_INSTANCE_ID", ""),
            "caller": context.caller,
            "payload": payload.decode(errors="replace"),
            "tag": tag,
            "remainingMs": remaining_ms(context),
            "pid": os.getpid(),
        }
    )


agent.unary(f"{LANGUAGE}.echo")(echo)
agent.unary("polyglot.who")(echo)


@agent.stream(f"{LANGUAGE}.words")
async def words(payload: bytes, context: InvocationContext) -> AsyncIterator[bytes]:
    for word in payload.split():
        yield word


@agent.unary(f"{LANGUAGE}.relay")
async def relay(payload: bytes, context: InvocationContext) -> str:
    """Calls another capability within the caller's deadline and answers what happened as data."""
    asked = parse(payload)
    capability = str(asked.get("capability", ""))
    if not capability:
        raise InvalidArgument("payload must be JSON naming a capability")
    budgets = [value for value in (context.remaining_s(), int(asked.get("timeoutMs", 0)) / 1000) if value]
    timeout_s = min(budgets) if budgets else None
    body = str(asked.get("payload", ""))
    version_range = str(asked.get("versionRange", ""))
    try:
        if not asked.get("stream"):
            reply = await caller().invoke(capability, body, version_range=version_range, timeout_s=timeout_s)
            return json.dumps(
                {
                    "ok": True,
                    "payload": reply.payload.decode(errors="replace"),
                    "instanceId": reply.instance_id,
                    "version": reply.version,
                    "via": LANGUAGE,
                }
            )
        chunks = [
            chunk.decode(errors="replace")
            async for chunk in caller().invoke_stream(
                capability, body, version_range=version_range, timeout_s=timeout_s
            )
        ]
        return json.dumps({"ok": True, "chunks": chunks, "via": LANGUAGE})
    except MeshError as error:
        return json.dumps({"ok": False, "code": error.code_value, "message": error.message, "via": LANGUAGE})


@agent.unary(f"{LANGUAGE}.load")
async def load(payload: bytes, context: InvocationContext) -> str:
    """Sends ``count`` calls at ``ratePerSec`` (open loop) and answers each latency in µs (-1: failed)."""
    asked = parse(payload)
    capability, count, rate = (
        str(asked.get("capability", "")),
        int(asked.get("count", 0)),
        int(asked.get("ratePerSec", 0)),
    )
    if not capability or count <= 0 or rate <= 0:
        raise InvalidArgument("payload must be JSON with capability, count and ratePerSec")
    body = b"x" * int(asked.get("payloadBytes", 0))
    timeout_s = max(int(asked.get("timeoutMs", 0)), 1000) / 1000
    version_range = str(asked.get("versionRange", ""))
    latencies_us = [-1] * count
    errors: list[str] = []

    async def one(index: int) -> None:
        sent = time.perf_counter()
        try:
            await caller().invoke(capability, body, version_range=version_range, timeout_s=timeout_s)
        except MeshError as error:
            errors.append(repr(error))
            return
        latencies_us[index] = round((time.perf_counter() - sent) * 1_000_000)

    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        pause = started + index / rate - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return json.dumps(
        {
            "latenciesUs": latencies_us,
            "failed": len(errors),
            "firstError": errors[0] if errors else "",
            "seconds": loop.time() - started,
        }
    )


if __name__ == "__main__":
    agent.run(shutdown_grace_s=float(os.environ.get("POLYGLOT_GRACE_S", "10")))
    print("polyglot py agent stopped", flush=True)
