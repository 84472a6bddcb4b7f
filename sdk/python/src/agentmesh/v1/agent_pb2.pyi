from agentmesh.v1 import registry_pb2 as _registry_pb2
from agentmesh.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Invocation(_message.Message):
    __slots__ = ("call_id", "capability", "version", "payload", "content_type", "caller", "deadline_ms", "metadata", "traceparent")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    capability: str
    version: str
    payload: bytes
    content_type: str
    caller: str
    deadline_ms: int
    metadata: _containers.ScalarMap[str, str]
    traceparent: str
    def __init__(self, call_id: _Optional[str] = ..., capability: _Optional[str] = ..., version: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., caller: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class AgentServiceInvokeRequest(_message.Message):
    __slots__ = ("invocation",)
    INVOCATION_FIELD_NUMBER: _ClassVar[int]
    invocation: Invocation
    def __init__(self, invocation: _Optional[_Union[Invocation, _Mapping]] = ...) -> None: ...

class AgentServiceInvokeResponse(_message.Message):
    __slots__ = ("payload", "content_type")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    content_type: str
    def __init__(self, payload: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class AgentServiceInvokeStreamRequest(_message.Message):
    __slots__ = ("invocation",)
    INVOCATION_FIELD_NUMBER: _ClassVar[int]
    invocation: Invocation
    def __init__(self, invocation: _Optional[_Union[Invocation, _Mapping]] = ...) -> None: ...

class AgentServiceInvokeStreamResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class SidecarServiceCallRequest(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...

class SidecarServiceCallResponse(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...

class SidecarServiceInvokeRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector", "payload", "content_type", "idempotent", "metadata", "timeout_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    capability: str
    version_range: str
    label_selector: _registry_pb2.LabelSelector
    payload: bytes
    content_type: str
    idempotent: bool
    metadata: _containers.ScalarMap[str, str]
    timeout_ms: int
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[_registry_pb2.LabelSelector, _Mapping]] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., idempotent: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SidecarServiceInvokeResponse(_message.Message):
    __slots__ = ("payload", "content_type", "instance_id", "version")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    content_type: str
    instance_id: str
    version: str
    def __init__(self, payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., instance_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SidecarServiceInvokeStreamRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector", "payload", "content_type", "metadata", "timeout_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    capability: str
    version_range: str
    label_selector: _registry_pb2.LabelSelector
    payload: bytes
    content_type: str
    metadata: _containers.ScalarMap[str, str]
    timeout_ms: int
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[_registry_pb2.LabelSelector, _Mapping]] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SidecarServiceInvokeStreamResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class SidecarServiceDiscoverRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    capability: str
    version_range: str
    label_selector: _registry_pb2.LabelSelector
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[_registry_pb2.LabelSelector, _Mapping]] = ...) -> None: ...

class SidecarServiceDiscoverResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentInstance]
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.AgentInstance, _Mapping]]] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("hello", "reply", "replies")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    hello: AttachHello
    reply: CallFrame
    replies: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, hello: _Optional[_Union[AttachHello, _Mapping]] = ..., reply: _Optional[_Union[CallFrame, _Mapping]] = ..., replies: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...

class AttachHello(_message.Message):
    __slots__ = ("instance_id", "manifest")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    manifest: _types_pb2.AgentManifest
    def __init__(self, instance_id: _Optional[str] = ..., manifest: _Optional[_Union[_types_pb2.AgentManifest, _Mapping]] = ...) -> None: ...

class AttachResponse(_message.Message):
    __slots__ = ("welcome", "call", "calls")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    welcome: AttachWelcome
    call: CallFrame
    calls: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, welcome: _Optional[_Union[AttachWelcome, _Mapping]] = ..., call: _Optional[_Union[CallFrame, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...

class AttachWelcome(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class CallFrame(_message.Message):
    __slots__ = ("call_id", "kind", "envelope", "instance_id", "payload", "sequence", "end", "streaming", "status_code", "status_message", "content_type", "invocation", "request", "version", "refused_before_delivery", "mac_sequence", "mac")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[CallFrame.Kind]
        KIND_OPEN: _ClassVar[CallFrame.Kind]
        KIND_DATA: _ClassVar[CallFrame.Kind]
        KIND_END: _ClassVar[CallFrame.Kind]
        KIND_CANCEL: _ClassVar[CallFrame.Kind]
        KIND_PING: _ClassVar[CallFrame.Kind]
        KIND_PONG: _ClassVar[CallFrame.Kind]
    KIND_UNSPECIFIED: CallFrame.Kind
    KIND_OPEN: CallFrame.Kind
    KIND_DATA: CallFrame.Kind
    KIND_END: CallFrame.Kind
    KIND_CANCEL: CallFrame.Kind
    KIND_PING: CallFrame.Kind
    KIND_PONG: CallFrame.Kind
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BEFORE_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    MAC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    kind: CallFrame.Kind
    envelope: _types_pb2.SignedEnvelope
    instance_id: str
    payload: bytes
    sequence: int
    end: bool
    streaming: bool
    status_code: int
    status_message: str
    content_type: str
    invocation: Invocation
    request: SidecarServiceInvokeRequest
    version: str
    refused_before_delivery: bool
    mac_sequence: int
    mac: bytes
    def __init__(self, call_id: _Optional[int] = ..., kind: _Optional[_Union[CallFrame.Kind, str]] = ..., envelope: _Optional[_Union[_types_pb2.SignedEnvelope, _Mapping]] = ..., instance_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., sequence: _Optional[int] = ..., end: _Optional[bool] = ..., streaming: _Optional[bool] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ..., content_type: _Optional[str] = ..., invocation: _Optional[_Union[Invocation, _Mapping]] = ..., request: _Optional[_Union[SidecarServiceInvokeRequest, _Mapping]] = ..., version: _Optional[str] = ..., refused_before_delivery: _Optional[bool] = ..., mac_sequence: _Optional[int] = ..., mac: _Optional[bytes] = ...) -> None: ...

class TunnelRequest(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...

class TunnelResponse(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[CallFrame]
    def __init__(self, frames: _Optional[_Iterable[_Union[CallFrame, _Mapping]]] = ...) -> None: ...
