// Regenerates test/vectors/signing.json: `npx tsx scripts/make-signing-vectors.ts`.
//
// Keys come from fixed seeds, so every run yields the same keys, inputs, canonical
// bytes and Ed25519 signatures. ECDSA signatures are randomized by nature; to keep
// the file stable, an ES256 signature already in the file is kept when it still
// verifies over the same canonical bytes with the same key, and a fresh one is
// made only otherwise.
import { createECDH, createHash, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { canonicalBytes, sha256, signatureDomain, verifyFailure } from "../sdk/ts/src/core/signing.js";
import { Invocation } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { Command, Hello } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";

const outputPath = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "vectors", "signing.json");
const windowMs = 30_000;
const baseMs = 1_700_000_000_000;

const seed = (label: string): Buffer => createHash("sha256").update(`agentmesh signing vectors: ${label}`).digest();
const b64url = (bytes: Buffer): string => bytes.toString("base64url");

interface VectorKey {
  alg: "ES256" | "Ed25519";
  privateKeyPkcs8Pem: string;
  publicKeySpkiPem: string;
  privateJwk: Record<string, string>;
  publicJwk: Record<string, string>;
}

function es256Key(label: string): { key: KeyObject; description: VectorKey } {
  // A private scalar from a hash is below the P-256 order with overwhelming odds.
  const d = seed(label);
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const publicJwk = { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33, 65)) };
  const privateJwk = { ...publicJwk, d: b64url(d) };
  const key = createPrivateKey({ key: privateJwk, format: "jwk" });
  return { key, description: describe("ES256", key, privateJwk, publicJwk) };
}

function ed25519Key(label: string): { key: KeyObject; description: VectorKey } {
  const pkcs8Prefix = Buffer.from("302e020100300506032b657004220420", "hex");
  const key = createPrivateKey({ key: Buffer.concat([pkcs8Prefix, seed(label)]), format: "der", type: "pkcs8" });
  const privateJwk = key.export({ format: "jwk" }) as Record<string, string>;
  const publicJwk = createPublicKey(key).export({ format: "jwk" }) as Record<string, string>;
  return { key, description: describe("Ed25519", key, privateJwk, publicJwk) };
}

function describe(
  alg: VectorKey["alg"],
  key: KeyObject,
  privateJwk: Record<string, string>,
  publicJwk: Record<string, string>,
): VectorKey {
  return {
    alg,
    privateKeyPkcs8Pem: key.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeySpkiPem: createPublicKey(key).export({ type: "spki", format: "pem" }).toString(),
    privateJwk,
    publicJwk,
  };
}

const keys = { es256: es256Key("es256"), ed25519: ed25519Key("ed25519") };
type KeyName = keyof typeof keys;

interface PreviousFile {
  valid?: Array<{ key: string; canonicalHex: string; signatureHex: string }>;
  invalid?: Array<{ key: string; envelope: { signatureHex: string }; signedCanonicalHex?: string }>;
}
const previousSignatures = new Map<string, string[]>();
const remember = (key: string, signatureHex: string): void => {
  previousSignatures.set(key, [...(previousSignatures.get(key) ?? []), signatureHex]);
};
if (existsSync(outputPath)) {
  const previous = JSON.parse(readFileSync(outputPath, "utf8")) as PreviousFile;
  for (const item of previous.valid ?? []) remember(`${item.key}:${item.canonicalHex}`, item.signatureHex);
  for (const item of previous.invalid ?? []) {
    // Tampered cases hold a broken signature; signatureFor skips those as they do not verify.
    if (item.signedCanonicalHex) remember(`${item.key}:${item.signedCanonicalHex}`, item.envelope.signatureHex);
  }
}

function signatureFor(keyName: KeyName, canonical: Buffer): Buffer {
  const { key, description } = keys[keyName];
  if (description.alg === "Ed25519") return sign(null, canonical, key);
  const cacheKey = `${keyName}:${canonical.toString("hex")}`;
  for (const kept of previousSignatures.get(cacheKey) ?? []) {
    const signature = Buffer.from(kept, "hex");
    if (signature.length === 64 && verify("sha256", canonical, { key, dsaEncoding: "ieee-p1363" }, signature)) return signature;
  }
  const fresh = sign("sha256", canonical, { key, dsaEncoding: "ieee-p1363" });
  // Cases over the same bytes share one signature, so the next run keeps the file as it is.
  previousSignatures.set(cacheKey, [fresh.toString("hex")]);
  return fresh;
}

interface Inputs {
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  payload: Buffer;
  issuedAtMs: number;
  nonce: Buffer;
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

function signed(keyName: KeyName, inputs: Inputs): { envelope: EnvelopeJson; canonical: Buffer; payloadSha256: Buffer } {
  const payloadSha256 = sha256(inputs.payload);
  const canonical = canonicalBytes({ ...inputs, payloadSha256 });
  const envelope: EnvelopeJson = {
    alg: keys[keyName].description.alg,
    signer: inputs.signer,
    audience: inputs.audience,
    method: inputs.method,
    payloadType: inputs.payloadType,
    payloadHex: inputs.payload.toString("hex"),
    issuedAtMs: inputs.issuedAtMs,
    nonceHex: inputs.nonce.toString("hex"),
    signatureHex: signatureFor(keyName, canonical).toString("hex"),
  };
  return { envelope, canonical, payloadSha256 };
}

const nonce = (label: string): Buffer => seed(`nonce ${label}`).subarray(0, 16);
const bytesOf = (message: { finish(): Uint8Array }): Buffer => Buffer.from(message.finish());

// The identities and audiences are the ones agentmesh really uses (docs/signing.md §7), and
// each payload is a real encoding of its payload type, so an SDK can decode it after verifying.
const trustDomain = "mesh.local";
const controlPlane = `spiffe://${trustDomain}/server`;
const serverS1 = `spiffe://${trustDomain}/server/s1`;
const sidecarA = `spiffe://${trustDomain}/sidecar/host-a`;
const sidecarB = `spiffe://${trustDomain}/sidecar/host-b`;
const otherSidecar = `spiffe://${trustDomain}/sidecar/host-c`;

/** Which row of docs/signing.md §7 a case exercises ("synthetic": none, it tests the byte layout only). */
type Usage = "RegisterRequest.envelope" | "Hello.envelope" | "Command.envelope" | "CallFrame.envelope" | "synthetic";

const invocation = (payload: Buffer): Buffer =>
  bytesOf(
    Invocation.encode(
      Invocation.fromPartial({
        callId: "call-1",
        capability: "sql.query",
        version: "2.1.0",
        payload,
        contentType: "application/json",
        caller: sidecarA,
        deadlineMs: baseMs + 31_234,
      }),
    ),
  );

const registerInputs: Inputs = {
  signer: sidecarA,
  audience: controlPlane,
  method: "/agentmesh.v1.RegistryService/Register",
  payloadType: "agentmesh.v1.RegisterRequest",
  // The RegisterRequest without its envelope, as the envelope's payload carries it.
  payload: bytesOf(
    RegisterRequest.encode(
      RegisterRequest.fromPartial({
        manifest: { name: "summarizer", version: "1.2.3", capabilities: [{ name: "text.summarize", version: "1.2.3" }] },
        instanceId: "summarizer-1",
        endpoint: "10.0.0.1:7430",
        host: "host-a",
      }),
    ),
  ),
  issuedAtMs: baseMs,
  nonce: nonce("register"),
};
const helloInputs: Inputs = {
  signer: sidecarA,
  audience: controlPlane,
  method: "/agentmesh.v1.OrchestratorService/Connect",
  payloadType: "agentmesh.v1.Hello",
  // The Hello without its envelope.
  payload: bytesOf(
    Hello.encode(Hello.fromPartial({ sidecarId: "host-a", host: "host-a", instanceIds: ["summarizer-1"], inboundEndpoint: "10.0.0.1:7430", capacity: 4 })),
  ),
  issuedAtMs: baseMs + 500,
  nonce: nonce("hello"),
};
const commandInputs: Inputs = {
  signer: serverS1,
  audience: sidecarA,
  method: "/agentmesh.v1.OrchestratorService/Connect",
  payloadType: "agentmesh.v1.Command",
  // The Command without its envelope.
  payload: bytesOf(Command.encode(Command.fromPartial({ commandId: "cmd-1", action: { $case: "restart", value: { instanceId: "summarizer-1" } } }))),
  issuedAtMs: baseMs + 750,
  nonce: nonce("command"),
};
const invokeInputs: Inputs = {
  // The calling sidecar signs, for the sidecar that owns the target instance.
  signer: sidecarA,
  audience: sidecarB,
  method: "/agentmesh.v1.AgentService/Invoke",
  payloadType: "agentmesh.v1.Invocation",
  payload: invocation(Buffer.from('{"query":"select 1"}', "utf8")),
  issuedAtMs: baseMs + 1234,
  nonce: nonce("invoke"),
};

const validCases: Array<{ name: string; usage: Usage; key: KeyName; inputs: Inputs; nowMs: number }> = [
  { name: "es256 register", usage: "RegisterRequest.envelope", key: "es256", inputs: registerInputs, nowMs: baseMs },
  {
    name: "es256 invoke, receiver clock 30 s ahead (edge of window)",
    usage: "CallFrame.envelope",
    key: "es256",
    inputs: invokeInputs,
    nowMs: invokeInputs.issuedAtMs + windowMs,
  },
  {
    name: "es256 empty payload, receiver clock 30 s behind (edge of window)",
    usage: "CallFrame.envelope",
    key: "es256",
    // An Invocation with every field at its default encodes to zero bytes.
    inputs: { ...invokeInputs, payload: Buffer.alloc(0), nonce: nonce("empty") },
    nowMs: invokeInputs.issuedAtMs - windowMs,
  },
  {
    name: "es256 non-ASCII audience (lengths count UTF-8 bytes)",
    usage: "synthetic",
    key: "es256",
    inputs: { ...invokeInputs, audience: "résumé-service", nonce: nonce("utf8") },
    nowMs: invokeInputs.issuedAtMs,
  },
  { name: "es256 connect hello", usage: "Hello.envelope", key: "es256", inputs: helloInputs, nowMs: helloInputs.issuedAtMs },
  { name: "es256 command from a server", usage: "Command.envelope", key: "es256", inputs: commandInputs, nowMs: commandInputs.issuedAtMs + 2_000 },
  { name: "ed25519 register", usage: "RegisterRequest.envelope", key: "ed25519", inputs: registerInputs, nowMs: baseMs + 5_000 },
  {
    name: "ed25519 invoke with a 1 KiB payload",
    usage: "CallFrame.envelope",
    key: "ed25519",
    inputs: { ...invokeInputs, payload: invocation(Buffer.alloc(1024, 0xab)), nonce: nonce("large") },
    nowMs: invokeInputs.issuedAtMs,
  },
];

const valid = validCases.map((testCase) => {
  const { envelope, canonical, payloadSha256 } = signed(testCase.key, testCase.inputs);
  return {
    name: testCase.name,
    usage: testCase.usage,
    key: testCase.key,
    ...envelope,
    nowMs: testCase.nowMs,
    payloadSha256Hex: payloadSha256.toString("hex"),
    canonicalHex: canonical.toString("hex"),
    signatureDeterministic: keys[testCase.key].description.alg === "Ed25519",
  };
});

interface Expectations {
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
}
const expectFrom = (inputs: Inputs): Expectations => ({
  signer: inputs.signer,
  audience: inputs.audience,
  method: inputs.method,
  payloadType: inputs.payloadType,
});

function invalidCase(
  name: string,
  reason: string,
  expectedError: string,
  keyName: KeyName,
  inputs: Inputs,
  options: { nowMs?: number; expected?: Partial<Expectations>; mutate?: (envelope: EnvelopeJson) => void } = {},
) {
  const { envelope, canonical } = signed(keyName, inputs);
  options.mutate?.(envelope);
  return {
    name,
    reason,
    expectedError,
    key: keyName,
    envelope,
    expected: { ...expectFrom(inputs), ...options.expected },
    nowMs: options.nowMs ?? inputs.issuedAtMs,
    // Canonical bytes the signature was made over (before any tampering).
    signedCanonicalHex: canonical.toString("hex"),
  };
}

const flipFirstBit = (hex: string): string => {
  const bytes = Buffer.from(hex, "hex");
  bytes[0] = (bytes[0] ?? 0) ^ 0x80;
  return bytes.toString("hex");
};

const invalid = [
  invalidCase("es256 tampered payload", "payload changed after signing", verifyFailure.badSignature, "es256", invokeInputs, {
    mutate: (e) => {
      e.payloadHex = invocation(Buffer.from('{"query":"drop table"}', "utf8")).toString("hex");
    },
  }),
  invalidCase("ed25519 tampered payload", "payload changed after signing", verifyFailure.badSignature, "ed25519", invokeInputs, {
    mutate: (e) => {
      e.payloadHex = `${e.payloadHex}00`;
    },
  }),
  invalidCase("wrong signer", "signed as another identity than the one expected", verifyFailure.signerMismatch, "es256", invokeInputs, {
    expected: { signer: otherSidecar },
  }),
  invalidCase("wrong audience", "meant for another receiver", verifyFailure.audienceMismatch, "es256", invokeInputs, {
    expected: { audience: otherSidecar },
  }),
  invalidCase("wrong method", "replayed onto another RPC", verifyFailure.methodMismatch, "ed25519", registerInputs, {
    expected: { method: "/agentmesh.v1.RegistryService/Deregister" },
  }),
  invalidCase("wrong payload type", "payload declared as another message type", verifyFailure.payloadTypeMismatch, "ed25519", registerInputs, {
    expected: { payloadType: "agentmesh.v1.DeregisterRequest" },
  }),
  invalidCase("timestamp 31 s old", "issued 31 s before the receiver's now", verifyFailure.timestampOutsideWindow, "es256", invokeInputs, {
    nowMs: invokeInputs.issuedAtMs + windowMs + 1_000,
  }),
  invalidCase("timestamp 31 s in the future", "issued 31 s after the receiver's now", verifyFailure.timestampOutsideWindow, "es256", invokeInputs, {
    nowMs: invokeInputs.issuedAtMs - windowMs - 1_000,
  }),
  invalidCase("es256 bad signature", "one bit of the signature flipped", verifyFailure.badSignature, "es256", registerInputs, {
    mutate: (e) => {
      e.signatureHex = flipFirstBit(e.signatureHex);
    },
  }),
  invalidCase("ed25519 bad signature", "one bit of the signature flipped", verifyFailure.badSignature, "ed25519", registerInputs, {
    mutate: (e) => {
      e.signatureHex = flipFirstBit(e.signatureHex);
    },
  }),
  invalidCase("tampered timestamp", "issued_at_ms changed after signing", verifyFailure.badSignature, "es256", invokeInputs, {
    mutate: (e) => {
      e.issuedAtMs += 1;
    },
  }),
  invalidCase("es256 signature in DER", "ASN.1 DER instead of IEEE P1363 r||s", verifyFailure.badSignature, "es256", registerInputs, {
    mutate: (e) => {
      e.signatureHex = p1363ToDer(Buffer.from(e.signatureHex, "hex")).toString("hex");
    },
  }),
  invalidCase("alg does not match the key", "Ed25519 claimed for an ECDSA key", verifyFailure.badSignature, "es256", registerInputs, {
    mutate: (e) => {
      e.alg = "Ed25519";
    },
  }),
  invalidCase("wrong nonce length", "nonce of 15 bytes", verifyFailure.badNonceLength, "es256", {
    ...invokeInputs,
    nonce: nonce("short").subarray(0, 15),
  }),
  invalidCase("unsupported alg", "alg RS256 is not accepted", verifyFailure.unsupportedAlg, "es256", invokeInputs, {
    mutate: (e) => {
      e.alg = "RS256";
    },
  }),
];

function p1363ToDer(signature: Buffer): Buffer {
  const integer = (bytes: Buffer): Buffer => {
    let start = 0;
    while (start < bytes.length - 1 && bytes[start] === 0) start += 1;
    let value = bytes.subarray(start);
    if ((value[0] ?? 0) & 0x80) value = Buffer.concat([Buffer.from([0]), value]);
    return Buffer.concat([Buffer.from([0x02, value.length]), value]);
  };
  const body = Buffer.concat([integer(signature.subarray(0, 32)), integer(signature.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

const file = {
  description:
    "agentmesh SignedEnvelope test vectors (docs/signing.md §6). Valid cases: canonicalHex must match byte for byte; " +
    "the signature must verify; Ed25519 signatures must also match exactly (ECDSA is randomized); `usage` names the " +
    "row of docs/signing.md §7 the case follows. Invalid cases: verifying `envelope` with the key, the `expected` fields " +
    "and the receiver clock at `nowMs` must fail with `expectedError`; `signedCanonicalHex` is what the signature was made over.",
  version: 1,
  domain: signatureDomain,
  windowMs,
  keys: { es256: keys.es256.description, ed25519: keys.ed25519.description },
  valid,
  invalid,
};

writeFileSync(outputPath, `${JSON.stringify(file, null, 2)}\n`);
console.log(`wrote ${valid.length} valid and ${invalid.length} invalid cases to ${outputPath}`);
