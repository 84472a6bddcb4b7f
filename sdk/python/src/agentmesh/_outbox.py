"""Frames waiting for one stream, written by a single task in batches.

grpc.aio allows one write at a time on a stream, and the cost of a message
(serialization call, HTTP/2 frame, syscall) dominates at small payloads, so all
frames queued while the writer was busy travel in one message (DESIGN §5.1).
PONGs jump the queue: a liveness answer must not wait behind a burst of replies.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from agentmesh.v1 import agent_pb2

MessageT = TypeVar("MessageT")
MessageT_contra = TypeVar("MessageT_contra", contravariant=True)

DEFAULT_MAX_FRAMES_PER_MESSAGE = 1024
# Keeps a burst of large frames well under gRPC's default 4 MiB receive limit on the other side.
DEFAULT_MAX_BYTES_PER_MESSAGE = 1024 * 1024
# Producers that can wait (streamed replies) pause above this many queued frames.
DEFAULT_HIGH_WATER_FRAMES = 256
# Call id, kind, flags and status of a frame, roughly: only used to split batches.
_FRAME_OVERHEAD_BYTES = 32


class FrameWriter(Protocol[MessageT_contra]):
    def write(self, message: MessageT_contra) -> Awaitable[None]: ...


def estimate_frame_bytes(frame: agent_pb2.CallFrame) -> int:
    size = _FRAME_OVERHEAD_BYTES + len(frame.payload) + len(frame.status_message)
    if frame.HasField("invocation"):
        size += len(frame.invocation.payload) + 128
    if frame.HasField("request"):
        size += len(frame.request.payload) + 128
    return size


class FrameOutbox(Generic[MessageT]):
    def __init__(
        self,
        wrap: Callable[[list[agent_pb2.CallFrame]], MessageT],
        *,
        max_frames_per_message: int = DEFAULT_MAX_FRAMES_PER_MESSAGE,
        max_bytes_per_message: int = DEFAULT_MAX_BYTES_PER_MESSAGE,
        high_water_frames: int = DEFAULT_HIGH_WATER_FRAMES,
    ) -> None:
        self._wrap = wrap
        self._max_frames = max_frames_per_message
        self._max_bytes = max_bytes_per_message
        self._high_water = high_water_frames
        self._pending: deque[agent_pb2.CallFrame] = deque()
        self._urgent: deque[agent_pb2.CallFrame] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.messages_written = 0
        self.frames_written = 0

    @property
    def queued_frames(self) -> int:
        return len(self._pending) + len(self._urgent)

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, frame: agent_pb2.CallFrame) -> None:
        """Queues a frame for the next write; frames pushed after close() are dropped (their stream is gone)."""
        if self._closed:
            return
        self._pending.append(frame)
        self._changed()

    def push_urgent(self, frame: agent_pb2.CallFrame) -> None:
        """Queues a frame ahead of everything else (PONG)."""
        if self._closed:
            return
        self._urgent.append(frame)
        self._changed()

    async def writable(self) -> None:
        """Returns at once below the high-water mark, else once the writer caught up (or the outbox closed)."""
        while not self._closed and len(self._pending) > self._high_water:
            self._room.clear()
            await self._room.wait()

    async def flushed(self) -> None:
        """Returns once everything queued so far has been written (or the outbox closed)."""
        while not self._closed and not self._idle.is_set():
            await self._idle.wait()

    def close(self) -> None:
        """Drops queued frames and releases waiters; the stream is gone or finished."""
        self._closed = True
        self._pending.clear()
        self._urgent.clear()
        self._wake.set()
        self._room.set()
        self._idle.set()

    async def run(self, writer: FrameWriter[MessageT]) -> None:
        """The writer task: one message per wake-up, holding every frame queued meanwhile.

        Returns when the outbox closes; an exception from ``write`` (the stream
        broke) closes the outbox and propagates.
        """
        try:
            while True:
                await self._wake.wait()
                if self._closed:
                    return
                if not self._pending and not self._urgent:
                    self._wake.clear()
                    self._idle.set()
                    continue
                batch = self._take_batch()
                self.messages_written += 1
                self.frames_written += len(batch)
                await writer.write(self._wrap(batch))
                if len(self._pending) <= self._high_water:
                    self._room.set()
        except BaseException:
            self.close()
            raise

    def _changed(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _take_batch(self) -> list[agent_pb2.CallFrame]:
        batch: list[agent_pb2.CallFrame] = []
        size = 0
        while self._urgent:
            batch.append(self._urgent.popleft())
        while self._pending:
            frame_bytes = estimate_frame_bytes(self._pending[0])
            # A single oversized frame still goes, alone: splitting it is not ours to do.
            if batch and (len(batch) >= self._max_frames or size + frame_bytes > self._max_bytes):
                break
            batch.append(self._pending.popleft())
            size += frame_bytes
        return batch
