from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_STARTING: _ClassVar[HealthState]
    HEALTH_STATE_READY: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_DRAINING: _ClassVar[HealthState]
    HEALTH_STATE_STOPPED: _ClassVar[HealthState]
    HEALTH_STATE_FAILED: _ClassVar[HealthState]
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_STARTING: HealthState
HEALTH_STATE_READY: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_UNHEALTHY: HealthState
HEALTH_STATE_DRAINING: HealthState
HEALTH_STATE_STOPPED: HealthState
HEALTH_STATE_FAILED: HealthState

class Capability(_message.Message):
    __slots__ = ("name", "version", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("memory_limit_bytes", "invoke_rate_per_second", "invoke_burst", "max_in_flight", "max_message_bytes")
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    INVOKE_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    INVOKE_BURST_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_limit_bytes: int
    invoke_rate_per_second: float
    invoke_burst: int
    max_in_flight: int
    max_message_bytes: int
    def __init__(self, memory_limit_bytes: _Optional[int] = ..., invoke_rate_per_second: _Optional[float] = ..., invoke_burst: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class HealthPolicy(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "degraded_error_rate", "readiness_timeout_ms", "hung_restart_after_ms")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    READINESS_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HUNG_RESTART_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    degraded_error_rate: float
    readiness_timeout_ms: int
    hung_restart_after_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., degraded_error_rate: _Optional[float] = ..., readiness_timeout_ms: _Optional[int] = ..., hung_restart_after_ms: _Optional[int] = ...) -> None: ...

class AgentManifest(_message.Message):
    __slots__ = ("name", "version", "capabilities", "labels", "resources", "health_policy", "agent_card_json")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_POLICY_FIELD_NUMBER: _ClassVar[int]
    AGENT_CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    labels: _containers.ScalarMap[str, str]
    resources: Resources
    health_policy: HealthPolicy
    agent_card_json: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., health_policy: _Optional[_Union[HealthPolicy, _Mapping]] = ..., agent_card_json: _Optional[str] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("in_flight", "queue_depth", "cpu_millis", "rss_bytes", "p50_ms", "error_rate")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    queue_depth: int
    cpu_millis: int
    rss_bytes: int
    p50_ms: float
    error_rate: float
    def __init__(self, in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., cpu_millis: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., p50_ms: _Optional[float] = ..., error_rate: _Optional[float] = ...) -> None: ...

class AgentInstance(_message.Message):
    __slots__ = ("instance_id", "spiffe_id", "manifest", "endpoint", "host", "state", "load", "registered_at_ms", "last_heartbeat_at_ms", "state_reason", "deployment", "traffic_percent")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    spiffe_id: str
    manifest: AgentManifest
    endpoint: str
    host: str
    state: HealthState
    load: Load
    registered_at_ms: int
    last_heartbeat_at_ms: int
    state_reason: str
    deployment: str
    traffic_percent: int
    def __init__(self, instance_id: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., manifest: _Optional[_Union[AgentManifest, _Mapping]] = ..., endpoint: _Optional[str] = ..., host: _Optional[str] = ..., state: _Optional[_Union[HealthState, str]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., registered_at_ms: _Optional[int] = ..., last_heartbeat_at_ms: _Optional[int] = ..., state_reason: _Optional[str] = ..., deployment: _Optional[str] = ..., traffic_percent: _Optional[int] = ...) -> None: ...

class SignedEnvelope(_message.Message):
    __slots__ = ("payload", "signer", "alg", "signature", "issued_at_ms", "nonce", "audience", "method", "payload_type", "signer_chain")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signer: str
    alg: str
    signature: bytes
    issued_at_ms: int
    nonce: bytes
    audience: str
    method: str
    payload_type: str
    signer_chain: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, payload: _Optional[bytes] = ..., signer: _Optional[str] = ..., alg: _Optional[str] = ..., signature: _Optional[bytes] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., audience: _Optional[str] = ..., method: _Optional[str] = ..., payload_type: _Optional[str] = ..., signer_chain: _Optional[_Iterable[bytes]] = ...) -> None: ...
