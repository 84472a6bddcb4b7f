// What replicas on one Redis share beyond the state itself: the replay cache of
// signed requests (a request accepted by one replica is refused by every other) and
// the per-identity rate limit (an identity cannot multiply its rate by spreading its
// calls over replicas). Each replica is its own RedisCoordination, as in separate
// processes; the server builds exactly these pieces (services/server/server.ts).
import { generateKeyPairSync } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { defaultSignatureWindowMs, signEnvelope, verifyFailure } from "../../sdk/ts/src/core/signing.js";
import { EnvelopeOpener, controlPlaneAudience } from "../../services/identity/envelope-opener.js";
import type { CallerIdentity } from "../../services/server/call-context.js";
import { RedisCoordination } from "../../services/state/adapters/redis-coordination.js";
import { startRedis, type ThrowawayRedis } from "../helpers/redis.js";

const trustDomain = "mesh.test";
const method = "/agentmesh.v1.RegistryService/Register";
const payloadType = "agentmesh.v1.RegisterRequest";
const signer = `spiffe://${trustDomain}/agent/echo`;
const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const caller: CallerIdentity = { spiffeId: signer, publicKey, isAdmin: false, allowedAgentNames: new Set(["echo"]) };

let redis: ThrowawayRedis;
const opened: RedisCoordination[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.destroy();
});
afterEach(async () => {
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
