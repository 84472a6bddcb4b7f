"""MeshCaller over SidecarService.Call: requests, replies, typed errors, deadlines, cancel, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from agentmesh import (
    DeadlineExceeded,
    InvalidArgument,
    MeshCaller,
    MeshError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from agentmesh._backoff import BackoffPolicy
from agentmesh.v1 import agent_pb2, registry_pb2, types_pb2
from sidecar_double import WAIT_S, CallFrame, CallSession, SidecarDouble

FAST_BACKOFF = BackoffPolicy(initial_s=0.01, max_s=0.05)


@pytest.fixture
async def callers() -> AsyncIterator[list[MeshCaller]]:
    made: list[MeshCaller] = []
    yield made
    for caller in made:
        await caller.close()


def new_caller(sidecar: SidecarDouble, callers: list[MeshCaller], window_size: int = 1024) -> MeshCaller:
    caller = MeshCaller(sidecar.address, backoff=FAST_BACKOFF, window_size=window_size)
    callers.append(caller)
    return caller


async def echo(open_frame: agent_pb2.CallFrame, session: CallSession) -> None:
    request = open_frame.request
    if open_frame.streaming:
        for sequence, word in enumerate(request.payload.split(), start=1):
            await session.send(
                CallFrame(call_id=open_frame.call_id, kind=CallFrame.KIND_DATA, payload=word, sequence=sequence)
            )
        await session.send(CallFrame(call_id=open_frame.call_id, kind=CallFrame.KIND_END))
        return
    await session.send(
        CallFrame(
            call_id=open_frame.call_id,
            kind=CallFrame.KIND_DATA,
            payload=b"echo:" + request.payload,
            end=True,
            content_type="text/plain",
            instance_id="inst-7",
            version="2.3.0",
        )
    )


async def never_answer(open_frame: agent_pb2.CallFrame, session: CallSession) -> None:
    return None


def is_kind(kind: int, call_id: int | None = None) -> Callable[[agent_pb2.CallFrame], bool]:
    return lambda frame: frame.kind == kind and (call_id is None or frame.call_id == call_id)


async def test_invoke_sends_the_routing_request_and_returns_who_answered(
    sidecar: SidecarDouble, callers: list[MeshCaller]
) -> None:
    sidecar.call_script = echo
    caller = new_caller(sidecar, callers)
    result = await caller.invoke(
        "text.echo",
        "hi",
        version_range="^2.1.0",
        labels="env=prod,tier in (a|b),!canary",
        timeout_s=5,
        idempotent=True,
        content_type="text/plain",
        metadata={"traceparent": "00-1-2-01"},
    )
    assert result.payload == b"echo:hi"
    assert (result.instance_id, result.version, result.content_type) == ("inst-7", "2.3.0", "text/plain")

    session = await sidecar.call_stream()
    opened = await session.received.next(is_kind(CallFrame.KIND_OPEN))
    request = opened.request
    assert not opened.streaming
    assert (request.capability, request.version_range, request.payload) == ("text.echo", "^2.1.0", b"hi")
    assert request.idempotent
    assert request.content_type == "text/plain"
    assert dict(request.metadata) == {"traceparent": "00-1-2-01"}
    assert 0 < request.timeout_ms <= 5000
    assert dict(request.label_selector.match_labels) == {"env": "prod"}
    assert [(e.key, e.operator, list(e.values)) for e in request.label_selector.match_expressions] == [
        ("tier", registry_pb2.LabelRequirement.OPERATOR_IN, ["a", "b"]),
        ("canary", registry_pb2.LabelRequirement.OPERATOR_DOES_NOT_EXIST, []),
    ]


async def test_many_calls_share_one_stream_and_get_their_own_answers(
    sidecar: SidecarDouble, callers: list[MeshCaller]
) -> None:
    sidecar.call_script = echo
    caller = new_caller(sidecar, callers)
    results = await asyncio.gather(*(caller.invoke("text.echo", str(n)) for n in range(50)))
    assert [result.payload for result in results] == [f"echo:{n}".encode() for n in range(50)]
    assert len(sidecar.call_sessions) == 1
    # Frames queued together travel together: far fewer messages than calls.
    assert sidecar.call_sessions[0].received.messages < 50


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    ],
)
async def test_an_end_frame_with_a_status_raises_its_typed_error(
    sidecar: SidecarDouble, callers: list[MeshCaller], code: grpc.StatusCode, error_class: type[MeshError]
) -> None:
    async def fail(open_frame: agent_pb2.CallFrame, session: CallSession) -> None:
        await session.send(
            CallFrame(
                call_id=open_frame.call_id,
                kind=CallFrame.KIND_END,
                status_code=code.value[0],
                status_message="no healthy instance of text.echo",
                refused_before_delivery=True,
            )
        )

    sidecar.call_script = fail
    caller = new_caller(sidecar, callers)
    with pytest.raises(error_class) as raised:
        await caller.invoke("text.echo", b"x")
    assert raised.value.code == code
    assert raised.value.message == "no healthy instance of text.echo"
    assert raised.value.refused_before_delivery


async def test_a_timeout_raises_deadline_exceeded_and_cancels_at_the_sidecar(
    sidecar: SidecarDouble, callers: list[MeshCaller]
) -> None:
    sidecar.call_script = never_answer
    caller = new_caller(sidecar, callers)
    with pytest.raises(DeadlineExceeded):
        await caller.invoke("slow", b"", timeout_s=0.2)
    session = await sidecar.call_stream()
    opened = await session.received.next(is_kind(CallFrame.KIND_OPEN))
    await session.received.next(is_kind(CallFrame.KIND_CANCEL, opened.call_id))
    assert caller.in_flight == 0


async def test_cancelling_the_calling_task_cancels_the_call(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    sidecar.call_script = never_answer
    caller = new_caller(sidecar, callers)
    task = asyncio.ensure_future(caller.invoke("slow", b""))
    session = await sidecar.call_stream()
    opened = await session.received.next(is_kind(CallFrame.KIND_OPEN))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await session.received.next(is_kind(CallFrame.KIND_CANCEL, opened.call_id))


async def test_invoke_stream_yields_chunks_in_order(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    sidecar.call_script = echo
    caller = new_caller(sidecar, callers)
    chunks = [chunk async for chunk in caller.invoke_stream("text.words", "a bb ccc")]
    assert chunks == [b"a", b"bb", b"ccc"]
    session = await sidecar.call_stream()
    opened = await session.received.next(is_kind(CallFrame.KIND_OPEN))
    assert opened.streaming
    assert not opened.request.idempotent


async def test_leaving_a_stream_early_cancels_it(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    async def endless(open_frame: agent_pb2.CallFrame, session: CallSession) -> None:
        await session.send(
            *(
                CallFrame(call_id=open_frame.call_id, kind=CallFrame.KIND_DATA, payload=b"tok", sequence=n)
                for n in range(1, 4)
            )
        )

    sidecar.call_script = endless
    caller = new_caller(sidecar, callers)
    async with contextlib.aclosing(caller.invoke_stream("tokens")) as stream:
        async for chunk in stream:
            assert chunk == b"tok"
            break
    session = await sidecar.call_stream()
    opened = await session.received.next(is_kind(CallFrame.KIND_OPEN))
    await session.received.next(is_kind(CallFrame.KIND_CANCEL, opened.call_id))


async def test_a_stream_that_fails_midway_raises_after_its_chunks(
    sidecar: SidecarDouble, callers: list[MeshCaller]
) -> None:
    async def fail_midway(open_frame: agent_pb2.CallFrame, session: CallSession) -> None:
        await session.send(
            CallFrame(call_id=open_frame.call_id, kind=CallFrame.KIND_DATA, payload=b"first", sequence=1),
            CallFrame(
                call_id=open_frame.call_id,
                kind=CallFrame.KIND_END,
                status_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                status_message="bad token",
            ),
        )

    sidecar.call_script = fail_midway
    caller = new_caller(sidecar, callers)
    received: list[bytes] = []
    with pytest.raises(InvalidArgument, match="bad token"):
        async for chunk in caller.invoke_stream("tokens"):
            received.append(chunk)
    assert received == [b"first"]


async def test_a_broken_stream_fails_calls_in_flight_and_later_calls_wait_for_the_reconnect(
    sidecar: SidecarDouble, callers: list[MeshCaller]
) -> None:
    sidecar.call_script = never_answer
    caller = new_caller(sidecar, callers)
    in_flight = asyncio.ensure_future(caller.invoke("slow", b""))
    session = await sidecar.call_stream()
    await session.received.next(is_kind(CallFrame.KIND_OPEN))
    port = sidecar.port
    await sidecar.stop()
    with pytest.raises(Unavailable):
        await in_flight

    restarted = SidecarDouble()
    restarted.call_script = echo
    later = asyncio.ensure_future(caller.invoke("text.echo", "back", timeout_s=WAIT_S))
    await restarted.start(port)
    try:
        result = await later
        assert result.payload == b"echo:back"
    finally:
        await restarted.stop()


async def test_without_a_sidecar_a_call_fails_unavailable_at_its_deadline(callers: list[MeshCaller]) -> None:
    nobody = SidecarDouble()
    await nobody.start()
    address = nobody.address
    await nobody.stop()
    caller = MeshCaller(address, backoff=FAST_BACKOFF)
    callers.append(caller)
    with pytest.raises(Unavailable):
        await caller.invoke("text.echo", b"", timeout_s=0.3)


async def test_answers_pings_on_the_call_stream(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    sidecar.call_script = echo
    caller = new_caller(sidecar, callers)
    await caller.invoke("text.echo", b"warm")
    session = await sidecar.call_stream()
    await session.send(CallFrame(call_id=0, kind=CallFrame.KIND_PING, sequence=5))
    pong = await session.received.next(is_kind(CallFrame.KIND_PONG))
    assert (pong.call_id, pong.sequence) == (0, 5)


async def test_a_full_window_is_resource_exhausted(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    sidecar.call_script = never_answer
    caller = new_caller(sidecar, callers, window_size=2)
    first = [asyncio.ensure_future(caller.invoke("slow", b"")) for _ in range(2)]
    session = await sidecar.call_stream()
    for call_id in (1, 2):
        await session.received.next(is_kind(CallFrame.KIND_OPEN, call_id))
    with pytest.raises(ResourceExhausted):
        await caller.invoke("slow", b"")
    for task in first:
        task.cancel()
    await asyncio.gather(*first, return_exceptions=True)


async def test_discover_asks_the_sidecar(sidecar: SidecarDouble, callers: list[MeshCaller]) -> None:
    sidecar.discover_answer = [types_pb2.AgentInstance(instance_id="i-1")]
    caller = new_caller(sidecar, callers)
    instances = await caller.discover("text.echo", "^1", {"env": "prod"})
    assert [instance.instance_id for instance in instances] == ["i-1"]
    request = sidecar.discover_requests[0]
    assert (request.capability, request.version_range, dict(request.label_selector.match_labels)) == (
        "text.echo",
        "^1",
        {"env": "prod"},
    )


async def test_a_closed_caller_refuses_calls(sidecar: SidecarDouble) -> None:
    caller = MeshCaller(sidecar.address)
    await caller.close()
    with pytest.raises(Unavailable, match="caller closed"):
        await caller.invoke("text.echo", b"")


def test_bad_arguments_are_refused_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMESH_SIDECAR_ADDR", raising=False)
    with pytest.raises(ValueError, match="AGENTMESH_SIDECAR_ADDR is not set"):
        MeshCaller()
    with pytest.raises(ValueError, match="default_timeout_s must be positive"):
        MeshCaller("127.0.0.1:1", default_timeout_s=0)


@pytest.mark.parametrize("timeout_s", [0, -1.5])
async def test_a_deadline_already_passed_fails_without_sending(
    sidecar: SidecarDouble, callers: list[MeshCaller], timeout_s: float
) -> None:
    sidecar.call_script = echo
    caller = new_caller(sidecar, callers)
    with pytest.raises(DeadlineExceeded):
        await caller.invoke("text.echo", b"", timeout_s=timeout_s)
    with pytest.raises(DeadlineExceeded):
        async for _ in caller.invoke_stream("text.words", b"a", timeout_s=timeout_s):
            pass
    await caller.invoke("text.echo", b"")
    session = await sidecar.call_stream()
    opens = [frame for frame in session.received.frames if frame.kind == CallFrame.KIND_OPEN]
    assert len(opens) == 1
