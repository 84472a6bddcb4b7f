"""docs/signing.md byte for byte: the shared vectors every SDK passes (test/vectors/signing.json)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agentmesh.errors import InvalidArgument, Unauthenticated
from agentmesh.signing import (
    MemoryNonceCache,
    PrivateKey,
    PublicKey,
    VerifyFailure,
    canonical_bytes,
    load_private_key_pem,
    load_public_key_pem,
    sign_envelope,
    verify_envelope,
)
from agentmesh.v1 import types_pb2

VECTORS_FILE = Path(__file__).resolve().parents[3] / "test" / "vectors" / "signing.json"
vectors: dict[str, Any] = json.loads(VECTORS_FILE.read_text())


def key_pair(name: str) -> tuple[PrivateKey, PublicKey]:
    description = vectors["keys"][name]
    return load_private_key_pem(description["privateKeyPkcs8Pem"]), load_public_key_pem(description["publicKeySpkiPem"])


def to_envelope(case: dict[str, Any]) -> types_pb2.SignedEnvelope:
    return types_pb2.SignedEnvelope(
        payload=bytes.fromhex(case["payloadHex"]),
        signer=case["signer"],
        alg=case["alg"],
        signature=bytes.fromhex(case["signatureHex"]),
        issued_at_ms=case["issuedAtMs"],
        nonce=bytes.fromhex(case["nonceHex"]),
        audience=case["audience"],
        method=case["method"],
        payload_type=case["payloadType"],
    )


def clock(now_ms: int) -> Any:
    return lambda: now_ms


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_has_the_cases_the_spec_promises() -> None:
    assert vectors["domain"] == "agentmesh-sig-v1"
    assert vectors["windowMs"] == 30_000
    assert {case["alg"] for case in vectors["valid"]} >= {"ES256", "Ed25519"}
    reasons = {case["expectedError"] for case in vectors["invalid"]}
    assert reasons >= {
        VerifyFailure.BAD_SIGNATURE,
        VerifyFailure.SIGNER_MISMATCH,
        VerifyFailure.AUDIENCE_MISMATCH,
        VerifyFailure.TIMESTAMP_OUTSIDE_WINDOW,
        VerifyFailure.BAD_NONCE_LENGTH,
    }


@pytest.mark.parametrize("name", sorted(vectors["keys"]))
def test_pem_and_jwk_forms_are_the_same_key(name: str) -> None:
    private_key, public_key = key_pair(name)
    jwk = vectors["keys"][name]["privateJwk"]
    public_jwk = vectors["keys"][name]["publicJwk"]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        numbers = private_key.private_numbers()
        assert numbers.private_value == int.from_bytes(b64url(jwk["d"]), "big")
        for point in (numbers.public_numbers, public_key.public_numbers()):
            assert point.x == int.from_bytes(b64url(public_jwk["x"]), "big")
            assert point.y == int.from_bytes(b64url(public_jwk["y"]), "big")
    else:
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
        assert private_key.private_bytes_raw() == b64url(jwk["d"])
        assert private_key.public_key().public_bytes_raw() == public_key.public_bytes_raw() == b64url(public_jwk["x"])


@pytest.mark.parametrize("case", vectors["valid"], ids=[case["name"] for case in vectors["valid"]])
def test_valid_case(case: dict[str, Any]) -> None:
    private_key, public_key = key_pair(case["key"])
    envelope = to_envelope(case)
    digest = hashlib.sha256(envelope.payload).digest()
    assert digest.hex() == case["payloadSha256Hex"]
    canonical = canonical_bytes(
        signer=envelope.signer,
        audience=envelope.audience,
        method=envelope.method,
        payload_type=envelope.payload_type,
        issued_at_ms=envelope.issued_at_ms,
        nonce=envelope.nonce,
        payload_sha256=digest,
    )
    assert canonical.hex() == case["canonicalHex"]

    verify_envelope(
        envelope,
        public_key=public_key,
        expected_signer=case["signer"],
        expected_audience=case["audience"],
        expected_method=case["method"],
        expected_payload_type=case["payloadType"],
        nonce_cache=MemoryNonceCache(now_ms=clock(case["nowMs"])),
        now_ms=clock(case["nowMs"]),
    )

    # Our signer builds the same canonical bytes, and the same signature where it is deterministic.
    resigned = sign_envelope(
        envelope.payload,
        signer=case["signer"],
        audience=case["audience"],
        method=case["method"],
        payload_type=case["payloadType"],
        private_key=private_key,
        now_ms=clock(case["issuedAtMs"]),
        random_bytes=lambda size: bytes.fromhex(case["nonceHex"]),
    )
    assert resigned.alg == case["alg"]
    assert (resigned.nonce.hex(), resigned.issued_at_ms) == (case["nonceHex"], case["issuedAtMs"])
    assert len(resigned.signature) == 64
    if case["signatureDeterministic"]:
        assert resigned.signature.hex() == case["signatureHex"]
    verify_envelope(
        resigned,
        public_key=public_key,
        expected_signer=case["signer"],
        expected_audience=case["audience"],
        expected_method=case["method"],
        expected_payload_type=case["payloadType"],
        nonce_cache=MemoryNonceCache(now_ms=clock(case["nowMs"])),
        now_ms=clock(case["nowMs"]),
    )


@pytest.mark.parametrize("case", vectors["invalid"], ids=[case["name"] for case in vectors["invalid"]])
def test_invalid_case(case: dict[str, Any]) -> None:
    _, public_key = key_pair(case["key"])
    expected = case["expected"]
    with pytest.raises(Unauthenticated) as raised:
        verify_envelope(
            to_envelope(case["envelope"]),
            public_key=public_key,
            expected_signer=expected["signer"],
            expected_audience=expected["audience"],
            expected_method=expected["method"],
            expected_payload_type=expected["payloadType"],
            nonce_cache=MemoryNonceCache(now_ms=clock(case["nowMs"])),
            now_ms=clock(case["nowMs"]),
        )
    assert raised.value.message == case["expectedError"]


def test_a_replayed_envelope_is_refused_the_second_time() -> None:
    case = vectors["valid"][0]
    _, public_key = key_pair(case["key"])
    cache = MemoryNonceCache(now_ms=clock(case["nowMs"]))
    options: dict[str, Any] = {
        "public_key": public_key,
        "expected_signer": case["signer"],
        "expected_audience": case["audience"],
        "expected_method": case["method"],
        "expected_payload_type": case["payloadType"],
        "nonce_cache": cache,
        "now_ms": clock(case["nowMs"]),
    }
    verify_envelope(to_envelope(case), **options)
    with pytest.raises(Unauthenticated, match=VerifyFailure.REPLAYED_NONCE):
        verify_envelope(to_envelope(case), **options)


def test_a_forged_envelope_does_not_burn_the_nonce() -> None:
    case = vectors["valid"][0]
    _, public_key = key_pair(case["key"])
    cache = MemoryNonceCache(now_ms=clock(case["nowMs"]))
    options: dict[str, Any] = {
        "public_key": public_key,
        "expected_signer": case["signer"],
        "expected_audience": case["audience"],
        "expected_method": case["method"],
        "expected_payload_type": case["payloadType"],
        "nonce_cache": cache,
        "now_ms": clock(case["nowMs"]),
    }
    forged = to_envelope(case)
    forged.signature = bytes(64)
    with pytest.raises(Unauthenticated, match=VerifyFailure.BAD_SIGNATURE):
        verify_envelope(forged, **options)
    verify_envelope(to_envelope(case), **options)


def test_canonical_bytes_follow_the_documented_layout_built_by_hand() -> None:
    case = next(case for case in vectors["valid"] if "non-ASCII" in case["name"])

    def lp(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    expected = b"".join(
        (
            b"agentmesh-sig-v1",
            lp(case["signer"].encode()),
            lp(case["audience"].encode()),
            lp(case["method"].encode()),
            lp(case["payloadType"].encode()),
            struct.pack(">Q", case["issuedAtMs"]),
            lp(bytes.fromhex(case["nonceHex"])),
            lp(bytes.fromhex(case["payloadSha256Hex"])),
        )
    )
    assert expected.hex() == case["canonicalHex"]


def test_only_p256_and_ed25519_keys_sign() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidArgument, match="ECDSA P-256 or Ed25519"):
        sign_envelope(b"", signer="s", audience="a", method="m", payload_type="t", private_key=p384)
    with pytest.raises(InvalidArgument, match="non-negative"):
        canonical_bytes(
            signer="", audience="", method="", payload_type="", issued_at_ms=-1, nonce=b"", payload_sha256=b""
        )
