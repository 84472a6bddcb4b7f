"""Serving over Attach: frames in and out, readiness, pings, cancel, reconnect, orphan, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from agentmesh import Agent, InvalidArgument, InvocationContext, Serving
from agentmesh._backoff import BackoffPolicy
from agentmesh.errors import Unavailable
from agentmesh.v1 import agent_pb2, types_pb2
from sidecar_double import WAIT_S, CallFrame, SidecarDouble, open_invocation

FAST_BACKOFF = BackoffPolicy(initial_s=0.01, max_s=0.05)
OK = 0


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Yields to the loop until `condition` holds (state changes made by other tasks), bounded."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (Serving's state has no event of its own)
            await asyncio.sleep(0)


FramePredicate = Callable[[agent_pb2.CallFrame], bool]


def is_pong(sequence: int) -> FramePredicate:
    return lambda frame: frame.kind == CallFrame.KIND_PONG and frame.sequence == sequence


def is_reply(call_id: int) -> FramePredicate:
    return lambda frame: frame.call_id == call_id and frame.kind in (CallFrame.KIND_DATA, CallFrame.KIND_END)


def is_end(call_id: int) -> FramePredicate:
    return lambda frame: (
        frame.call_id == call_id
        and (frame.kind == CallFrame.KIND_END or (frame.kind == CallFrame.KIND_DATA and frame.end))
    )


class Probe:
    """Lets a test hold a handler mid-call and see it start, finish or be cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = asyncio.Event()


@pytest.fixture
async def served() -> AsyncIterator[list[Serving]]:
    servings: list[Serving] = []
    yield servings
    for serving in servings:
        serving.close()
        await asyncio.wait_for(serving.wait_closed(), WAIT_S)


def echo_agent(probe: Probe | None = None) -> Agent:
    agent = Agent()

    @agent.unary("text.upper")
    async def upper(payload: bytes, context: InvocationContext) -> str:
        return payload.decode().upper()

    @agent.unary("text.hold")
    async def hold(payload: bytes, context: InvocationContext) -> bytes:
        assert probe is not None
        probe.started.set()
        try:
            await probe.release.wait()
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        probe.finished.set()
        return b"held:" + payload

    @agent.unary("text.reject")
    async def reject(payload: bytes, context: InvocationContext) -> bytes:
        raise InvalidArgument("payload must be JSON")

    @agent.unary("text.crash")
    async def crash(payload: bytes, context: InvocationContext) -> bytes:
        raise RuntimeError("secret internal detail /etc/passwd")

    @agent.stream("text.words")
    async def words(payload: bytes, context: InvocationContext) -> AsyncIterator[str]:
        for word in payload.decode().split():
            yield word

    return agent


async def start(agent: Agent, sidecar: SidecarDouble, served: list[Serving], **options: object) -> Serving:
    serving = await agent.start(
        sidecar_address=sidecar.address,
        instance_id=str(options.pop("instance_id", "py-1")),
        backoff=FAST_BACKOFF,
        orphan_timeout_s=float(options.pop("orphan_timeout_s", 0)),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    served.append(serving)
    return serving


async def test_attaches_with_its_instance_id_and_is_ready_once_welcomed(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    serving = await start(echo_agent(), sidecar, served, instance_id="py-ready")
    await asyncio.wait_for(serving.ready, WAIT_S)
    session = await sidecar.attached()
    assert session.hello.instance_id == "py-ready"
    assert not session.hello.HasField("manifest")
    assert serving.state == "attached"


async def test_hello_carries_the_manifest_of_an_agent_started_outside_the_sidecar(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    manifest = types_pb2.AgentManifest(name="py-agent", version="1.2.3")
    await start(echo_agent(), sidecar, served, manifest=manifest)
    session = await sidecar.attached()
    assert session.hello.manifest.name == "py-agent"
    assert session.hello.manifest.version == "1.2.3"


async def test_answers_a_unary_call_with_one_data_frame(sidecar: SidecarDouble, served: list[Serving]) -> None:
    await start(echo_agent(), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(7, "text.upper", b"hello"))
    reply = await session.received.next(is_reply(7))
    assert reply.kind == CallFrame.KIND_DATA
    assert reply.end
    assert reply.payload == b"HELLO"


async def test_takes_calls_in_the_single_frame_form_too(sidecar: SidecarDouble, served: list[Serving]) -> None:
    await start(echo_agent(), sidecar, served)
    session = await sidecar.attached()
    await session.send_single(open_invocation(8, "text.upper", b"single"))
    reply = await session.received.next(is_reply(8))
    assert reply.payload == b"SINGLE"


async def test_streams_chunks_in_sequence_then_ends_ok(sidecar: SidecarDouble, served: list[Serving]) -> None:
    await start(echo_agent(), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(3, "text.words", b"one two three", streaming=True))
    await session.received.next(is_end(3))
    frames = session.received.of_call(3)
    data = [frame for frame in frames if frame.kind == CallFrame.KIND_DATA]
    assert [frame.payload for frame in data] == [b"one", b"two", b"three"]
    assert [frame.sequence for frame in data] == [1, 2, 3]
    assert frames[-1].kind == CallFrame.KIND_END
    assert frames[-1].status_code == OK


async def test_a_streaming_call_to_a_unary_handler_gets_its_reply_whole(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    await start(echo_agent(), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(4, "text.upper", b"abc", streaming=True))
    reply = await session.received.next(is_reply(4))
    assert (reply.kind, reply.end, reply.payload) == (CallFrame.KIND_DATA, True, b"ABC")


@pytest.mark.parametrize(
    ("capability", "code", "message"),
    [
        ("no.such", grpc.StatusCode.NOT_FOUND, "capability no.such not served here"),
        ("text.reject", grpc.StatusCode.INVALID_ARGUMENT, "payload must be JSON"),
        # Anything but a MeshError stays inside the agent: generic INTERNAL, no details.
        ("text.crash", grpc.StatusCode.INTERNAL, "agent failed"),
    ],
)
async def test_failures_end_the_call_with_a_status(
    sidecar: SidecarDouble, served: list[Serving], capability: str, code: grpc.StatusCode, message: str
) -> None:
    await start(echo_agent(), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(5, capability, b"x"))
    reply = await session.received.next(is_reply(5))
    assert reply.kind == CallFrame.KIND_END
    assert reply.status_code == code.value[0]
    assert reply.status_message == message
    assert not reply.refused_before_delivery


async def test_cancel_frame_cancels_the_handler_and_sends_nothing(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    probe = Probe()
    await start(echo_agent(probe), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(9, "text.hold", b"x"))
    await asyncio.wait_for(probe.started.wait(), WAIT_S)
    await session.send(CallFrame(call_id=9, kind=CallFrame.KIND_CANCEL))
    await asyncio.wait_for(probe.cancelled.wait(), WAIT_S)
    # A later call's reply proves the stream moved on; nothing was sent for call 9.
    await session.send(open_invocation(10, "text.upper", b"after"))
    await session.received.next(is_reply(10))
    assert session.received.of_call(9) == []


async def test_answers_pings_at_once_while_handlers_are_busy(sidecar: SidecarDouble, served: list[Serving]) -> None:
    probe = Probe()
    blocking_release = threading.Event()
    agent = echo_agent(probe)

    @agent.unary("cpu.block")
    def block(payload: bytes, context: InvocationContext) -> bytes:
        # A plain def runs in a thread, so blocking here cannot stall the stream.
        blocking_release.wait(WAIT_S)
        return b"unblocked"

    await start(agent, sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "text.hold", b"x"), open_invocation(2, "cpu.block", b"y"))
    await asyncio.wait_for(probe.started.wait(), WAIT_S)
    for sequence in (41, 42):
        await session.send(CallFrame(call_id=0, kind=CallFrame.KIND_PING, sequence=sequence))
        pong = await session.received.next(is_pong(sequence))
        assert pong.call_id == 0
    assert session.received.of_call(1) == [] and session.received.of_call(2) == []
    probe.release.set()
    blocking_release.set()
    assert (await session.received.next(is_reply(1))).payload == b"held:x"
    assert (await session.received.next(is_reply(2))).payload == b"unblocked"


async def test_plain_generators_stream_from_a_thread(sidecar: SidecarDouble, served: list[Serving]) -> None:
    agent = Agent()

    @agent.stream("count")
    def count(payload: bytes, context: InvocationContext) -> Iterator[bytes]:
        for number in range(int(payload)):
            yield str(number).encode()

    await start(agent, sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "count", b"3", streaming=True))
    await session.received.next(is_end(1))
    assert [frame.payload for frame in session.received.of_call(1) if frame.kind == CallFrame.KIND_DATA] == [
        b"0",
        b"1",
        b"2",
    ]


async def test_context_carries_the_invocation(sidecar: SidecarDouble, served: list[Serving]) -> None:
    seen: list[InvocationContext] = []
    agent = Agent()

    @agent.unary("who")
    async def who(payload: bytes, context: InvocationContext) -> bytes:
        seen.append(context)
        return b""

    await start(agent, sidecar, served)
    session = await sidecar.attached()
    await session.send(
        open_invocation(
            1,
            "who",
            version="1.4.0",
            caller="spiffe://mesh.local/agent/caller",
            metadata={"k": "v"},
            deadline_ms=0,
            traceparent="00-abc-def-01",
        )
    )
    await session.received.next(is_reply(1))
    context = seen[0]
    assert (context.capability, context.version, context.caller) == ("who", "1.4.0", "spiffe://mesh.local/agent/caller")
    assert dict(context.metadata) == {"k": "v"}
    assert context.traceparent == "00-abc-def-01"
    assert context.remaining_s() is None


async def test_reattaches_after_the_sidecar_restarts(sidecar: SidecarDouble, served: list[Serving]) -> None:
    serving = await start(echo_agent(), sidecar, served)
    await sidecar.attached()
    port = sidecar.port
    await sidecar.stop()
    restarted = SidecarDouble()
    await restarted.start(port)
    try:
        session = await restarted.attached()
        assert session.hello.instance_id == "py-1"
        await session.send(open_invocation(1, "text.upper", b"again"))
        assert (await session.received.next(is_reply(1))).payload == b"AGAIN"
        assert serving.state == "attached"
    finally:
        await restarted.stop()


async def test_calls_in_flight_are_cancelled_when_the_stream_breaks(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    probe = Probe()
    await start(echo_agent(probe), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "text.hold", b"x"))
    await asyncio.wait_for(probe.started.wait(), WAIT_S)
    await sidecar.stop()
    await asyncio.wait_for(probe.cancelled.wait(), WAIT_S)


async def test_gives_up_as_an_orphan_when_the_sidecar_is_gone(sidecar: SidecarDouble, served: list[Serving]) -> None:
    orphaned = asyncio.Event()
    serving = await start(echo_agent(), sidecar, served, orphan_timeout_s=0.3, on_orphaned=orphaned.set)
    await asyncio.wait_for(serving.ready, WAIT_S)
    assert not orphaned.is_set()
    await sidecar.stop()
    await asyncio.wait_for(orphaned.wait(), WAIT_S)
    await asyncio.wait_for(serving.wait_closed(), WAIT_S)
    assert serving.orphaned
    assert serving.state == "closed"


async def test_an_instance_the_sidecar_refuses_is_orphaned_and_never_ready(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    sidecar.refuse_attach = (grpc.StatusCode.NOT_FOUND, "unknown instance")
    serving = await start(echo_agent(), sidecar, served, orphan_timeout_s=0.3)
    await asyncio.wait_for(serving.wait_closed(), WAIT_S)
    assert serving.orphaned
    with pytest.raises(Unavailable):
        await serving.ready


async def test_shutdown_finishes_calls_in_flight_and_refuses_new_ones(
    sidecar: SidecarDouble, served: list[Serving]
) -> None:
    probe = Probe()
    serving = await start(echo_agent(probe), sidecar, served, shutdown_grace_s=WAIT_S)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "text.hold", b"in-flight"))
    await asyncio.wait_for(probe.started.wait(), WAIT_S)

    shutdown = asyncio.ensure_future(serving.shutdown())
    await until(lambda: serving.state == "draining")
    await session.send(open_invocation(2, "text.upper", b"late"))
    refused = await session.received.next(is_reply(2))
    assert refused.kind == CallFrame.KIND_END
    assert refused.status_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert refused.refused_before_delivery
    await session.send(CallFrame(call_id=0, kind=CallFrame.KIND_PING, sequence=7))
    await session.received.next(is_pong(7))
    assert not shutdown.done()

    probe.release.set()
    reply = await session.received.next(is_reply(1))
    assert reply.payload == b"held:in-flight"
    await asyncio.wait_for(session.agent_ended.wait(), WAIT_S)
    await asyncio.wait_for(shutdown, WAIT_S)
    assert serving.state == "closed"
    assert not serving.orphaned


async def test_shutdown_stops_calls_that_outlast_the_grace(sidecar: SidecarDouble, served: list[Serving]) -> None:
    probe = Probe()
    serving = await start(echo_agent(probe), sidecar, served)
    session = await sidecar.attached()
    await session.send(open_invocation(1, "text.hold", b"x"))
    await asyncio.wait_for(probe.started.wait(), WAIT_S)
    await asyncio.wait_for(serving.shutdown(grace_s=0.1), WAIT_S)
    assert probe.cancelled.is_set()
    reply = await session.received.next(is_reply(1))
    assert reply.kind == CallFrame.KIND_END
    assert reply.status_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert not reply.refused_before_delivery


async def test_requires_the_sidecar_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMESH_SIDECAR_ADDR", raising=False)
    monkeypatch.delenv("AGENTMESH_INSTANCE_ID", raising=False)
    with pytest.raises(ValueError, match="AGENTMESH_SIDECAR_ADDR is not set"):
        await Agent().start()
    monkeypatch.setenv("AGENTMESH_SIDECAR_ADDR", "127.0.0.1:1")
    with pytest.raises(ValueError, match="AGENTMESH_INSTANCE_ID is not set"):
        await Agent().start()


async def test_reads_address_and_instance_from_the_environment(
    sidecar: SidecarDouble, served: list[Serving], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMESH_SIDECAR_ADDR", sidecar.address)
    monkeypatch.setenv("AGENTMESH_INSTANCE_ID", "from-env")
    serving = await echo_agent().start(orphan_timeout_s=0)
    served.append(serving)
    assert (await sidecar.attached()).hello.instance_id == "from-env"


def test_handlers_register_by_decorator_or_dict() -> None:
    async def upper(payload: bytes, context: InvocationContext) -> bytes:
        return payload.upper()

    by_dict = Agent(handlers={"a": upper})
    by_decorator = Agent()
    assert by_decorator.unary("a")(upper) is upper
    assert by_dict.handlers == by_decorator.handlers == {"a": upper}


async def test_giving_up_on_ready_does_not_cancel_readiness(served: list[Serving]) -> None:
    later = SidecarDouble()
    await later.start()
    port = later.port
    await later.stop()
    serving = await Agent().start(
        sidecar_address=f"127.0.0.1:{port}", instance_id="py-late", backoff=FAST_BACKOFF, orphan_timeout_s=0
    )
    served.append(serving)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(serving.ready, 0.05)
    await later.start(port)
    try:
        await asyncio.wait_for(serving.ready, WAIT_S)
        assert serving.state == "attached"
    finally:
        await later.stop()
