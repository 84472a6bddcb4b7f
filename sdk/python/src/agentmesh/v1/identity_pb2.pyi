from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class IssueCertificateRequest(_message.Message):
    __slots__ = ("csr_pem", "join_token", "spiffe_id", "ttl_seconds")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    join_token: str
    spiffe_id: str
    ttl_seconds: int
    def __init__(self, csr_pem: _Optional[str] = ..., join_token: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class IssueCertificateResponse(_message.Message):
    __slots__ = ("certificate_chain_pem", "trust_bundle_pem", "expires_at_ms", "serial", "spiffe_id", "allowed_agent_names")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_AGENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: _containers.RepeatedScalarFieldContainer[str]
    trust_bundle_pem: _containers.RepeatedScalarFieldContainer[str]
    expires_at_ms: int
    serial: str
    spiffe_id: str
    allowed_agent_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, certificate_chain_pem: _Optional[_Iterable[str]] = ..., trust_bundle_pem: _Optional[_Iterable[str]] = ..., expires_at_ms: _Optional[int] = ..., serial: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., allowed_agent_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTrustBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrustBundleResponse(_message.Message):
    __slots__ = ("trust_bundle_pem", "trust_domain")
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    trust_bundle_pem: _containers.RepeatedScalarFieldContainer[str]
    trust_domain: str
    def __init__(self, trust_bundle_pem: _Optional[_Iterable[str]] = ..., trust_domain: _Optional[str] = ...) -> None: ...

class CreateJoinTokenRequest(_message.Message):
    __slots__ = ("allowed_agent_names", "host", "max_uses", "ttl_seconds")
    ALLOWED_AGENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    allowed_agent_names: _containers.RepeatedScalarFieldContainer[str]
    host: str
    max_uses: int
    ttl_seconds: int
    def __init__(self, allowed_agent_names: _Optional[_Iterable[str]] = ..., host: _Optional[str] = ..., max_uses: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateJoinTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at_ms", "token_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at_ms: int
    token_id: str
    def __init__(self, token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., token_id: _Optional[str] = ...) -> None: ...

class RevokeCertificateRequest(_message.Message):
    __slots__ = ("target", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: str
    reason: str
    def __init__(self, target: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeCertificateResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("entries_json",)
    ENTRIES_JSON_FIELD_NUMBER: _ClassVar[int]
    entries_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries_json: _Optional[_Iterable[str]] = ...) -> None: ...
