"""Batching, PONG priority and backpressure of the single-writer outbox."""

from __future__ import annotations

import asyncio

from agentmesh import _frames
from agentmesh._outbox import FrameOutbox
from agentmesh.v1 import agent_pb2

WAIT_S = 10.0


class RecordingWriter:
    """A stream that records each message and can be held, as a slow peer would."""

    def __init__(self) -> None:
        self.messages: list[list[agent_pb2.CallFrame]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.written = asyncio.Event()

    async def write(self, message: agent_pb2.TunnelRequest) -> None:
        await self.open.wait()
        self.messages.append(list(message.frames))
        self.written.set()


def new_outbox(**options: int) -> FrameOutbox[agent_pb2.TunnelRequest]:
    return FrameOutbox(lambda frames: agent_pb2.TunnelRequest(frames=frames), **options)


async def written(writer: RecordingWriter, count: int) -> None:
    async with asyncio.timeout(WAIT_S):
        while sum(len(message) for message in writer.messages) < count:
            writer.written.clear()
            await writer.written.wait()


async def test_frames_queued_together_travel_in_one_message() -> None:
    outbox = new_outbox()
    writer = RecordingWriter()
    task = asyncio.ensure_future(outbox.run(writer))
    for call_id in range(1, 6):
        outbox.push(_frames.end_frame(call_id))
    await written(writer, 5)
    assert [[frame.call_id for frame in message] for message in writer.messages] == [[1, 2, 3, 4, 5]]
    outbox.close()
    await task


async def test_a_pong_overtakes_queued_replies() -> None:
    outbox = new_outbox()
    writer = RecordingWriter()
    writer.open.clear()
    task = asyncio.ensure_future(outbox.run(writer))
    outbox.push(_frames.end_frame(1))
    await asyncio.sleep(0)  # the writer takes call 1 and blocks on the held stream
    for call_id in (2, 3):
        outbox.push(_frames.end_frame(call_id))
    outbox.push_urgent(_frames.pong_frame(9))
    writer.open.set()
    await written(writer, 4)
    second = writer.messages[1]
    assert second[0].kind == _frames.KIND_PONG and second[0].sequence == 9
    assert [frame.call_id for frame in second[1:]] == [2, 3]
    outbox.close()
    await task


async def test_batches_split_at_the_frame_limit() -> None:
    outbox = new_outbox(max_frames_per_message=2)
    writer = RecordingWriter()
    task = asyncio.ensure_future(outbox.run(writer))
    for call_id in range(1, 6):
        outbox.push(_frames.end_frame(call_id))
    await written(writer, 5)
    assert [len(message) for message in writer.messages] == [2, 2, 1]
    outbox.close()
    await task


async def test_producers_wait_above_the_high_water_mark_until_the_peer_reads() -> None:
    outbox = new_outbox(high_water_frames=2, max_frames_per_message=1)
    writer = RecordingWriter()
    writer.open.clear()
    task = asyncio.ensure_future(outbox.run(writer))
    for call_id in range(1, 6):
        outbox.push(_frames.end_frame(call_id))
    waiting = asyncio.ensure_future(outbox.writable())
    await asyncio.sleep(0)
    assert not waiting.done()
    writer.open.set()
    await asyncio.wait_for(waiting, WAIT_S)
    assert outbox.queued_frames <= 2
    outbox.close()
    await task


async def test_flushed_returns_once_everything_is_written_and_close_drops_the_rest() -> None:
    outbox = new_outbox()
    writer = RecordingWriter()
    task = asyncio.ensure_future(outbox.run(writer))
    outbox.push(_frames.end_frame(1))
    await asyncio.wait_for(outbox.flushed(), WAIT_S)
    assert len(writer.messages) == 1
    outbox.close()
    outbox.push(_frames.end_frame(2))
    await task
    assert outbox.queued_frames == 0
