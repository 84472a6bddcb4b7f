import { createPublicKey, createPrivateKey, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { canonicalBytes, sha256, signEnvelope, verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

interface VectorKey {
  alg: string;
  privateKeyPkcs8Pem: string;
  publicKeySpkiPem: string;
  privateJwk: Record<string, string>;
  publicJwk: Record<string, string>;
}
interface EnvelopeJson {
  alg: string;
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  payloadHex: string;
  issuedAtMs: number;
  nonceHex: string;
  signatureHex: string;
}
interface ValidCase extends EnvelopeJson {
  name: string;
  key: string;
  nowMs: number;
  payloadSha256Hex: string;
  canonicalHex: string;
  signatureDeterministic: boolean;
}
interface InvalidCase {
  name: string;
  reason: string;
  expectedError: string;
  key: string;
  envelope: EnvelopeJson;
  expected: { signer: string; audience: string; method: string; payloadType: string };
  nowMs: number;
}
interface VectorFile {
  domain: string;
  windowMs: number;
  keys: Record<string, VectorKey>;
  valid: ValidCase[];
  invalid: InvalidCase[];
}

const vectors = JSON.parse(readFileSync(new URL("../vectors/signing.json", import.meta.url), "utf8")) as VectorFile;

function keyPair(name: string): { privateKey: KeyObject; publicKey: KeyObject; description: VectorKey } {
  const description = vectors.keys[name];
  if (!description) throw new Error(`vector key ${name} missing`);
  return {
    privateKey: createPrivateKey(description.privateKeyPkcs8Pem),
    publicKey: createPublicKey(description.publicKeySpkiPem),
    description,
  };
}

function toEnvelope(json: EnvelopeJson): SignedEnvelope {
  return {
    payload: Buffer.from(json.payloadHex, "hex"),
    signer: json.signer,
    alg: json.alg,
    signature: Buffer.from(json.signatureHex, "hex"),
    issuedAtMs: json.issuedAtMs,
    nonce: Buffer.from(json.nonceHex, "hex"),
    audience: json.audience,
    method: json.method,
    payloadType: json.payloadType,
    signerChain: [],
  };
}

describe("signing vectors", () => {
  it("has the cases the spec promises", () => {
    expect(vectors.domain).toBe("agentmesh-sig-v1");
    expect(vectors.windowMs).toBe(30_000);
    expect(vectors.valid.map((c) => c.alg)).toEqual(expect.arrayContaining(["ES256", "Ed25519"]));
    const reasons = vectors.invalid.map((c) => c.expectedError);
    for (const reason of [
      "signature invalid",
      "signer mismatch",
      "audience mismatch",
      "timestamp outside window",
      "nonce must be 16 bytes",
    ]) {
      expect(reasons).toContain(reason);
    }
  });

  it.each(Object.keys(vectors.keys))("key %s: PEM and JWK forms are the same key", (name) => {
    const { privateKey, publicKey, description } = keyPair(name);
    const fromJwk = createPrivateKey({ key: description.privateJwk, format: "jwk" });
    expect(fromJwk.export({ format: "jwk" })).toEqual(privateKey.export({ format: "jwk" }));
    expect(createPublicKey({ key: description.publicJwk, format: "jwk" }).export({ format: "jwk" })).toEqual(
      publicKey.export({ format: "jwk" }),
    );
  });

  it.each(vectors.valid.map((c) => [c.name, c] as const))("valid: %s", async (_name, testCase) => {
    const { privateKey, publicKey } = keyPair(testCase.key);
    const envelope = toEnvelope(testCase);
    expect(sha256(envelope.payload).toString("hex")).toBe(testCase.payloadSha256Hex);
    const canonical = canonicalBytes({ ...envelope, payloadSha256: sha256(envelope.payload) });
    expect(canonical.toString("hex")).toBe(testCase.canonicalHex);

    const clock = new ManualClock(testCase.nowMs);
    await verifyEnvelope(envelope, {
      publicKey,
      expectedSigner: testCase.signer,
      expectedAudience: testCase.audience,
      expectedMethod: testCase.method,
      expectedPayloadType: testCase.payloadType,
      clock,
      nonceCache: new MemoryNonceCache({ clock }),
    });

    // Our signer must produce the same canonical bytes, and the same signature where it is deterministic.
    const resigned = signEnvelope({
      payload: envelope.payload,
      signer: testCase.signer,
      audience: testCase.audience,
      method: testCase.method,
      payloadType: testCase.payloadType,
      privateKey,
      clock: new ManualClock(testCase.issuedAtMs),
      randomBytes: () => Buffer.from(testCase.nonceHex, "hex"),
    });
    expect(resigned.alg).toBe(testCase.alg);
    if (testCase.signatureDeterministic) {
      expect(resigned.signature.toString("hex")).toBe(testCase.signatureHex);
    } else {
      expect(verify("sha256", canonical, { key: publicKey, dsaEncoding: "ieee-p1363" }, resigned.signature)).toBe(true);
    }
  });

  it.each(vectors.invalid.map((c) => [c.name, c] as const))("invalid: %s", async (_name, testCase) => {
    const { publicKey } = keyPair(testCase.key);
    const clock = new ManualClock(testCase.nowMs);
    const result = verifyEnvelope(toEnvelope(testCase.envelope), {
      publicKey,
      expectedSigner: testCase.expected.signer,
      expectedAudience: testCase.expected.audience,
      expectedMethod: testCase.expected.method,
      expectedPayloadType: testCase.expected.payloadType,
      clock,
      nonceCache: new MemoryNonceCache({ clock }),
    });
    await expect(result).rejects.toThrow(new MeshError("unauthenticated", testCase.expectedError));
    await expect(result).rejects.toMatchObject({ kind: "unauthenticated" });
  });

  it("canonical bytes follow the documented layout, built by hand", () => {
    const testCase = vectors.valid.find((c) => c.name.includes("non-ASCII"));
    if (!testCase) throw new Error("non-ASCII case missing");
    const lp = (bytes: Buffer): Buffer => {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      return Buffer.concat([length, bytes]);
    };
    const issuedAt = Buffer.alloc(8);
    issuedAt.writeBigUInt64BE(BigInt(testCase.issuedAtMs));
    const expected = Buffer.concat([
      Buffer.from("agentmesh-sig-v1"),
      lp(Buffer.from(testCase.signer)),
      lp(Buffer.from(testCase.audience)),
      lp(Buffer.from(testCase.method)),
      lp(Buffer.from(testCase.payloadType)),
      issuedAt,
      lp(Buffer.from(testCase.nonceHex, "hex")),
      lp(Buffer.from(testCase.payloadSha256Hex, "hex")),
    ]);
    expect(expected.toString("hex")).toBe(testCase.canonicalHex);
  });
});
