"""A stand-in sidecar for unit tests: a real grpc.aio server on 127.0.0.1:0.

It speaks the sidecar's side of SidecarService.Attach (hello → welcome, calls
out, replies in) and SidecarService.Call (OPEN frames in, DATA/END out, as the
test scripts them), so the SDK runs over real sockets and real HTTP/2 while the
test decides every frame the "sidecar" sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from agentmesh.v1 import agent_pb2, types_pb2

CallFrame = agent_pb2.CallFrame
WAIT_S = 10.0


class FrameLog:
    """Frames as they arrive; tests wait for the one they expect (bounded)."""

    def __init__(self) -> None:
        self.frames: list[agent_pb2.CallFrame] = []
        self.messages = 0
        self._changed = asyncio.Event()

    def add(self, frames: list[agent_pb2.CallFrame]) -> None:
        self.messages += 1
        self.frames.extend(frames)
        self._changed.set()

    async def next(
        self, predicate: Callable[[agent_pb2.CallFrame], bool], timeout_s: float = WAIT_S, start: int = 0
    ) -> agent_pb2.CallFrame:
        async with asyncio.timeout(timeout_s):
            while True:
                for frame in self.frames[start:]:
                    if predicate(frame):
                        return frame
                self._changed.clear()
                await self._changed.wait()

    def of_call(self, call_id: int) -> list[agent_pb2.CallFrame]:
        return [frame for frame in self.frames if frame.call_id == call_id]


@dataclass
class AttachSession:
    hello: agent_pb2.AttachHello
    context: grpc.aio.ServicerContext[agent_pb2.AttachRequest, agent_pb2.AttachResponse]
    received: FrameLog = field(default_factory=FrameLog)
    # Set when the agent half-closed its side (it is leaving in order).
    agent_ended: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    _finish: asyncio.Event = field(default_factory=asyncio.Event)
    # grpc.aio takes one write at a time per stream.
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, *frames: agent_pb2.CallFrame) -> None:
        async with self._writing:
            await self.context.write(agent_pb2.AttachResponse(calls=list(frames)))

    async def send_single(self, frame: agent_pb2.CallFrame) -> None:
        """The older one-frame form (`call` in the oneof) that senders may still use."""
        async with self._writing:
            await self.context.write(agent_pb2.AttachResponse(call=frame))

    def end(self) -> None:
        """The sidecar ends the stream (OK status)."""
        self._finish.set()


@dataclass
class CallSession:
    """One SidecarService.Call stream from a MeshCaller."""

    context: grpc.aio.ServicerContext[agent_pb2.SidecarServiceCallRequest, agent_pb2.SidecarServiceCallResponse]
    received: FrameLog = field(default_factory=FrameLog)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, *frames: agent_pb2.CallFrame) -> None:
        async with self._writing:
            await self.context.write(agent_pb2.SidecarServiceCallResponse(frames=list(frames)))


def open_invocation(
    call_id: int, capability: str, payload: bytes = b"", *, streaming: bool = False, **fields: object
) -> agent_pb2.CallFrame:
    invocation = agent_pb2.Invocation(call_id=str(call_id), capability=capability, payload=payload, **fields)  # type: ignore[arg-type]
    return CallFrame(call_id=call_id, kind=CallFrame.KIND_OPEN, invocation=invocation, streaming=streaming)


#: What the double does with each OPEN on a Call stream: answer through the session.
CallScript = Callable[[agent_pb2.CallFrame, CallSession], Awaitable[None]]


class SidecarDouble:
    def __init__(self) -> None:
        self.address = ""
        self.port = 0
        self.attach_sessions: list[AttachSession] = []
        self.call_sessions: list[CallSession] = []
        self.refuse_attach: tuple[grpc.StatusCode, str] | None = None
        self.call_script: CallScript | None = None
        self.discover_answer: list[types_pb2.AgentInstance] = []
        self.discover_requests: list[agent_pb2.SidecarServiceDiscoverRequest] = []
        self._server: grpc.aio.Server | None = None
        self._attached = asyncio.Event()
        self._call_opened = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> str:
        server = grpc.aio.server()
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Attach": grpc.stream_stream_rpc_method_handler(
                self._attach,
                request_deserializer=agent_pb2.AttachRequest.FromString,
                response_serializer=agent_pb2.AttachResponse.SerializeToString,
            ),
            "Call": grpc.stream_stream_rpc_method_handler(
                self._call,
                request_deserializer=agent_pb2.SidecarServiceCallRequest.FromString,
                response_serializer=agent_pb2.SidecarServiceCallResponse.SerializeToString,
            ),
            "Discover": grpc.unary_unary_rpc_method_handler(
                self._discover,
                request_deserializer=agent_pb2.SidecarServiceDiscoverRequest.FromString,
                response_serializer=agent_pb2.SidecarServiceDiscoverResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("agentmesh.v1.SidecarService", handlers),)
        )
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind 127.0.0.1:{port}")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{self.port}"
        return self.address

    async def stop(self) -> None:
        """Gone at once, as a killed sidecar: streams break with UNAVAILABLE/CANCELLED."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    async def attached(self, count: int = 1, timeout_s: float = WAIT_S) -> AttachSession:
        """The `count`-th attach session (1-based) once the agent said hello."""
        async with asyncio.timeout(timeout_s):
            while len(self.attach_sessions) < count:
                self._attached.clear()
                await self._attached.wait()
        return self.attach_sessions[count - 1]

    async def call_stream(self, count: int = 1, timeout_s: float = WAIT_S) -> CallSession:
        async with asyncio.timeout(timeout_s):
            while len(self.call_sessions) < count:
                self._call_opened.clear()
                await self._call_opened.wait()
        return self.call_sessions[count - 1]

    async def _attach(
        self,
        _requests: object,
        context: grpc.aio.ServicerContext[agent_pb2.AttachRequest, agent_pb2.AttachResponse],
    ) -> None:
        first = await context.read()
        # read() answers grpc.aio.EOF at the end of the stream (the stubs only say the message type).
        if not isinstance(first, agent_pb2.AttachRequest) or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first attach message must be a hello")
            return
        if self.refuse_attach is not None:
            await context.abort(*self.refuse_attach)
            return
        session = AttachSession(hello=first.hello, context=context)
        await context.write(
            agent_pb2.AttachResponse(welcome=agent_pb2.AttachWelcome(instance_id=first.hello.instance_id))
        )
        self.attach_sessions.append(session)
        self._attached.set()

        async def read() -> None:
            while True:
                request = await context.read()
                if not isinstance(request, agent_pb2.AttachRequest):
                    session.agent_ended.set()
                    return
                frames = list(request.replies)
                if request.HasField("reply"):
                    frames.insert(0, request.reply)
                session.received.add(frames)

        reader = asyncio.ensure_future(read())
        finish = asyncio.ensure_future(session._finish.wait())
        try:
            await asyncio.wait([reader, finish], return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            finish.cancel()
            session.gone.set()

    async def _call(
        self,
        _requests: object,
        context: grpc.aio.ServicerContext[agent_pb2.SidecarServiceCallRequest, agent_pb2.SidecarServiceCallResponse],
    ) -> None:
        # Headers at once, as the sidecar's tunnel server does: the client takes them as "ready".
        await context.send_initial_metadata(())
        session = CallSession(context=context)
        self.call_sessions.append(session)
        self._call_opened.set()
        while True:
            request = await context.read()
            if not isinstance(request, agent_pb2.SidecarServiceCallRequest):
                return
            session.received.add(list(request.frames))
            for frame in request.frames:
                if frame.kind == CallFrame.KIND_OPEN and self.call_script is not None:
                    task = asyncio.ensure_future(self.call_script(frame, session))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _discover(
        self,
        request: agent_pb2.SidecarServiceDiscoverRequest,
        _context: grpc.aio.ServicerContext[
            agent_pb2.SidecarServiceDiscoverRequest, agent_pb2.SidecarServiceDiscoverResponse
        ],
    ) -> agent_pb2.SidecarServiceDiscoverResponse:
        self.discover_requests.append(request)
        return agent_pb2.SidecarServiceDiscoverResponse(instances=self.discover_answer)
