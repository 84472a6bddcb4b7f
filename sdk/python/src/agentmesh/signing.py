"""Signed envelopes, ``agentmesh-sig-v1`` (docs/signing.md; test/vectors/signing.json is its executable form).

The signature covers the payload bytes exactly as they travel, never a
re-encoding, so verify before decoding::

    envelope = sign_envelope(payload, signer=..., audience=..., method=..., payload_type=..., private_key=key)
    verify_envelope(envelope, public_key=..., expected_signer=..., expected_audience=...,
                    expected_method=..., expected_payload_type=..., nonce_cache=cache)
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Final, Literal, Protocol, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from agentmesh.errors import InvalidArgument, Unauthenticated
from agentmesh.v1 import types_pb2

__all__ = [
    "DEFAULT_WINDOW_MS",
    "NONCE_LENGTH_BYTES",
    "SIGNATURE_DOMAIN",
    "MemoryNonceCache",
    "NonceCache",
    "PrivateKey",
    "PublicKey",
    "SignatureAlg",
    "VerifyFailure",
    "alg_for_key",
    "canonical_bytes",
    "load_private_key_pem",
    "load_public_key_pem",
    "sign_envelope",
    "verify_envelope",
]

SIGNATURE_DOMAIN: Final = b"agentmesh-sig-v1"
NONCE_LENGTH_BYTES: Final = 16
DEFAULT_WINDOW_MS: Final = 30_000
_SIGNATURE_BYTES: Final = 64
_P256_SCALAR_BYTES: Final = 32
_MAX_U64: Final = 2**64 - 1

SignatureAlg: TypeAlias = Literal["ES256", "Ed25519"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class VerifyFailure:
    """The reasons verify_envelope gives, in the order it checks them (docs/signing.md §5)."""

    UNSUPPORTED_ALG: Final = "unsupported signature algorithm"
    BAD_NONCE_LENGTH: Final = "nonce must be 16 bytes"
    SIGNER_MISMATCH: Final = "signer mismatch"
    AUDIENCE_MISMATCH: Final = "audience mismatch"
    METHOD_MISMATCH: Final = "method mismatch"
    PAYLOAD_TYPE_MISMATCH: Final = "payload type mismatch"
    TIMESTAMP_OUTSIDE_WINDOW: Final = "timestamp outside window"
    BAD_SIGNATURE: Final = "signature invalid"
    REPLAYED_NONCE: Final = "nonce replayed"


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def canonical_bytes(
    *,
    signer: str,
    audience: str,
    method: str,
    payload_type: str,
    issued_at_ms: int,
    nonce: bytes,
    payload_sha256: bytes,
) -> bytes:
    """``"agentmesh-sig-v1" || lp(signer) || lp(audience) || lp(method) || lp(payload_type)
    || u64be(issued_at_ms) || lp(nonce) || lp(sha256(payload))``, lp = u32be byte length + bytes."""
    if not 0 <= issued_at_ms <= _MAX_U64:
        raise InvalidArgument("issued_at_ms must be a non-negative 64-bit integer")
    return b"".join(
        (
            SIGNATURE_DOMAIN,
            _length_prefixed(signer.encode("utf-8")),
            _length_prefixed(audience.encode("utf-8")),
            _length_prefixed(method.encode("utf-8")),
            _length_prefixed(payload_type.encode("utf-8")),
            struct.pack(">Q", issued_at_ms),
            _length_prefixed(bytes(nonce)),
            _length_prefixed(bytes(payload_sha256)),
        )
    )


def _canonical_of(envelope: types_pb2.SignedEnvelope) -> bytes:
    return canonical_bytes(
        signer=envelope.signer,
        audience=envelope.audience,
        method=envelope.method,
        payload_type=envelope.payload_type,
        issued_at_ms=envelope.issued_at_ms,
        nonce=envelope.nonce,
        payload_sha256=hashlib.sha256(envelope.payload).digest(),
    )


def alg_for_key(key: PrivateKey | PublicKey) -> SignatureAlg | None:
    """The algorithm a key signs with, or None when agentmesh does not support it (only P-256 for ECDSA)."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def load_private_key_pem(pem: bytes | str) -> PrivateKey:
    """A PKCS#8 (or SEC1) PEM private key; only ECDSA P-256 and Ed25519 are accepted."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)) or alg_for_key(key) is None:
        raise InvalidArgument("signing key must be an ECDSA P-256 or Ed25519 private key")
    return key


def load_public_key_pem(pem: bytes | str) -> PublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)) or alg_for_key(key) is None:
        raise InvalidArgument("public key must be an ECDSA P-256 or Ed25519 key")
    return key


def _sign_canonical(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    # cryptography answers ASN.1 DER; the wire form is IEEE P1363 r || s, 32 bytes each.
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_P256_SCALAR_BYTES, "big") + s.to_bytes(_P256_SCALAR_BYTES, "big")


def sign_envelope(
    payload: bytes,
    *,
    signer: str,
    audience: str,
    method: str,
    payload_type: str,
    private_key: PrivateKey,
    now_ms: Callable[[], int] | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    signer_chain: list[bytes] | None = None,
) -> types_pb2.SignedEnvelope:
    """Signs ``payload`` (the exact bytes that will be sent) with a fresh 16-byte nonce and the time now."""
    alg = alg_for_key(private_key)
    if alg is None or not isinstance(private_key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise InvalidArgument("signing key must be an ECDSA P-256 or Ed25519 private key")
    nonce = bytes(random_bytes(NONCE_LENGTH_BYTES))
    if len(nonce) != NONCE_LENGTH_BYTES:
        raise InvalidArgument("random source must give 16 bytes")
    issued_at_ms = now_ms() if now_ms is not None else time.time_ns() // 1_000_000
    data = canonical_bytes(
        signer=signer,
        audience=audience,
        method=method,
        payload_type=payload_type,
        issued_at_ms=issued_at_ms,
        nonce=nonce,
        payload_sha256=hashlib.sha256(payload).digest(),
    )
    return types_pb2.SignedEnvelope(
        payload=bytes(payload),
        signer=signer,
        alg=alg,
        signature=_sign_canonical(private_key, data),
        issued_at_ms=issued_at_ms,
        nonce=nonce,
        audience=audience,
        method=method,
        payload_type=payload_type,
        signer_chain=list(signer_chain or []),
    )


class NonceCache(Protocol):
    """Remembers (signer, nonce) pairs until their envelopes can no longer pass the time check."""

    def check_and_remember(self, signer: str, nonce: bytes, issued_at_ms: int) -> bool:
        """True when the pair is fresh (and now remembered), False when it was seen before."""
        ...


class MemoryNonceCache:
    """An in-process NonceCache; several receivers of one audience need a shared one instead."""

    def __init__(self, *, window_ms: int = DEFAULT_WINDOW_MS, now_ms: Callable[[], int] | None = None) -> None:
        self._window_ms = window_ms
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._expiry_by_key: dict[tuple[str, bytes], int] = {}
        self._lock = threading.Lock()

    def check_and_remember(self, signer: str, nonce: bytes, issued_at_ms: int) -> bool:
        now = self._now_ms()
        key = (signer, bytes(nonce))
        with self._lock:
            self._expire(now)
            expiry = self._expiry_by_key.get(key)
            if expiry is not None and expiry >= now:
                return False
            # Until the envelope would fail the time check on this clock.
            self._expiry_by_key[key] = max(issued_at_ms, now) + self._window_ms
            return True

    def _expire(self, now: int) -> None:
        expired = [key for key, expiry in self._expiry_by_key.items() if expiry < now]
        for key in expired:
            del self._expiry_by_key[key]


def _reject(reason: str) -> Unauthenticated:
    return Unauthenticated(reason)


def _signature_valid(envelope: types_pb2.SignedEnvelope, key: PublicKey) -> bool:
    # A key of the other type is never tried: the alg field names what was used.
    if alg_for_key(key) != envelope.alg or len(envelope.signature) != _SIGNATURE_BYTES:
        return False
    data = _canonical_of(envelope)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(envelope.signature, data)
        else:
            r = int.from_bytes(envelope.signature[:_P256_SCALAR_BYTES], "big")
            s = int.from_bytes(envelope.signature[_P256_SCALAR_BYTES:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_envelope(
    envelope: types_pb2.SignedEnvelope,
    *,
    public_key: PublicKey,
    expected_signer: str | Callable[[str], bool],
    expected_audience: str,
    expected_method: str,
    expected_payload_type: str,
    nonce_cache: NonceCache,
    now_ms: Callable[[], int] | None = None,
    window_ms: int = DEFAULT_WINDOW_MS,
) -> None:
    """Checks an envelope before its payload is decoded.

    Raises :class:`~agentmesh.errors.Unauthenticated` with the short reason of
    the first failing check (docs/signing.md §5, :class:`VerifyFailure`). The
    nonce is remembered only once the signature is good, so a forgery cannot
    burn a legitimate sender's nonce. ``public_key`` must be the key of the
    certificate that names ``envelope.signer``; checking that binding is the
    caller's (step 3 of the spec).
    """
    if envelope.alg not in ("ES256", "Ed25519"):
        raise _reject(VerifyFailure.UNSUPPORTED_ALG)
    if len(envelope.nonce) != NONCE_LENGTH_BYTES:
        raise _reject(VerifyFailure.BAD_NONCE_LENGTH)
    signer_ok = expected_signer(envelope.signer) if callable(expected_signer) else envelope.signer == expected_signer
    if not signer_ok:
        raise _reject(VerifyFailure.SIGNER_MISMATCH)
    if envelope.audience != expected_audience:
        raise _reject(VerifyFailure.AUDIENCE_MISMATCH)
    if envelope.method != expected_method:
        raise _reject(VerifyFailure.METHOD_MISMATCH)
    if envelope.payload_type != expected_payload_type:
        raise _reject(VerifyFailure.PAYLOAD_TYPE_MISMATCH)
    now = now_ms() if now_ms is not None else time.time_ns() // 1_000_000
    if abs(now - envelope.issued_at_ms) > window_ms:
        raise _reject(VerifyFailure.TIMESTAMP_OUTSIDE_WINDOW)
    if not _signature_valid(envelope, public_key):
        raise _reject(VerifyFailure.BAD_SIGNATURE)
    if not nonce_cache.check_and_remember(envelope.signer, envelope.nonce, envelope.issued_at_ms):
        raise _reject(VerifyFailure.REPLAYED_NONCE)
