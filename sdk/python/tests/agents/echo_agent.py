"""Test agent on the Python SDK, run as a real process by the tests (and by a sidecar's manifest).

Capabilities:
  py.echo    JSON payload (optional): {"tag": str, "delayMs": int, "fail": str}. Prints
             "call <tag> received" when a tagged call arrives (so a test sees it in flight),
             waits delayMs, raises InvalidArgument(fail) if asked, and answers
             {"instanceId", "version", "pid", "tag"}.
  py.tokens  streams the words of the payload, one chunk each.
  py.block   a plain (blocking) def: sleeps the payload's number of ms in its thread.
  py.relay   {"capability", "payload", "versionRange"}: calls another agent through the
             sidecar (MeshCaller) and answers what it answered, prefixed with "relay:".
Environment: AGENTMESH_SIDECAR_ADDR and AGENTMESH_INSTANCE_ID (set by the sidecar),
ECHO_AGENT_VERSION (reported as "version"), ECHO_AGENT_ORPHAN_TIMEOUT_S, ECHO_AGENT_GRACE_S.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator

from agentmesh import Agent, InvalidArgument, InvocationContext, MeshCaller

agent = Agent()
caller: MeshCaller | None = None


@agent.unary("py.echo")
async def echo(payload: bytes, context: InvocationContext) -> str:
    request = json.loads(payload) if payload else {}
    tag = str(request.get("tag", ""))
    if tag:
        print(f"call {tag} received", flush=True)
    if request.get("delayMs"):
        await asyncio.sleep(int(request["delayMs"]) / 1000)
    if request.get("fail"):
        raise InvalidArgument(str(request["fail"]))
    return json.dumps(
        {
            "instanceId": os.environ.get("AGENTMESH_INSTANCE_ID", ""),
            "version": os.environ.get("ECHO_AGENT_VERSION", ""),
            "pid": os.getpid(),
            "tag": tag,
        }
    )


@agent.stream("py.tokens")
async def tokens(payload: bytes, context: InvocationContext) -> AsyncIterator[bytes]:
    for word in payload.split():
        yield word


@agent.unary("py.block")
def block(payload: bytes, context: InvocationContext) -> bytes:
    # Blocking on purpose: a plain def runs in a thread, so the stream keeps answering pings.
    time.sleep(int(payload or b"0") / 1000)
    return b"unblocked"


@agent.unary("py.relay")
async def relay(payload: bytes, context: InvocationContext) -> bytes:
    global caller
    request = json.loads(payload)
    if caller is None:
        caller = MeshCaller()
    result = await caller.invoke(
        request["capability"],
        request.get("payload", ""),
        version_range=request.get("versionRange", ""),
        timeout_s=context.remaining_s(),
    )
    return b"relay:" + result.payload


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
    agent.run(
        orphan_timeout_s=float(os.environ.get("ECHO_AGENT_ORPHAN_TIMEOUT_S", "15")),
        shutdown_grace_s=float(os.environ.get("ECHO_AGENT_GRACE_S", "4")),
    )
