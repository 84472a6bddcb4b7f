// The one rule for which key must have signed an envelope arriving on an mTLS
// connection (SignerKeys): the server's EnvelopeOpener and the sidecars' inbound
// tunnels both use it, so a sender that renewed is accepted at once on a
// connection that still shows its previous certificate, and nothing else is.
import { X509Certificate } from "node:crypto";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { signEnvelope, verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import { PeerVerifier, normalizeSerial } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { type ConnectionIdentity, SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type MeshCa, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { type MintedIdentity, foreignCa, mintIdentity, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

const trustDomain = "mesh.test";
const hostA = spiffe(trustDomain, "sidecar", "host-a");
const hostB = spiffe(trustDomain, "sidecar", "host-b");
const audience = spiffe(trustDomain, "sidecar", "host-c");
const method = "/agentmesh.v1.AgentService/Invoke";
const payloadType = "agentmesh.v1.Invocation";

let caDir: string;
let ca: MeshCa;
let verifier: PeerVerifier;
let handshake: MintedIdentity;
let renewed: MintedIdentity;
let otherSidecar: MintedIdentity;
let expired: MintedIdentity;
let foreign: MintedIdentity;

beforeAll(async () => {
  caDir = tempDir("agentmesh-signer-keys-");
  ca = await loadOrCreateCa({ dataDir: caDir, trustDomain, clock: new ManualClock(Date.now()) });
  verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
  handshake = await mintIdentity(ca, hostA);
  renewed = await mintIdentity(ca, hostA);
  otherSidecar = await mintIdentity(ca, hostB);
  // Issued two hours ago for one hour: chained and named right, but over.
  expired = await mintIdentity(ca, hostA, { ttlMs: 60 * 60_000, clock: new ManualClock(Date.now() - 2 * 60 * 60_000) });
  foreign = await mintIdentity(await foreignCa(trustDomain), hostA);
});

afterAll(() => rmSync(caDir, { recursive: true, force: true }));

/** The connection as the receiver's mTLS check verified it: the handshake certificate of host-a. */
function connection(): ConnectionIdentity {
  const verified = verifier.verify({ raw: handshake.certificate.raw, fingerprint256: handshake.certificate.fingerprint256 } as never, Date.now());
  return { spiffeId: verified.spiffeId.uri, serial: verified.serial, publicKey: verified.publicKey };
}

function envelopeSignedBy(identity: MintedIdentity, attach: MintedIdentity | undefined, clock = new ManualClock(Date.now())): SignedEnvelope {
  return signEnvelope({
    payload: Buffer.from("invocation bytes"),
    signer: identity.spiffeId,
    audience,
    method,
    payloadType,
    privateKey: identity.privateKey,
    clock,
    signerChain: attach ? attach.chainPem.map((pem) => new X509Certificate(pem).raw) : undefined,
  });
}

function verifyWith(keys: SignerKeys, envelope: SignedEnvelope): Promise<void> {
  const clock = new ManualClock(Date.now());
  return verifyEnvelope(envelope, {
    publicKey: keys.keyFor(envelope, connection(), clock.nowMs()),
    expectedSigner: hostA,
    expectedAudience: audience,
    expectedMethod: method,
    expectedPayloadType: payloadType,
    clock,
    nonceCache: new MemoryNonceCache({ clock }),
  });
}

describe("SignerKeys: which key must have signed an envelope on an mTLS connection", () => {
  it("is the connection's key when no chain is attached, or the connection's own certificate is", async () => {
    const keys = new SignerKeys({ verifier });
    expect(keys.keyFor(envelopeSignedBy(handshake, undefined), connection(), Date.now())).toBe(connection().publicKey);
    expect(keys.keyFor(envelopeSignedBy(handshake, handshake), connection(), Date.now())).toBe(connection().publicKey);
    await expect(verifyWith(keys, envelopeSignedBy(handshake, handshake))).resolves.toBeUndefined();
  });

  it("accepts a renewed certificate of the same identity: the new key verifies on the old connection", async () => {
    const keys = new SignerKeys({ verifier });
    await expect(verifyWith(keys, envelopeSignedBy(renewed, renewed))).resolves.toBeUndefined();
    // Without the chain the receiver only knows the handshake key, which did not sign it.
    await expect(verifyWith(keys, envelopeSignedBy(renewed, undefined))).rejects.toMatchObject({ code: 16, message: "signature invalid" });
  });

  const refusals: Array<[string, () => MintedIdentity, string]> = [
    ["another identity's certificate (a sidecar signing as its peer)", () => otherSidecar, "signer mismatch"],
    ["an expired certificate of the same identity", () => expired, "client certificate expired or not yet valid"],
    ["a certificate of the same name from another CA", () => foreign, "client certificate not issued by the mesh CA"],
  ];

  it.each(refusals)("refuses %s with UNAUTHENTICATED before any signature check", (_case, attached, message) => {
    const keys = new SignerKeys({ verifier });
    const envelope = envelopeSignedBy(attached(), attached());
    expect(() => keys.keyFor(envelope, connection(), Date.now())).toThrow(expect.objectContaining({ code: 16, message }));
  });

  it("refuses a revoked certificate where a revocation list is kept", () => {
    const keys = new SignerKeys({ verifier, isRevoked: (serial) => serial === normalizeSerial(renewed.serial) });
    expect(() => keys.keyFor(envelopeSignedBy(renewed, renewed), connection(), Date.now())).toThrow(
      expect.objectContaining({ code: 16, message: "signer certificate revoked" }),
    );
  });

  it("refuses bytes that are no certificate", () => {
    const keys = new SignerKeys({ verifier });
    const envelope = { ...envelopeSignedBy(renewed, undefined), signerChain: [Buffer.from("not a certificate")] };
    expect(() => keys.keyFor(envelope, connection(), Date.now())).toThrow(expect.objectContaining({ code: 16, message: "signer certificate unreadable" }));
  });

  it("checks validity at every envelope, not once per parsed certificate", () => {
    const keys = new SignerKeys({ verifier });
    const envelope = envelopeSignedBy(renewed, renewed);
    expect(keys.keyFor(envelope, connection(), Date.now())).not.toBe(connection().publicKey);
    const afterExpiry = Date.parse(renewed.certificate.validTo) + 1;
    expect(() => keys.keyFor(envelope, connection(), afterExpiry)).toThrow(expect.objectContaining({ message: "client certificate expired or not yet valid" }));
  });
});
