import { generateKeyPairSync, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { algForKey, signEnvelope, verifyEnvelope, verifyFailure } from "../../sdk/ts/src/core/signing.js";
import type { VerifyEnvelopeOptions } from "../../sdk/ts/src/core/signing.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { loadOrCreateCa } from "../../services/identity/domain/ca.js";

const signer = "spiffe://mesh.local/agent/caller";
const audience = "spiffe://mesh.local/agent/callee";
const method = "/agentmesh.v1.AgentService/Invoke";
const payloadType = "agentmesh.v1.InvokeRequest";
const payload = Buffer.from("exact payload bytes");

const es256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const ed25519 = generateKeyPairSync("ed25519");

function sign(privateKey: KeyObject, clock: ManualClock, overrides: { payload?: Buffer } = {}): SignedEnvelope {
  return signEnvelope({ payload: overrides.payload ?? payload, signer, audience, method, payloadType, privateKey, clock });
}

function options(publicKey: KeyObject, clock: ManualClock, overrides: Partial<VerifyEnvelopeOptions> = {}): VerifyEnvelopeOptions {
  return {
    publicKey,
    expectedSigner: signer,
    expectedAudience: audience,
    expectedMethod: method,
    expectedPayloadType: payloadType,
    clock,
    nonceCache: new MemoryNonceCache({ clock }),
    ...overrides,
  };
}

const failure = (reason: string) => new MeshError("unauthenticated", reason);

describe("signEnvelope / verifyEnvelope", () => {
  it.each([
    ["ES256", es256],
    ["Ed25519", ed25519],
  ] as const)("%s round-trips and fills every field", async (alg, keys) => {
    const clock = new ManualClock();
    const envelope = sign(keys.privateKey, clock);
    expect(envelope).toMatchObject({ signer, audience, method, payloadType, alg, issuedAtMs: clock.nowMs() });
    expect(envelope.payload.equals(payload)).toBe(true);
    expect(envelope.nonce).toHaveLength(16);
    expect(envelope.signature).toHaveLength(64);
    await expect(verifyEnvelope(envelope, options(keys.publicKey, clock))).resolves.toBeUndefined();
  });

  it("uses a fresh nonce per envelope", () => {
    const clock = new ManualClock();
    expect(sign(es256.privateKey, clock).nonce.equals(sign(es256.privateKey, clock).nonce)).toBe(false);
  });

  it("refuses keys it cannot sign with", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const clock = new ManualClock();
    expect(() => sign(rsa.privateKey, clock)).toThrow(MeshError);
    expect(() => sign(p384.privateKey, clock)).toThrow(MeshError);
    expect(() => sign(es256.publicKey, clock)).toThrow(MeshError);
    expect(algForKey(ed25519.publicKey)).toBe("Ed25519");
  });

  it("signs for injected randomness and clock", () => {
    const clock = new ManualClock(42);
    const envelope = signEnvelope({
      payload,
      signer,
      audience,
      method,
      payloadType,
      privateKey: ed25519.privateKey,
      clock,
      randomBytes: (size) => Buffer.alloc(size, 7),
    });
    expect(envelope.issuedAtMs).toBe(42);
    expect(envelope.nonce.equals(Buffer.alloc(16, 7))).toBe(true);
  });

  // Each case breaks exactly one thing; the reason names it.
  const cases: Array<[string, string, (e: SignedEnvelope) => SignedEnvelope, Partial<VerifyEnvelopeOptions>, number]> = [
    ["unsupported alg", verifyFailure.unsupportedAlg, (e) => ({ ...e, alg: "HS256" }), {}, 0],
    ["empty alg", verifyFailure.unsupportedAlg, (e) => ({ ...e, alg: "" }), {}, 0],
    ["nonce of 15 bytes", verifyFailure.badNonceLength, (e) => ({ ...e, nonce: e.nonce.subarray(0, 15) }), {}, 0],
    ["nonce of 17 bytes", verifyFailure.badNonceLength, (e) => ({ ...e, nonce: Buffer.concat([e.nonce, Buffer.from([1])]) }), {}, 0],
    ["wrong signer", verifyFailure.signerMismatch, (e) => e, { expectedSigner: "spiffe://mesh.local/agent/other" }, 0],
    ["signer rule says no", verifyFailure.signerMismatch, (e) => e, { expectedSigner: () => false }, 0],
    ["wrong audience", verifyFailure.audienceMismatch, (e) => e, { expectedAudience: "spiffe://mesh.local/agent/other" }, 0],
    ["wrong method", verifyFailure.methodMismatch, (e) => e, { expectedMethod: "/agentmesh.v1.AgentService/InvokeStream" }, 0],
    ["wrong payload type", verifyFailure.payloadTypeMismatch, (e) => e, { expectedPayloadType: "agentmesh.v1.Other" }, 0],
    ["timestamp 31 s old", verifyFailure.timestampOutsideWindow, (e) => e, {}, 31_000],
    ["timestamp 31 s in the future", verifyFailure.timestampOutsideWindow, (e) => e, {}, -31_000],
    ["narrower window", verifyFailure.timestampOutsideWindow, (e) => e, { windowMs: 1_000 }, 1_001],
    ["tampered payload", verifyFailure.badSignature, (e) => ({ ...e, payload: Buffer.from("other payload bytes") }), {}, 0],
    ["tampered timestamp", verifyFailure.badSignature, (e) => ({ ...e, issuedAtMs: e.issuedAtMs + 1 }), {}, 0],
    ["tampered nonce", verifyFailure.badSignature, (e) => ({ ...e, nonce: Buffer.alloc(16) }), {}, 0],
    ["signature flipped", verifyFailure.badSignature, (e) => ({ ...e, signature: flip(e.signature) }), {}, 0],
    ["signature truncated", verifyFailure.badSignature, (e) => ({ ...e, signature: e.signature.subarray(0, 63) }), {}, 0],
    ["signed by another key", verifyFailure.badSignature, (e) => e, { publicKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey }, 0],
    ["alg swapped for the key", verifyFailure.badSignature, (e) => ({ ...e, alg: "Ed25519" }), {}, 0],
  ];

  it.each(cases)("rejects %s: %s", async (_label, reason, mutate, overrides, clockOffsetMs) => {
    const clock = new ManualClock();
    const envelope = mutate(sign(es256.privateKey, clock));
    clock.advance(clockOffsetMs);
    await expect(verifyEnvelope(envelope, options(es256.publicKey, clock, overrides))).rejects.toThrow(failure(reason));
  });

  it("accepts the edges of the window", async () => {
    const clock = new ManualClock();
    const old = sign(es256.privateKey, clock);
    clock.advance(30_000);
    await expect(verifyEnvelope(old, options(es256.publicKey, clock))).resolves.toBeUndefined();
    const future = sign(es256.privateKey, clock);
    clock.advance(-30_000);
    await expect(verifyEnvelope(future, options(es256.publicKey, clock))).resolves.toBeUndefined();
  });

  it("checks in the documented order: alg before nonce before signer before the rest", async () => {
    const clock = new ManualClock();
    const envelope = { ...sign(es256.privateKey, clock), alg: "none", nonce: Buffer.alloc(3), payload: Buffer.from("x") };
    clock.advance(60_000);
    const wrongEverything = options(es256.publicKey, clock, { expectedSigner: "x", expectedAudience: "y", expectedMethod: "z" });
    await expect(verifyEnvelope(envelope, wrongEverything)).rejects.toThrow(failure(verifyFailure.unsupportedAlg));
    await expect(verifyEnvelope({ ...envelope, alg: "ES256" }, wrongEverything)).rejects.toThrow(failure(verifyFailure.badNonceLength));
    const withNonce = { ...envelope, alg: "ES256", nonce: Buffer.alloc(16) };
    await expect(verifyEnvelope(withNonce, wrongEverything)).rejects.toThrow(failure(verifyFailure.signerMismatch));
    await expect(verifyEnvelope(withNonce, { ...wrongEverything, expectedSigner: signer })).rejects.toThrow(
      failure(verifyFailure.audienceMismatch),
    );
  });

  it("rejects a replayed nonce, and records nonces only for good signatures", async () => {
    const clock = new ManualClock();
    const nonceCache = new MemoryNonceCache({ clock });
    const envelope = sign(es256.privateKey, clock);
    const forged = { ...envelope, payload: Buffer.from("forged") };
    await expect(verifyEnvelope(forged, options(es256.publicKey, clock, { nonceCache }))).rejects.toThrow(
      failure(verifyFailure.badSignature),
    );
    expect(nonceCache.size).toBe(0);
    await verifyEnvelope(envelope, options(es256.publicKey, clock, { nonceCache }));
    await expect(verifyEnvelope(envelope, options(es256.publicKey, clock, { nonceCache }))).rejects.toThrow(
      failure(verifyFailure.replayedNonce),
    );
  });

  it("awaits an asynchronous nonce cache", async () => {
    const clock = new ManualClock();
    const seen: string[] = [];
    const asyncCache: NonceCache = {
      checkAndRemember: async (who, nonce) => {
        const key = `${who}:${Buffer.from(nonce).toString("hex")}`;
        if (seen.includes(key)) return false;
        seen.push(key);
        return true;
      },
    };
    const envelope = sign(ed25519.privateKey, clock);
    await verifyEnvelope(envelope, options(ed25519.publicKey, clock, { nonceCache: asyncCache }));
    await expect(verifyEnvelope(envelope, options(ed25519.publicKey, clock, { nonceCache: asyncCache }))).rejects.toThrow(
      failure(verifyFailure.replayedNonce),
    );
  });

  it("needs a key or a certificate", async () => {
    const clock = new ManualClock();
    const { publicKey: _omitted, ...rest } = options(es256.publicKey, clock);
    await expect(verifyEnvelope(sign(es256.privateKey, clock), rest)).rejects.toMatchObject({ kind: "invalidArgument" });
  });
});

describe("verifyEnvelope with the signer's certificate", () => {
  let certificate: X509Certificate;
  let privateKey: KeyObject;

  beforeAll(async () => {
    const clock = new ManualClock(Date.now());
    const ca = await loadOrCreateCa({ ...(await testCaPem()), trustDomain: "mesh.local", clock });
    const generated = await generateKeyAndCsr(signer);
    privateKey = generated.privateKey;
    const issued = await ca.issueCertificate({ csrPem: generated.csrPem, spiffeId: signer, ttlMs: 3_600_000 });
    certificate = new X509Certificate(issued.chainPem[0] ?? "");
  });

  it("verifies with the certificate's key when the signer is the certificate's SPIFFE ID", async () => {
    const clock = new ManualClock();
    const envelope = sign(privateKey, clock);
    const { publicKey: _omitted, ...rest } = options(es256.publicKey, clock);
    await expect(verifyEnvelope(envelope, { ...rest, certificate })).resolves.toBeUndefined();
  });

  it("refuses an envelope whose signer is not the certificate's identity, even if the caller expects it", async () => {
    const clock = new ManualClock();
    const impostor = "spiffe://mesh.local/agent/impostor";
    const envelope = signEnvelope({ payload, signer: impostor, audience, method, payloadType, privateKey, clock });
    const { publicKey: _omitted, ...rest } = options(es256.publicKey, clock);
    await expect(verifyEnvelope(envelope, { ...rest, certificate, expectedSigner: impostor })).rejects.toThrow(
      failure(verifyFailure.signerMismatch),
    );
  });

  it("accepts a forwarding rule for the signer", async () => {
    const clock = new ManualClock();
    const envelope = sign(privateKey, clock);
    const { publicKey: _omitted, ...rest } = options(es256.publicKey, clock);
    const allowed = new Set([signer, "spiffe://mesh.local/sidecar/host-a"]);
    await expect(verifyEnvelope(envelope, { ...rest, certificate, expectedSigner: (id) => allowed.has(id) })).resolves.toBeUndefined();
  });
});

function flip(bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  copy[10] = (copy[10] ?? 0) ^ 0x01;
  return copy;
}

async function testCaPem(): Promise<{ certPem: string; keyPem: string }> {
  const { mkdtemp, readFile, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dataDir = await mkdtemp(join(tmpdir(), "agentmesh-signing-ca-"));
  try {
    await loadOrCreateCa({ dataDir, trustDomain: "mesh.local", clock: new ManualClock(Date.now()) });
    return {
      certPem: await readFile(join(dataDir, "ca-cert.pem"), "utf8"),
      keyPem: await readFile(join(dataDir, "ca-key.pem"), "utf8"),
    };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
