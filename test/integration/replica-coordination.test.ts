// What replicas on one Redis share beyond the state itself: the replay cache of
// signed requests (a request accepted by one replica is refused by every other) and
// the per-identity rate limit (an identity cannot multiply its rate by spreading its
// calls over replicas). Each replica is its own RedisCoordination, as in separate
// processes; the server builds exactly these pieces (services/server/server.ts).
import { generateKeyPairSync } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { defaultSignatureWindowMs, signEnvelope, verifyFailure } from "../../sdk/ts/src/core/signing.js";
import { EnvelopeOpener, controlPlaneAudience } from "../../services/identity/envelope-opener.js";
import type { CallerIdentity } from "../../services/server/call-context.js";
import { IdentityLimits } from "../../services/identity/identity-limits.js";
import { RedisCoordination } from "../../services/state/adapters/redis-coordination.js";
import type { DiscoverResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type SecureMesh, call, expectCode, mintIdentity, spiffe, startSecureMesh } from "../helpers/mesh-pki.js";
import { startPostgres, type ThrowawayPostgres } from "../helpers/postgres.js";
import { startRedis, type ThrowawayRedis } from "../helpers/redis.js";

const trustDomain = "mesh.test";
const method = "/agentmesh.v1.RegistryService/Register";
const payloadType = "agentmesh.v1.RegisterRequest";
const signer = `spiffe://${trustDomain}/agent/echo`;
const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const caller: CallerIdentity = { spiffeId: signer, publicKey, isAdmin: false, allowedAgentNames: new Set(["echo"]) };

let redis: ThrowawayRedis;
let postgres: ThrowawayPostgres;
const opened: RedisCoordination[] = [];
let mesh: SecureMesh | undefined;

beforeAll(async () => {
  [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
}, 60_000);
afterAll(async () => {
  await Promise.all([redis?.destroy(), postgres?.destroy()]);
});
afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  for (const coordination of opened.splice(0)) await coordination.close();
});

async function replicas(clock: ManualClock, count = 2): Promise<RedisCoordination[]> {
  const keyPrefix = redis.keyPrefix();
  for (let index = 0; index < count; index += 1) opened.push(await RedisCoordination.open({ url: redis.url, clock, keyPrefix }));
  return opened.slice(-count);
}

const envelope = (clock: ManualClock, payload = "register echo") =>
  signEnvelope({ payload: Buffer.from(payload), signer, audience: controlPlaneAudience(trustDomain), method, payloadType, privateKey, clock });

describe("signed requests across replicas (shared replay cache on Redis)", () => {
  it("a request accepted by one replica's opener is refused as a replay by another's, and fresh requests pass on both", async () => {
    const clock = new ManualClock(Date.now());
    const [first, second] = (await replicas(clock)).map(
      (coordination) => new EnvelopeOpener(trustDomain, coordination.nonceCache({ windowMs: defaultSignatureWindowMs }), clock),
    ) as [EnvelopeOpener, EnvelopeOpener];
    const signed = envelope(clock);
    expect(Buffer.from((await first.open(signed, caller, method, payloadType)) ?? []).toString()).toBe("register echo");
    await expect(second.open(signed, caller, method, payloadType)).rejects.toMatchObject({ kind: "unauthenticated", message: verifyFailure.replayedNonce });
    await expect(first.open(signed, caller, method, payloadType)).rejects.toMatchObject({ message: verifyFailure.replayedNonce });
    expect(await second.open(envelope(clock, "another"), caller, method, payloadType)).toBeDefined();
  });

  it("refuses (UNAVAILABLE) rather than accepts when Redis cannot answer: a replay must never slip through", async () => {
    const clock = new ManualClock(Date.now());
    const [coordination] = (await replicas(clock, 1)) as [RedisCoordination];
    const opener = new EnvelopeOpener(trustDomain, coordination.nonceCache({ windowMs: defaultSignatureWindowMs }), clock);
    await redis.stop();
    try {
      await expect(opener.open(envelope(clock), caller, method, payloadType)).rejects.toMatchObject({ kind: "unavailable" });
    } finally {
      await redis.start();
    }
  });
});

describe("per-identity rate limit across replicas (shared token bucket on Redis)", () => {
  const limits = { ratePerSecond: 10, burst: 4, maxInFlight: 0, maxStreams: 0 };

  it("without a shared limiter (the embedded default) admits synchronously: no promise, no I/O on the hot path", () => {
    const local = new IdentityLimits(limits, new ManualClock(Date.now()));
    const outcomes = Array.from({ length: 5 }, () => local.admit(signer, "unary"));
    expect(outcomes).toEqual([undefined, undefined, undefined, undefined, "rate"]);
  });

  it("two replicas' limits draw on one bucket per identity: the burst is shared, not doubled; other identities are untouched", async () => {
    const clock = new ManualClock(Date.now());
    const [first, second] = (await replicas(clock)).map((coordination) => new IdentityLimits(limits, clock, { limiter: coordination.rateLimiter })) as [IdentityLimits, IdentityLimits];
    const outcomes: Array<string | undefined> = [];
    for (let index = 0; index < 6; index += 1) outcomes.push(await (index % 2 === 0 ? first : second).admit(signer, "unary"));
    // Alone, each replica's bucket would admit 4 (8 in all).
    expect(outcomes).toEqual([undefined, undefined, undefined, undefined, "rate", "rate"]);
    expect(await second.admit("spiffe://mesh.test/agent/other", "unary")).toBeUndefined();
    clock.advance(100); // one token at 10/s
    expect([await first.admit(signer, "unary"), await second.admit(signer, "unary")]).toEqual([undefined, "rate"]);
  });

  it("refused by the shared bucket gives the in-flight slot back; while Redis is down each replica's own bucket decides", async () => {
    const clock = new ManualClock(Date.now());
    const [coordination] = (await replicas(clock, 1)) as [RedisCoordination];
    const unavailable: unknown[] = [];
    const guarded = new IdentityLimits({ ...limits, maxInFlight: 4 }, clock, { limiter: coordination.rateLimiter, onUnavailable: (error) => unavailable.push(error) });
    for (let index = 0; index < 4; index += 1) await coordination.rateLimiter.tryTake(`identity:${signer}`, limits);
    // The local bucket admits each of these, the shared one (empty) refuses them.
    for (let index = 0; index < 4; index += 1) expect(await guarded.admit(signer, "unary")).toBe("rate");
    await redis.stop();
    try {
      clock.advance(1000);
      // No slot was kept by the refused calls: four are admitted (the local bucket decides) before maxInFlight refuses.
      const outcomes: Array<string | undefined> = [];
      for (let index = 0; index < 5; index += 1) outcomes.push(await guarded.admit(signer, "unary"));
      expect(outcomes).toEqual([undefined, undefined, undefined, undefined, "in_flight"]);
      expect(unavailable.length).toBe(4);
    } finally {
      await redis.start();
    }
  });

  it("a server on PostgreSQL + Redis refuses a call (RESOURCE_EXHAUSTED) when another replica used up the identity's rate", async () => {
    const clock = new ManualClock(Date.now());
    mesh = await startSecureMesh({ store: "postgres", postgresUrl: await postgres.createDatabase(), redisUrl: redis.url, identityRatePerSecond: 1, identityBurst: 3 }, undefined, clock);
    const secure = mesh;
    const identity = await mintIdentity(secure.server.security.ca, spiffe(secure.trustDomain, "agent", "busy"), { clock });
    const clients = secure.clientsFor(identity);
    const discover = () =>
      call<DiscoverResponse>((metadata, options, callback) =>
        clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: true }, metadata, options, callback),
      );
    await discover();
    // "Another replica": the same Redis, the server's key prefix, the same identity's bucket.
    const other = await RedisCoordination.open({ url: redis.url, clock });
    opened.push(other);
    const taken: boolean[] = [];
    for (let index = 0; index < 3; index += 1) taken.push(await other.rateLimiter.tryTake(`identity:${identity.spiffeId}`, { ratePerSecond: 1, burst: 3 }));
    expect(taken).toEqual([true, true, false]);
    // This replica's own bucket still holds 2 tokens; the shared one is empty.
    const refused = await expectCode(discover(), status.RESOURCE_EXHAUSTED);
    expect(refused.details).toBe("limit exceeded: request rate per identity");
    clock.advance(1000);
    await discover();
  });
});
