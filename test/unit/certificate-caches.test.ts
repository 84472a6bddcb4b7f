// Caches keyed by certificate (PeerVerifier's chain verdicts, SignerKeys' parsed
// attached leaves) must not grow with every renewal: a 20 s TTL renews each
// peer every ~9 s, and both caches kept every certificate ever shown until
// 10,000 of them had piled up (issue 8: the soak's sidecar memory).
import { X509Certificate } from "node:crypto";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { ExpiringCache } from "../../sdk/ts/src/core/expiring-cache.js";
import { PeerVerifier, verdictRetentionMs } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { type MeshCa, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { type MintedIdentity, mintIdentity, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

const trustDomain = "mesh.test";
const hostA = spiffe(trustDomain, "sidecar", "host-a");
const ttlMs = 20_000;
const renewEveryMs = 10_000;
const renewals = 150;

let caDir: string;
let ca: MeshCa;
const clock = new ManualClock(Date.now());
/** host-a's certificates, one per renewal, the i-th issued at startMs + i × renewEveryMs. */
const issued: MintedIdentity[] = [];
const startMs = clock.nowMs();

beforeAll(async () => {
  caDir = tempDir("agentmesh-certificate-caches-");
  ca = await loadOrCreateCa({ dataDir: caDir, trustDomain, clock });
  for (let index = 0; index < renewals; index += 1) {
    issued.push(await mintIdentity(ca, hostA, { ttlMs, clock: new ManualClock(startMs + index * renewEveryMs) }));
  }
});

afterAll(() => rmSync(caDir, { recursive: true, force: true }));

const presented = (identity: MintedIdentity) => ({ raw: identity.certificate.raw, fingerprint256: identity.certificate.fingerprint256 }) as never;
// Valid at a time: this many certificates overlap (TTL / renewal interval), plus those within the retention.
const liveAtOnce = Math.ceil((ttlMs + verdictRetentionMs) / renewEveryMs) + 1;

describe("certificate caches across renewals", () => {
  it(`PeerVerifier holds the verdicts of certificates still valid, not of all ${renewals} renewals`, () => {
    const verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
    let most = 0;
    issued.forEach((identity, index) => {
      const nowMs = startMs + index * renewEveryMs + 1000;
      expect(verifier.verify(presented(identity), nowMs).spiffeId.uri).toBe(hostA);
      most = Math.max(most, verifier.cachedVerdicts);
    });
    expect(most).toBeLessThanOrEqual(Math.max(64, 2 * liveAtOnce));
    // Still a cache: the current certificate's verdict is kept, and an expired one is refused.
    const lastAtMs = startMs + (renewals - 1) * renewEveryMs + 1000;
    const last = issued[renewals - 1] as MintedIdentity;
    expect(verifier.verify(presented(last), lastAtMs)).toBe(verifier.verify(presented(last), lastAtMs + 1));
    expect(() => verifier.verify(presented(issued[0] as MintedIdentity), lastAtMs)).toThrow(expect.objectContaining({ message: "client certificate expired or not yet valid" }));
  });

  it(`SignerKeys holds the attached leaves still valid, not one per renewal`, () => {
    const verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
    const keys = new SignerKeys({ verifier });
    const handshake = issued[0] as MintedIdentity;
    let most = 0;
    issued.forEach((identity, index) => {
      const nowMs = startMs + index * renewEveryMs + 1000;
      // The connection still shows an older certificate; the sender attaches its current leaf.
      const connection = { spiffeId: hostA, serial: "0", publicKey: handshake.certificate.publicKey };
      const envelope = { signerChain: [new X509Certificate(identity.chainPem[0] ?? "").raw] };
      expect(keys.keyFor(envelope, connection, nowMs).equals(identity.certificate.publicKey)).toBe(true);
      most = Math.max(most, keys.cachedLeaves);
    });
    expect(most).toBeLessThanOrEqual(Math.max(64, 2 * liveAtOnce));
  });
});

describe("ExpiringCache", () => {
  it("forgets an entry at its expiry", () => {
    const cache = new ExpiringCache<string>(100);
    cache.set("a", "value", 1000, 0);
    expect(cache.get("a", 999)).toBe("value");
    expect(cache.get("a", 1000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("sweeps expired entries once it has doubled, so it stays within twice the live entries", () => {
    const cache = new ExpiringCache<number>(10_000, 8);
    let most = 0;
    // Each entry lives 5 ticks: about 5 are live at any time.
    for (let tick = 0; tick < 1000; tick += 1) {
      cache.set(`k${tick}`, tick, tick + 5, tick);
      most = Math.max(most, cache.size);
    }
    expect(most).toBeLessThanOrEqual(16);
  });

  it("starts over when entries that all stay valid fill half of maxEntries", () => {
    const cache = new ExpiringCache<number>(100, 8);
    let most = 0;
    for (let index = 0; index < 1000; index += 1) {
      cache.set(`k${index}`, index, Number.POSITIVE_INFINITY, 0);
      most = Math.max(most, cache.size);
    }
    expect(most).toBeLessThanOrEqual(100);
  });
});
