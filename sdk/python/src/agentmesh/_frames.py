"""CallFrame constructors and the SidecarService method paths (one definition each)."""

from __future__ import annotations

from agentmesh.v1 import agent_pb2

CallFrame = agent_pb2.CallFrame

KIND_OPEN = agent_pb2.CallFrame.KIND_OPEN
KIND_DATA = agent_pb2.CallFrame.KIND_DATA
KIND_END = agent_pb2.CallFrame.KIND_END
KIND_CANCEL = agent_pb2.CallFrame.KIND_CANCEL
KIND_PING = agent_pb2.CallFrame.KIND_PING
KIND_PONG = agent_pb2.CallFrame.KIND_PONG

STATUS_OK = 0


def method_path(service: str, method: str) -> str:
    """``/agentmesh.v1.SidecarService/Attach`` from the generated descriptor, never a hand-typed literal."""
    descriptor = agent_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    return f"/{descriptor.containing_service.full_name}/{descriptor.name}"


ATTACH_METHOD = method_path("SidecarService", "Attach")
CALL_METHOD = method_path("SidecarService", "Call")
DISCOVER_METHOD = method_path("SidecarService", "Discover")


def data_frame(
    call_id: int, payload: bytes, *, sequence: int = 0, end: bool = False, content_type: str = ""
) -> agent_pb2.CallFrame:
    """One chunk of a reply; ``end`` marks a unary reply complete in this single frame."""
    return CallFrame(
        call_id=call_id,
        kind=KIND_DATA,
        payload=payload,
        sequence=sequence,
        end=end,
        content_type=content_type,
    )


def end_frame(
    call_id: int, code: int = STATUS_OK, message: str = "", *, refused_before_delivery: bool = False
) -> agent_pb2.CallFrame:
    return CallFrame(
        call_id=call_id,
        kind=KIND_END,
        status_code=code,
        status_message=message,
        refused_before_delivery=refused_before_delivery,
    )


def cancel_frame(call_id: int) -> agent_pb2.CallFrame:
    return CallFrame(call_id=call_id, kind=KIND_CANCEL)


def pong_frame(sequence: int) -> agent_pb2.CallFrame:
    """The answer to a PING: call id 0 and the probe's own sequence."""
    return CallFrame(call_id=0, kind=KIND_PONG, sequence=sequence)


def open_frame(call_id: int, request: agent_pb2.SidecarServiceInvokeRequest, *, streaming: bool) -> agent_pb2.CallFrame:
    """An OPEN on SidecarService.Call: the routing request travels in ``request``."""
    return CallFrame(call_id=call_id, kind=KIND_OPEN, request=request, streaming=streaming)
