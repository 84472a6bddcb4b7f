"""Typed errors: one class per gRPC status code a caller can act on.

Every failure of a mesh call is a ``MeshError`` carrying the gRPC ``code`` and
the peer's short, safe message. Agents raise the same classes from handlers to
choose what their callers see; any other exception becomes ``INTERNAL`` with a
generic message, and the details stay in the agent's log.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MeshError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_from_rpc_error",
    "error_from_status",
    "status_code_from_value",
]


class MeshError(Exception):
    """A failed mesh call, or a failure an agent handler chooses to report.

    ``code`` is the gRPC status code, ``message`` the short safe text that
    travelled with it. ``refused_before_delivery`` is true when the receiving
    side refused the call before any agent saw it (safe to send elsewhere).
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        refused_before_delivery: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.refused_before_delivery = refused_before_delivery

    @property
    def code_value(self) -> int:
        """The numeric gRPC code, as it travels in ``CallFrame.status_code``."""
        value: int = self.code.value[0]
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class Cancelled(MeshError):
    default_code = grpc.StatusCode.CANCELLED


class InvalidArgument(MeshError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(MeshError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(MeshError):
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MeshError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(MeshError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MeshError):
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(MeshError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MeshError):
    default_code = grpc.StatusCode.ABORTED


class Unimplemented(MeshError):
    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MeshError):
    default_code = grpc.StatusCode.INTERNAL


class Unavailable(MeshError):
    default_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(MeshError):
    default_code = grpc.StatusCode.UNAUTHENTICATED


# The one table between codes and classes; codes without a class of their own
# (UNKNOWN, OUT_OF_RANGE, DATA_LOSS) come back as a plain MeshError with the code set.
_class_by_code: dict[grpc.StatusCode, type[MeshError]] = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        Unimplemented,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}

_code_by_value: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code_from_value(value: int) -> grpc.StatusCode:
    """The StatusCode for a numeric code; an unknown number is UNKNOWN, as gRPC treats it."""
    return _code_by_value.get(value, grpc.StatusCode.UNKNOWN)


def error_from_status(code: grpc.StatusCode | int, message: str, *, refused_before_delivery: bool = False) -> MeshError:
    """The error a caller sees for a non-OK status (from an END frame or an RPC)."""
    status = code if isinstance(code, grpc.StatusCode) else status_code_from_value(code)
    text = message if message else f"call failed with {status.name}"
    cls = _class_by_code.get(status, MeshError)
    return cls(text, code=status, refused_before_delivery=refused_before_delivery)


def error_from_rpc_error(error: grpc.RpcError) -> MeshError:
    """Converts a failed gRPC call (grpc.aio.AioRpcError and friends) to a MeshError."""
    code_method = getattr(error, "code", None)
    details_method = getattr(error, "details", None)
    code = code_method() if callable(code_method) else grpc.StatusCode.UNKNOWN
    details = details_method() if callable(details_method) else ""
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_from_status(code, details if isinstance(details, str) else "")
