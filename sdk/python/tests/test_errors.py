"""One table between gRPC status codes and error classes."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from agentmesh import errors
from agentmesh.errors import MeshError, error_from_rpc_error, error_from_status, status_code_from_value

TABLE: list[tuple[grpc.StatusCode, type[MeshError]]] = [
    (grpc.StatusCode.CANCELLED, errors.Cancelled),
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    (grpc.StatusCode.ABORTED, errors.Aborted),
    (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
    (grpc.StatusCode.INTERNAL, errors.Internal),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
]


@pytest.mark.parametrize(("code", "error_class"), TABLE, ids=[code.name for code, _ in TABLE])
def test_each_code_has_its_class(code: grpc.StatusCode, error_class: type[MeshError]) -> None:
    for given in (code, code.value[0]):
        error = error_from_status(given, "short safe message")
        assert type(error) is error_class
        assert isinstance(error, MeshError)
        assert error.code == code
        assert error.code_value == code.value[0]
        assert error.message == str(error) == "short safe message"
    assert error_class("raised by a handler").code == code


@pytest.mark.parametrize("code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS])
def test_codes_without_a_class_are_a_plain_mesh_error_with_the_code(code: grpc.StatusCode) -> None:
    error = error_from_status(code, "x")
    assert type(error) is MeshError
    assert error.code == code


def test_an_unknown_number_is_unknown_as_grpc_treats_it() -> None:
    assert status_code_from_value(99) == grpc.StatusCode.UNKNOWN
    assert error_from_status(99, "x").code == grpc.StatusCode.UNKNOWN


def test_an_empty_message_names_the_code() -> None:
    assert error_from_status(grpc.StatusCode.NOT_FOUND, "").message == "call failed with NOT_FOUND"


def test_refused_before_delivery_travels_with_the_error() -> None:
    assert error_from_status(14, "draining", refused_before_delivery=True).refused_before_delivery
    assert not error_from_status(14, "draining").refused_before_delivery


def test_an_explicit_code_overrides_the_class_default() -> None:
    assert MeshError("x", code=grpc.StatusCode.ABORTED).code == grpc.StatusCode.ABORTED
    assert MeshError("x").code == grpc.StatusCode.UNKNOWN


def test_rpc_errors_convert_to_the_typed_error() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.PERMISSION_DENIED, grpc.aio.Metadata(), grpc.aio.Metadata(), details="not allowed"
    )
    error = error_from_rpc_error(rpc_error)
    assert isinstance(error, errors.PermissionDenied)
    assert error.message == "not allowed"
