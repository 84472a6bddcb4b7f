"""Serving an agent's capabilities over ONE stream to its sidecar (SidecarService.Attach).

The agent needs no listening port, and the sidecar sees its death the moment the
stream breaks. Invocations arrive as OPEN frames and are answered with DATA/END
frames under the same call id; the sidecar's PING frames are answered with a
PONG straight from the stream reader, never behind handler work, so a busy agent
is never mistaken for a hung one (a handler that blocks the event loop is: run
blocking work in a plain ``def`` handler, which runs in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias, TypedDict, TypeVar, cast

import grpc
import grpc.aio

from agentmesh import _frames
from agentmesh._backoff import Backoff, BackoffPolicy
from agentmesh._outbox import FrameOutbox
from agentmesh.errors import MeshError, NotFound, Unavailable
from agentmesh.v1 import agent_pb2, types_pb2

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Agent",
    "HandlerResult",
    "InvocationContext",
    "ServeOptions",
    "Serving",
    "ServingState",
    "StreamHandler",
    "UnaryHandler",
]

#: What a handler answers: bytes, or a str sent as UTF-8.
HandlerResult: TypeAlias = bytes | bytearray | memoryview | str
#: ``async def handler(payload, context) -> bytes | str`` (or a plain ``def``, run in a thread).
UnaryHandler: TypeAlias = Callable[["bytes", "InvocationContext"], "Awaitable[HandlerResult] | HandlerResult"]
#: ``async def handler(payload, context)`` yielding chunks (or a plain generator, run in a thread).
StreamHandler: TypeAlias = Callable[
    ["bytes", "InvocationContext"], "AsyncIterable[HandlerResult] | Iterable[HandlerResult]"
]
HandlerT = TypeVar("HandlerT", bound=Callable[..., object])

#: connecting: stream opened, no welcome yet; attached: welcomed, taking calls;
#: backoff: the stream broke, a reopen is scheduled; draining: shutting down,
#: refusing new calls while running ones finish; closed: done.
ServingState: TypeAlias = Literal["connecting", "attached", "backoff", "draining", "closed"]

DEFAULT_ORPHAN_TIMEOUT_S = 15.0
# Under the sidecar's default 5 s between SIGTERM and SIGKILL, so the agent's own
# deadline, not the kill, ends the calls that outlast it.
DEFAULT_SHUTDOWN_GRACE_S = 4.0
# Replies already queued when shutdown ends get this long to reach the sidecar.
_FLUSH_TIMEOUT_S = 1.0
_log = logging.getLogger("agentmesh.agent")


class ServeOptions(TypedDict, total=False):
    """The keyword options of :meth:`Agent.start`, :meth:`Agent.serve` and :meth:`Agent.run`."""

    sidecar_address: str
    instance_id: str
    manifest: types_pb2.AgentManifest
    orphan_timeout_s: float
    on_orphaned: Callable[[], None]
    shutdown_grace_s: float
    backoff: BackoffPolicy


@dataclass(frozen=True)
class InvocationContext:
    """One invocation as a handler sees it."""

    invocation: agent_pb2.Invocation
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def capability(self) -> str:
        return self.invocation.capability

    @property
    def version(self) -> str:
        """The capability version the caller was routed to."""
        return self.invocation.version

    @property
    def caller(self) -> str:
        """SPIFFE ID of the calling agent or client, as the sidecar verified it."""
        return self.invocation.caller

    @property
    def content_type(self) -> str:
        return self.invocation.content_type

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.invocation.metadata

    @property
    def traceparent(self) -> str:
        return self.invocation.traceparent

    @property
    def deadline_ms(self) -> int:
        """Absolute deadline, Unix epoch ms (0 = none)."""
        return self.invocation.deadline_ms

    def remaining_s(self) -> float | None:
        """Seconds left before the caller's deadline (None = no deadline); pass it on as ``timeout_s``."""
        if self.invocation.deadline_ms <= 0:
            return None
        return max(0.0, self.invocation.deadline_ms / 1000 - time.time())

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up; plain ``def`` handlers (in threads) poll it to stop early.

        ``async def`` handlers need not: their task is cancelled (CancelledError).
        """
        return self._cancelled.is_set()


class Agent:
    """The capabilities an agent serves, by name.

    Register handlers with the decorators or the dicts::

        agent = Agent()

        @agent.unary("text.upper")
        async def upper(payload: bytes, context: InvocationContext) -> str:
            return payload.decode().upper()

        agent.run()
    """

    def __init__(
        self,
        *,
        handlers: Mapping[str, UnaryHandler] | None = None,
        stream_handlers: Mapping[str, StreamHandler] | None = None,
    ) -> None:
        self.handlers: dict[str, UnaryHandler] = dict(handlers or {})
        self.stream_handlers: dict[str, StreamHandler] = dict(stream_handlers or {})

    def unary(self, capability: str) -> Callable[[HandlerT], HandlerT]:
        """Decorator: the handler answers ``capability`` with one reply."""

        def register(handler: HandlerT) -> HandlerT:
            self.handlers[capability] = cast(UnaryHandler, handler)
            return handler

        return register

    def stream(self, capability: str) -> Callable[[HandlerT], HandlerT]:
        """Decorator: the handler (an async generator) answers ``capability`` with a stream of chunks."""

        def register(handler: HandlerT) -> HandlerT:
            self.stream_handlers[capability] = cast(StreamHandler, handler)
            return handler

        return register

    async def start(self, **options: Unpack[ServeOptions]) -> Serving:
        """Opens the Attach stream and returns at once; ``await serving.ready`` waits for the welcome.

        ``sidecar_address`` and ``instance_id`` default to AGENTMESH_SIDECAR_ADDR and
        AGENTMESH_INSTANCE_ID (the sidecar sets both when it starts the agent).
        ``manifest`` lets an agent started outside the sidecar register itself.
        Without a sidecar for ``orphan_timeout_s`` (it died, or no longer knows this
        instance) the agent is an orphan: ``on_orphaned`` runs and serving closes,
        so a killed sidecar leaves no agents behind (0 disables).
        """
        address = options.get("sidecar_address") or os.environ.get("AGENTMESH_SIDECAR_ADDR", "")
        instance = options.get("instance_id") or os.environ.get("AGENTMESH_INSTANCE_ID", "")
        if not address:
            raise ValueError("AGENTMESH_SIDECAR_ADDR is not set: run the agent under an agentmesh sidecar")
        if not instance:
            raise ValueError("AGENTMESH_INSTANCE_ID is not set: run the agent under an agentmesh sidecar")
        serving = Serving(
            self,
            address=address,
            instance_id=instance,
            manifest=options.get("manifest"),
            orphan_timeout_s=options.get("orphan_timeout_s", DEFAULT_ORPHAN_TIMEOUT_S),
            on_orphaned=options.get("on_orphaned"),
            shutdown_grace_s=options.get("shutdown_grace_s", DEFAULT_SHUTDOWN_GRACE_S),
            backoff=options.get("backoff", BackoffPolicy()),
        )
        serving._begin()
        return serving

    async def serve(self, **options: Unpack[ServeOptions]) -> Serving:
        """Serves until SIGTERM/SIGINT (graceful shutdown; a second signal stops at once) or orphaned.

        Takes the options of :meth:`start`; returns the closed Serving.
        """
        serving = await self.start(**options)
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []

        def on_signal() -> None:
            if serving.state == "draining":
                serving.close()
            else:
                serving.shutdown_soon()

        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, on_signal)
                installed.append(signum)
        try:
            await serving.wait_closed()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
        return serving

    def run(self, **options: Unpack[ServeOptions]) -> None:
        """The blocking entry point of an agent program: serve, then exit (status 1 when orphaned)."""
        serving = asyncio.run(self.serve(**options))
        if serving.orphaned:
            sys.exit(1)


@dataclass
class _AttachStream:
    """One open Attach stream and the calls running on it."""

    call: grpc.aio.StreamStreamCall[agent_pb2.AttachRequest, agent_pb2.AttachResponse]
    outbox: FrameOutbox[agent_pb2.AttachRequest]
    running: dict[int, tuple[asyncio.Task[None], InvocationContext]] = field(default_factory=dict)
    # Calls cut short by the end of the shutdown grace (they get END UNAVAILABLE).
    forced: set[int] = field(default_factory=set)


class Serving:
    """A running agent: its Attach stream, reconnects, orphan timer and shutdown."""

    def __init__(
        self,
        agent: Agent,
        *,
        address: str,
        instance_id: str,
        manifest: types_pb2.AgentManifest | None,
        orphan_timeout_s: float,
        on_orphaned: Callable[[], None] | None,
        shutdown_grace_s: float,
        backoff: BackoffPolicy,
    ) -> None:
        self._agent = agent
        self.address = address
        self.instance_id = instance_id
        self._manifest = manifest
        self._orphan_timeout_s = orphan_timeout_s
        self._on_orphaned = on_orphaned
        self._shutdown_grace_s = shutdown_grace_s
        self._backoff = Backoff(backoff)
        self._loop = asyncio.get_running_loop()
        self._state: ServingState = "connecting"
        self._ready: asyncio.Future[None] = self._loop.create_future()
        # Nobody may ever await `ready` (an orphan that never attached): never warn about it.
        self._ready.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._closed = asyncio.Event()
        self._stop = asyncio.Event()
        self._stream: _AttachStream | None = None
        self._orphan_timer: asyncio.TimerHandle | None = None
        self._main: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._last_stream_error = ""
        self.orphaned = False
        self._log = logging.LoggerAdapter(_log, {"instance_id": instance_id})
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                # Keep the channel's own reconnects at our pace instead of gRPC's 1 s..120 s default.
                ("grpc.initial_reconnect_backoff_ms", int(backoff.initial_s * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(backoff.max_s * 1000)),
                ("grpc.enable_retries", 0),
            ],
        )
        self._attach: grpc.aio.StreamStreamMultiCallable[agent_pb2.AttachRequest, agent_pb2.AttachResponse] = (
            self._channel.stream_stream(
                _frames.ATTACH_METHOD,
                request_serializer=agent_pb2.AttachRequest.SerializeToString,
                response_deserializer=agent_pb2.AttachResponse.FromString,
            )
        )

    @property
    def ready(self) -> asyncio.Future[None]:
        """Resolves once the sidecar welcomed the stream; raises Unavailable if serving closed first.

        Shielded: a caller that gives up waiting (``wait_for`` timing out) does not cancel readiness.
        """
        return asyncio.shield(self._ready)

    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._stream.running) if self._stream else 0

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self) -> None:
        """Stops now: running calls are cancelled, the stream and channel close."""
        if self._state == "closed":
            return
        self._stop.set()
        if self._stream is not None:
            self._stream.call.cancel()

    def shutdown_soon(self) -> None:
        """Starts :meth:`shutdown` in the background (for signal handlers)."""
        if self._shutdown_task is None:
            self._shutdown_task = self._loop.create_task(self.shutdown())

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Graceful stop: refuse new calls, let running ones finish within the grace, then close.

        New OPENs are answered UNAVAILABLE with ``refused_before_delivery`` so the
        sidecar can send them elsewhere; calls still running when the grace ends
        are cancelled and answered UNAVAILABLE. PINGs are answered throughout.
        """
        if self._state in ("draining", "closed"):
            await self.wait_closed()
            return
        grace = self._shutdown_grace_s if grace_s is None else grace_s
        self._transition("draining")
        stream = self._stream
        if stream is not None and stream.running:
            self._log.info("draining %d call(s), grace %.1f s", len(stream.running), grace)
            tasks = [task for task, _ in stream.running.values()]
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                self._log.warning("shutdown grace over, stopping %d call(s)", len(pending))
                for call_id, (task, _) in list(stream.running.items()):
                    if task in pending:
                        stream.forced.add(call_id)
                        task.cancel()
                # Bounded: a handler that swallows its cancellation must not hold the exit.
                await asyncio.wait(pending, timeout=_FLUSH_TIMEOUT_S)
        if stream is not None and not stream.outbox.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stream.outbox.flushed(), _FLUSH_TIMEOUT_S)
            # Half-close: the sidecar sees the agent leave in order and ends its side.
            with contextlib.suppress(Exception):
                await stream.call.done_writing()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed.wait()), _FLUSH_TIMEOUT_S)
        self.close()
        await self.wait_closed()

    # -- lifecycle -----------------------------------------------------------

    def _begin(self) -> None:
        self._arm_orphan_timer()
        self._main = self._loop.create_task(self._run(), name=f"agentmesh-attach-{self.instance_id}")

    def _transition(self, state: ServingState) -> None:
        if self._state == state or self._state == "closed":
            return
        self._log.debug("serving %s -> %s", self._state, state)
        self._state = state

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._attach_once()
                except Exception as error:  # the stream broke: reconnect below
                    self._log_stream_error(error)
                if self._stop.is_set() or self._state == "draining":
                    break
                self._transition("backoff")
                self._arm_orphan_timer()
                delay_s = self._backoff.next_delay_s()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay_s)
                if not self._stop.is_set():
                    self._transition("connecting")
        finally:
            self._disarm_orphan_timer()
            if not self._ready.done():
                self._ready.set_exception(Unavailable("agent closed before its sidecar welcomed it"))
            self._transition("closed")
            try:
                await self._channel.close()
            finally:
                self._closed.set()

    def _log_stream_error(self, error: Exception) -> None:
        if isinstance(error, grpc.aio.AioRpcError):
            if error.code() == grpc.StatusCode.CANCELLED and self._stop.is_set():
                return
            reason = f"{error.code().name} {error.details()}"
        else:
            reason = repr(error)
        # The first failure (or a new reason) at warning; the same one again every backoff step at debug.
        level = logging.DEBUG if reason == self._last_stream_error else logging.WARNING
        self._last_stream_error = reason
        self._log.log(level, "attach stream lost: %s", reason)

    def _arm_orphan_timer(self) -> None:
        if self._orphan_timeout_s <= 0 or self._orphan_timer is not None or self._stop.is_set():
            return
        self._orphan_timer = self._loop.call_later(self._orphan_timeout_s, self._orphaned)

    def _disarm_orphan_timer(self) -> None:
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None

    def _orphaned(self) -> None:
        self._orphan_timer = None
        if self._stop.is_set():
            return
        self._log.error("no sidecar for %.1f s: exiting as an orphan", self._orphan_timeout_s)
        self.orphaned = True
        if self._on_orphaned is not None:
            self._on_orphaned()
        self.close()

    # -- one stream ------------------------------------------------------------

    async def _attach_once(self) -> None:
        call = self._attach()
        outbox: FrameOutbox[agent_pb2.AttachRequest] = FrameOutbox(
            lambda frames: agent_pb2.AttachRequest(replies=frames)
        )
        stream = _AttachStream(call=call, outbox=outbox)
        self._stream = stream
        writer: asyncio.Task[None] | None = None
        try:
            hello = agent_pb2.AttachHello(instance_id=self.instance_id)
            if self._manifest is not None:
                hello.manifest.CopyFrom(self._manifest)
            await call.write(agent_pb2.AttachRequest(hello=hello))
            writer = self._loop.create_task(outbox.run(call))
            while True:
                try:
                    response = await call.read()
                except asyncio.CancelledError:
                    # close() cancels the call, and grpc.aio reports that to a pending
                    # read as CancelledError; a cancel of this task itself propagates.
                    task = asyncio.current_task()
                    if self._stop.is_set() and task is not None and task.cancelling() == 0:
                        return
                    raise
                if response is grpc.aio.EOF:
                    return
                self._receive(stream, cast(agent_pb2.AttachResponse, response))
        finally:
            self._stream = None
            outbox.close()
            for task, context in stream.running.values():
                context._cancelled.set()
                task.cancel()
            if stream.running:
                # Bounded, as in shutdown(): reconnecting must not wait on a handler that ignores its cancel.
                await asyncio.wait([task for task, _ in stream.running.values()], timeout=_FLUSH_TIMEOUT_S)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
            call.cancel()

    def _receive(self, stream: _AttachStream, response: agent_pb2.AttachResponse) -> None:
        which = response.WhichOneof("msg")
        if which == "welcome":
            self._on_welcome()
        elif which == "call":
            self._on_frame(stream, response.call)
        for frame in response.calls:
            self._on_frame(stream, frame)

    def _on_welcome(self) -> None:
        self._backoff.reset()
        self._last_stream_error = ""
        self._disarm_orphan_timer()
        if self._state != "draining":
            self._transition("attached")
        self._log.info("attached to sidecar at %s", self.address)
        if not self._ready.done():
            self._ready.set_result(None)

    def _on_frame(self, stream: _AttachStream, frame: agent_pb2.CallFrame) -> None:
        kind = frame.kind
        if kind == _frames.KIND_PING:
            # Synchronously, from the reader: the answer never waits for handlers.
            stream.outbox.push_urgent(_frames.pong_frame(frame.sequence))
        elif kind == _frames.KIND_OPEN:
            self._open(stream, frame)
        elif kind == _frames.KIND_CANCEL:
            entry = stream.running.get(frame.call_id)
            if entry is not None:
                task, context = entry
                context._cancelled.set()
                task.cancel()
        else:
            self._log.debug("ignored frame kind %d for call %d", kind, frame.call_id)

    def _open(self, stream: _AttachStream, frame: agent_pb2.CallFrame) -> None:
        call_id = frame.call_id
        if call_id in stream.running:
            self._log.warning("duplicate call id %d on the attach stream", call_id)
            return
        if self._state == "draining" or self._stop.is_set():
            stream.outbox.push(
                _frames.end_frame(
                    call_id,
                    grpc.StatusCode.UNAVAILABLE.value[0],
                    "agent shutting down",
                    refused_before_delivery=True,
                )
            )
            return
        if not frame.HasField("invocation"):
            stream.outbox.push(
                _frames.end_frame(
                    call_id, grpc.StatusCode.INVALID_ARGUMENT.value[0], "open frame carries no invocation"
                )
            )
            return
        context = InvocationContext(frame.invocation)
        task = self._loop.create_task(self._handle(stream, frame, context))
        stream.running[call_id] = (task, context)

    async def _handle(self, stream: _AttachStream, frame: agent_pb2.CallFrame, context: InvocationContext) -> None:
        call_id = frame.call_id
        outbox = stream.outbox
        invocation = frame.invocation
        try:
            payload = invocation.payload
            stream_handler = self._agent.stream_handlers.get(invocation.capability)
            if frame.streaming and stream_handler is not None:
                sequence = 0
                async with contextlib.aclosing(_iterate(stream_handler(payload, context))) as chunks:
                    async for chunk in chunks:
                        if context.cancelled:
                            return
                        sequence += 1
                        outbox.push(_frames.data_frame(call_id, _to_bytes(chunk), sequence=sequence))
                        # A fast producer waits for the sidecar to read instead of growing the queue.
                        await outbox.writable()
                if not context.cancelled:
                    outbox.push(_frames.end_frame(call_id))
                return
            handler = self._agent.handlers.get(invocation.capability)
            if handler is None:
                raise NotFound(f"capability {invocation.capability} not served here")
            result = await _call_unary(handler, payload, context)
            if not context.cancelled:
                outbox.push(_frames.data_frame(call_id, _to_bytes(result), end=True))
        except asyncio.CancelledError:
            if call_id in stream.forced:
                outbox.push(
                    _frames.end_frame(
                        call_id, grpc.StatusCode.UNAVAILABLE.value[0], "agent stopped before the call finished"
                    )
                )
            # Otherwise the caller gave up or the stream is gone: nobody waits for an END.
        except MeshError as error:
            # The handler chose what the caller sees.
            if not context.cancelled:
                outbox.push(_frames.end_frame(call_id, error.code_value, error.message))
        except Exception:
            self._log.exception("handler for %s failed (call %d)", invocation.capability, call_id)
            if not context.cancelled:
                outbox.push(_frames.end_frame(call_id, grpc.StatusCode.INTERNAL.value[0], "agent failed"))
        finally:
            stream.running.pop(call_id, None)


async def _call_unary(handler: UnaryHandler, payload: bytes, context: InvocationContext) -> HandlerResult:
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
        result = handler(payload, context)
    else:
        # A plain function may block: run it in a thread so PINGs and other calls go on.
        result = await asyncio.to_thread(handler, payload, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _iterate(
    chunks: AsyncIterable[HandlerResult] | Iterable[HandlerResult],
) -> AsyncGenerator[HandlerResult, None]:
    if isinstance(chunks, AsyncIterable):
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            # Run the handler's own finally blocks now, not whenever it is collected.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return
    # A plain generator may block between chunks: pull each one in a thread.
    iterator = iter(chunks)
    while True:
        pulled = await asyncio.to_thread(_next_chunk, iterator)
        if pulled is None:
            return
        yield pulled


def _next_chunk(iterator: Iterator[HandlerResult]) -> HandlerResult | None:
    return next(iterator, None)


def _to_bytes(result: HandlerResult) -> bytes:
    if isinstance(result, str):
        return result.encode("utf-8")
    if isinstance(result, bytes):
        return result
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result)
    raise TypeError(f"a handler must answer bytes or str, not {type(result).__name__}")
