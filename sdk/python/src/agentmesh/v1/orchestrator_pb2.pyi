from agentmesh.v1 import registry_pb2 as _registry_pb2
from agentmesh.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "heartbeat", "instance_event", "command_result", "status")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    instance_event: InstanceEvent
    command_result: CommandResult
    status: SidecarStatus
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., instance_event: _Optional[_Union[InstanceEvent, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ..., status: _Optional[_Union[SidecarStatus, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("sidecar_id", "host", "instance_ids", "inbound_endpoint", "capacity", "envelope")
    SIDECAR_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    INBOUND_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    sidecar_id: str
    host: str
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    inbound_endpoint: str
    capacity: int
    envelope: _types_pb2.SignedEnvelope
    def __init__(self, sidecar_id: _Optional[str] = ..., host: _Optional[str] = ..., instance_ids: _Optional[_Iterable[str]] = ..., inbound_endpoint: _Optional[str] = ..., capacity: _Optional[int] = ..., envelope: _Optional[_Union[_types_pb2.SignedEnvelope, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("instances", "sequence")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceHeartbeat]
    sequence: int
    def __init__(self, instances: _Optional[_Iterable[_Union[InstanceHeartbeat, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class SidecarStatus(_message.Message):
    __slots__ = ("refusals",)
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    refusals: _containers.RepeatedCompositeFieldContainer[DataPlaneRefusals]
    def __init__(self, refusals: _Optional[_Iterable[_Union[DataPlaneRefusals, _Mapping]]] = ...) -> None: ...

class DataPlaneRefusals(_message.Message):
    __slots__ = ("reason", "total")
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    total: int
    def __init__(self, reason: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class InstanceHeartbeat(_message.Message):
    __slots__ = ("instance_id", "load", "reported_state", "announce")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    REPORTED_STATE_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    load: _types_pb2.Load
    reported_state: _types_pb2.HealthState
    announce: bool
    def __init__(self, instance_id: _Optional[str] = ..., load: _Optional[_Union[_types_pb2.Load, _Mapping]] = ..., reported_state: _Optional[_Union[_types_pb2.HealthState, str]] = ..., announce: _Optional[bool] = ...) -> None: ...

class InstanceEvent(_message.Message):
    __slots__ = ("instance_id", "state", "reason", "exit_code")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    state: _types_pb2.HealthState
    reason: str
    exit_code: int
    def __init__(self, instance_id: _Optional[str] = ..., state: _Optional[_Union[_types_pb2.HealthState, str]] = ..., reason: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "ok", "message", "instance_id")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    ok: bool
    message: str
    instance_id: str
    def __init__(self, command_id: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "command", "shutdown", "error", "revocations")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    command: Command
    shutdown: Shutdown
    error: StreamError
    revocations: Revocations
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., revocations: _Optional[_Union[Revocations, _Mapping]] = ...) -> None: ...

class Revocations(_message.Message):
    __slots__ = ("certificates", "full")
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    certificates: _containers.RepeatedCompositeFieldContainer[RevokedCertificate]
    full: bool
    def __init__(self, certificates: _Optional[_Iterable[_Union[RevokedCertificate, _Mapping]]] = ..., full: _Optional[bool] = ...) -> None: ...

class RevokedCertificate(_message.Message):
    __slots__ = ("serial", "spiffe_id", "not_after_ms")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    serial: str
    spiffe_id: str
    not_after_ms: int
    def __init__(self, serial: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("server_id", "unknown_instance_ids", "heartbeat_timeout_multiplier")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    unknown_instance_ids: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_timeout_multiplier: int
    def __init__(self, server_id: _Optional[str] = ..., unknown_instance_ids: _Optional[_Iterable[str]] = ..., heartbeat_timeout_multiplier: _Optional[int] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason", "retry_after_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retry_after_ms: int
    def __init__(self, reason: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message", "instance_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    instance_id: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "start", "stop", "restart", "drain", "envelope")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    start: StartAgent
    stop: StopInstance
    restart: RestartInstance
    drain: DrainInstance
    envelope: _types_pb2.SignedEnvelope
    def __init__(self, command_id: _Optional[str] = ..., start: _Optional[_Union[StartAgent, _Mapping]] = ..., stop: _Optional[_Union[StopInstance, _Mapping]] = ..., restart: _Optional[_Union[RestartInstance, _Mapping]] = ..., drain: _Optional[_Union[DrainInstance, _Mapping]] = ..., envelope: _Optional[_Union[_types_pb2.SignedEnvelope, _Mapping]] = ...) -> None: ...

class StartAgent(_message.Message):
    __slots__ = ("deployment", "instance_id", "manifest", "process", "restart_policy")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    RESTART_POLICY_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    instance_id: str
    manifest: _types_pb2.AgentManifest
    process: ProcessSpec
    restart_policy: RestartPolicy
    def __init__(self, deployment: _Optional[str] = ..., instance_id: _Optional[str] = ..., manifest: _Optional[_Union[_types_pb2.AgentManifest, _Mapping]] = ..., process: _Optional[_Union[ProcessSpec, _Mapping]] = ..., restart_policy: _Optional[_Union[RestartPolicy, _Mapping]] = ...) -> None: ...

class StopInstance(_message.Message):
    __slots__ = ("instance_id", "grace_ms")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    grace_ms: int
    def __init__(self, instance_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class RestartInstance(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class DrainInstance(_message.Message):
    __slots__ = ("instance_id", "grace_ms")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    grace_ms: int
    def __init__(self, instance_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class ProcessSpec(_message.Message):
    __slots__ = ("command", "args", "env", "cwd", "image")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    command: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    image: str
    def __init__(self, command: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("mode", "max_restarts", "window_ms", "initial_backoff_ms", "max_backoff_ms")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[RestartPolicy.Mode]
        MODE_ALWAYS: _ClassVar[RestartPolicy.Mode]
        MODE_ON_FAILURE: _ClassVar[RestartPolicy.Mode]
        MODE_NEVER: _ClassVar[RestartPolicy.Mode]
    MODE_UNSPECIFIED: RestartPolicy.Mode
    MODE_ALWAYS: RestartPolicy.Mode
    MODE_ON_FAILURE: RestartPolicy.Mode
    MODE_NEVER: RestartPolicy.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    mode: RestartPolicy.Mode
    max_restarts: int
    window_ms: int
    initial_backoff_ms: int
    max_backoff_ms: int
    def __init__(self, mode: _Optional[_Union[RestartPolicy.Mode, str]] = ..., max_restarts: _Optional[int] = ..., window_ms: _Optional[int] = ..., initial_backoff_ms: _Optional[int] = ..., max_backoff_ms: _Optional[int] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector", "exclude_instance_ids")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_RANGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    capability: str
    version_range: str
    label_selector: _registry_pb2.LabelSelector
    exclude_instance_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[_registry_pb2.LabelSelector, _Mapping]] = ..., exclude_instance_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.AgentInstance
    def __init__(self, instance: _Optional[_Union[_types_pb2.AgentInstance, _Mapping]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("capability", "version_range", "label_selector", "payload", "content_type", "idempotent", "metadata")
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
    capability: str
    version_range: str
    label_selector: _registry_pb2.LabelSelector
    payload: bytes
    content_type: str
    idempotent: bool
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, capability: _Optional[str] = ..., version_range: _Optional[str] = ..., label_selector: _Optional[_Union[_registry_pb2.LabelSelector, _Mapping]] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., idempotent: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InvokeResponse(_message.Message):
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

class Deployment(_message.Message):
    __slots__ = ("name", "manifest", "process", "replicas", "restart_policy", "strategy", "min_ready", "generation", "status", "created_at_ms", "updated_at_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESTART_POLICY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MIN_READY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    manifest: _types_pb2.AgentManifest
    process: ProcessSpec
    replicas: int
    restart_policy: RestartPolicy
    strategy: UpdateStrategy
    min_ready: int
    generation: int
    status: DeploymentStatus
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, name: _Optional[str] = ..., manifest: _Optional[_Union[_types_pb2.AgentManifest, _Mapping]] = ..., process: _Optional[_Union[ProcessSpec, _Mapping]] = ..., replicas: _Optional[int] = ..., restart_policy: _Optional[_Union[RestartPolicy, _Mapping]] = ..., strategy: _Optional[_Union[UpdateStrategy, _Mapping]] = ..., min_ready: _Optional[int] = ..., generation: _Optional[int] = ..., status: _Optional[_Union[DeploymentStatus, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class UpdateStrategy(_message.Message):
    __slots__ = ("max_surge", "max_unavailable", "ready_timeout_ms", "max_error_rate", "canary_weight_percent")
    MAX_SURGE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    READY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    max_surge: int
    max_unavailable: int
    ready_timeout_ms: int
    max_error_rate: float
    canary_weight_percent: int
    def __init__(self, max_surge: _Optional[int] = ..., max_unavailable: _Optional[int] = ..., ready_timeout_ms: _Optional[int] = ..., max_error_rate: _Optional[float] = ..., canary_weight_percent: _Optional[int] = ...) -> None: ...

class DeploymentStatus(_message.Message):
    __slots__ = ("replicas", "ready_replicas", "updated_replicas", "phase", "message")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    ready_replicas: int
    updated_replicas: int
    phase: str
    message: str
    def __init__(self, replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., updated_replicas: _Optional[int] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ApplyDeploymentRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class ApplyDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "changed", "outcome")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[ApplyDeploymentResponse.Outcome]
        OUTCOME_CREATED: _ClassVar[ApplyDeploymentResponse.Outcome]
        OUTCOME_CONFIGURED: _ClassVar[ApplyDeploymentResponse.Outcome]
        OUTCOME_UNCHANGED: _ClassVar[ApplyDeploymentResponse.Outcome]
    OUTCOME_UNSPECIFIED: ApplyDeploymentResponse.Outcome
    OUTCOME_CREATED: ApplyDeploymentResponse.Outcome
    OUTCOME_CONFIGURED: ApplyDeploymentResponse.Outcome
    OUTCOME_UNCHANGED: ApplyDeploymentResponse.Outcome
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    changed: bool
    outcome: ApplyDeploymentResponse.Outcome
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., changed: _Optional[bool] = ..., outcome: _Optional[_Union[ApplyDeploymentResponse.Outcome, str]] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "instances")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentInstance]
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[_types_pb2.AgentInstance, _Mapping]]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class DeleteDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteDeploymentResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: int
    def __init__(self, instances: _Optional[int] = ...) -> None: ...

class ScaleDeploymentRequest(_message.Message):
    __slots__ = ("name", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas: int
    def __init__(self, name: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class ScaleDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class RestartAgentRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class RestartAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainAgentRequest(_message.Message):
    __slots__ = ("instance_id", "grace_ms")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    grace_ms: int
    def __init__(self, instance_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class DrainAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopAgentRequest(_message.Message):
    __slots__ = ("instance_id", "grace_ms")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    grace_ms: int
    def __init__(self, instance_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class StopAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("deployment", "from_version", "to_version", "phase", "updated_replicas", "ready_replicas", "desired_replicas", "message", "started_at_ms", "generation", "from_revision", "to_revision", "waiting_for_capacity")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[Rollout.Phase]
        PHASE_PROGRESSING: _ClassVar[Rollout.Phase]
        PHASE_COMPLETE: _ClassVar[Rollout.Phase]
        PHASE_PAUSED: _ClassVar[Rollout.Phase]
        PHASE_ROLLING_BACK: _ClassVar[Rollout.Phase]
        PHASE_ROLLED_BACK: _ClassVar[Rollout.Phase]
    PHASE_UNSPECIFIED: Rollout.Phase
    PHASE_PROGRESSING: Rollout.Phase
    PHASE_COMPLETE: Rollout.Phase
    PHASE_PAUSED: Rollout.Phase
    PHASE_ROLLING_BACK: Rollout.Phase
    PHASE_ROLLED_BACK: Rollout.Phase
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    from_version: str
    to_version: str
    phase: Rollout.Phase
    updated_replicas: int
    ready_replicas: int
    desired_replicas: int
    message: str
    started_at_ms: int
    generation: int
    from_revision: str
    to_revision: str
    waiting_for_capacity: int
    def __init__(self, deployment: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., phase: _Optional[_Union[Rollout.Phase, str]] = ..., updated_replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., desired_replicas: _Optional[int] = ..., message: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., generation: _Optional[int] = ..., from_revision: _Optional[str] = ..., to_revision: _Optional[str] = ..., waiting_for_capacity: _Optional[int] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...
