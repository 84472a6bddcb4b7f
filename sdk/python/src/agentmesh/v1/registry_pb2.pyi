from agentmesh.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("manifest", "instance_id", "endpoint", "host", "envelope", "deployment")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    manifest: _types_pb2.AgentManifest
    instance_id: str
    endpoint: str
    host: str
    envelope: _types_pb2.SignedEnvelope
    deployment: str
    def __init__(self, manifest: _Optional[_Union[_types_pb2.AgentManifest, _Mapping]] = ..., instance_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., host: _Optional[str] = ..., envelope: _Optional[_Union[_types_pb2.SignedEnvelope, _Mapping]] = ..., deployment: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("instance", "revision")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.AgentInstance
    revision: int
    def __init__(self, instance: _Optional[_Union[_types_pb2.AgentInstance, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class RegisterBatchRequest(_message.Message):
    __slots__ = ("registrations",)
    REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    registrations: _containers.RepeatedCompositeFieldContainer[RegisterRequest]
    def __init__(self, registrations: _Optional[_Iterable[_Union[RegisterRequest, _Mapping]]] = ...) -> None: ...

class RegisterBatchResponse(_message.Message):
    __slots__ = ("results", "revision")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RegisterBatchResult]
    revision: int
    def __init__(self, results: _Optional[_Iterable[_Union[RegisterBatchResult, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class RegisterBatchResult(_message.Message):
    __slots__ = ("instance", "code", "message")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.AgentInstance
    code: int
    message: str
    def __init__(self, instance: _Optional[_Union[_types_pb2.AgentInstance, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("instance_id", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    reason: str
    def __init__(self, instance_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class GetAgentResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.AgentInstance
    def __init__(self, instance: _Optional[_Union[_types_pb2.AgentInstance, _Mapping]] = ...) -> None: ...

class LabelSelector(_message.Message):
    __slots__ = ("match_labels", "match_expressions")
    class MatchLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MATCH_LABELS_FIELD_NUMBER: _ClassVar[int]
    MATCH_EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    match_labels: _containers.ScalarMap[str, str]
    match_expressions: _containers.RepeatedCompositeFieldContainer[LabelRequirement]
    def __init__(self, match_labels: _Optional[_Mapping[str, str]] = ..., match_expressions: _Optional[_Iterable[_Union[LabelRequirement, _Mapping]]] = ...) -> None: ...

class LabelRequirement(_message.Message):
    __slots__ = ("key", "operator", "values")
    class Operator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OPERATOR_UNSPECIFIED: _ClassVar[LabelRequirement.Operator]
        OPERATOR_IN: _ClassVar[LabelRequirement.Operator]
        OPERATOR_NOT_IN: _ClassVar[LabelRequirement.Operator]
        OPERATOR_EXISTS: _ClassVar[LabelRequirement.Operator]
        OPERATOR_DOES_NOT_EXIST: _ClassVar[LabelRequirement.Operator]
    OPERATOR_UNSPECIFIED: LabelRequirement.Operator
    OPERATOR_IN: LabelRequirement.Operator
    OPERATOR_NOT_IN: LabelRequirement.Operator
    OPERATOR_EXISTS: LabelRequirement.Operator
    OPERATOR_DOES_NOT_EXIST: LabelRequirement.Operator
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    operator: LabelRequirement.Operator
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., operator: _Optional[_Union[LabelRequirement.Operator, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("name", "label_selector", "states", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    label_selector: LabelSelector
    states: _containers.RepeatedScalarFieldContainer[_types_pb2.HealthState]
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., label_selector: _Optional[_Union[LabelSelector, _Mapping]] = ..., states: _Optional[_Iterable[_Union[_types_pb2.HealthState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("instances", "next_page_token", "total")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentInstance]
    next_page_token: str
    total: int
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.AgentInstance, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class DiscoverRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector", "limit", "include_unhealthy")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNHEALTHY_FIELD_NUMBER: _ClassVar[int]
    capability: str
    version_range: str
    label_selector: LabelSelector
    limit: int
    include_unhealthy: bool
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[LabelSelector, _Mapping]] = ..., limit: _Optional[int] = ..., include_unhealthy: _Optional[bool] = ...) -> None: ...

class DiscoverResponse(_message.Message):
    __slots__ = ("instances", "revision", "epoch")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentInstance]
    revision: int
    epoch: str
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.AgentInstance, _Mapping]]] = ..., revision: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("since_revision", "capability", "epoch")
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    since_revision: int
    capability: str
    epoch: str
    def __init__(self, since_revision: _Optional[int] = ..., capability: _Optional[str] = ..., epoch: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("type", "instance", "revision", "previous_state", "epoch")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_TYPE_UNSPECIFIED: _ClassVar[WatchResponse.EventType]
        EVENT_TYPE_ADDED: _ClassVar[WatchResponse.EventType]
        EVENT_TYPE_UPDATED: _ClassVar[WatchResponse.EventType]
        EVENT_TYPE_REMOVED: _ClassVar[WatchResponse.EventType]
        EVENT_TYPE_SYNCED: _ClassVar[WatchResponse.EventType]
    EVENT_TYPE_UNSPECIFIED: WatchResponse.EventType
    EVENT_TYPE_ADDED: WatchResponse.EventType
    EVENT_TYPE_UPDATED: WatchResponse.EventType
    EVENT_TYPE_REMOVED: WatchResponse.EventType
    EVENT_TYPE_SYNCED: WatchResponse.EventType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    type: WatchResponse.EventType
    instance: _types_pb2.AgentInstance
    revision: int
    previous_state: _types_pb2.HealthState
    epoch: str
    def __init__(self, type: _Optional[_Union[WatchResponse.EventType, str]] = ..., instance: _Optional[_Union[_types_pb2.AgentInstance, _Mapping]] = ..., revision: _Optional[int] = ..., previous_state: _Optional[_Union[_types_pb2.HealthState, str]] = ..., epoch: _Optional[str] = ...) -> None: ...
