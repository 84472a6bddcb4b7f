"""agentmesh: the Python SDK for agents on an agentmesh mesh.

Serve capabilities over the sidecar's Attach stream (:class:`Agent`), call
other agents through it (:class:`MeshCaller`), and sign or verify envelopes
(:mod:`agentmesh.signing`). Errors are :class:`MeshError` subclasses named after
their gRPC code.

Names are imported on first use, so ``import agentmesh`` stays cheap: an agent
that never signs never loads ``cryptography`` (start-to-READY matters).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_exports = {
    "Agent": "agentmesh.agent",
    "InvocationContext": "agentmesh.agent",
    "Serving": "agentmesh.agent",
    "ServeOptions": "agentmesh.agent",
    "MeshCaller": "agentmesh.caller",
    "InvokeResult": "agentmesh.caller",
    "BackoffPolicy": "agentmesh._backoff",
    "parse_label_selector": "agentmesh.labels",
    "MeshError": "agentmesh.errors",
    "Aborted": "agentmesh.errors",
    "AlreadyExists": "agentmesh.errors",
    "Cancelled": "agentmesh.errors",
    "DeadlineExceeded": "agentmesh.errors",
    "FailedPrecondition": "agentmesh.errors",
    "Internal": "agentmesh.errors",
    "InvalidArgument": "agentmesh.errors",
    "NotFound": "agentmesh.errors",
    "PermissionDenied": "agentmesh.errors",
    "ResourceExhausted": "agentmesh.errors",
    "Unauthenticated": "agentmesh.errors",
    "Unavailable": "agentmesh.errors",
    "Unimplemented": "agentmesh.errors",
}

__all__ = [
    "Aborted",
    "Agent",
    "AlreadyExists",
    "BackoffPolicy",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "InvocationContext",
    "InvokeResult",
    "MeshCaller",
    "MeshError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServeOptions",
    "Serving",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "parse_label_selector",
]

if TYPE_CHECKING:
    from agentmesh._backoff import BackoffPolicy
    from agentmesh.agent import Agent, InvocationContext, ServeOptions, Serving
    from agentmesh.caller import InvokeResult, MeshCaller
    from agentmesh.errors import (
        Aborted,
        AlreadyExists,
        Cancelled,
        DeadlineExceeded,
        FailedPrecondition,
        Internal,
        InvalidArgument,
        MeshError,
        NotFound,
        PermissionDenied,
        ResourceExhausted,
        Unauthenticated,
        Unavailable,
        Unimplemented,
    )
    from agentmesh.labels import parse_label_selector


def __getattr__(name: str) -> object:
    module = _exports.get(name)
    if module is None:
        raise AttributeError(f"module 'agentmesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_exports])
