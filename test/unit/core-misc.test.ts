import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { KeyedLimiter, TokenBucket } from "../../sdk/ts/src/core/token-bucket.js";
import { CertificateRenewer } from "../../sdk/ts/src/core/tls/certificate-renewer.js";

describe("TokenBucket", () => {
  it("admits a burst, then refills at the rate", () => {
    const clock = new ManualClock();
    const bucket = new TokenBucket(10, 3, clock);
    expect([bucket.tryTake(), bucket.tryTake(), bucket.tryTake(), bucket.tryTake()]).toEqual([true, true, true, false]);
    clock.advance(100);
    expect(bucket.tryTake()).toBe(true);
    expect(bucket.tryTake()).toBe(false);
  });
});

describe("KeyedLimiter", () => {
  it("limits in-flight per key and names the limit that refused", () => {
    const limiter = new KeyedLimiter({ ratePerSecond: 0, burst: 0, maxInFlight: 2 }, new ManualClock());
    expect([limiter.admit("a"), limiter.admit("a"), limiter.admit("a"), limiter.admit("b")]).toEqual([undefined, undefined, "in_flight", undefined]);
    limiter.release("a");
    expect(limiter.admit("a")).toBeUndefined();
  });

  it("names the rate limit", () => {
    const limiter = new KeyedLimiter({ ratePerSecond: 1, burst: 1, maxInFlight: 0 }, new ManualClock());
    expect(limiter.admit("a")).toBeUndefined();
    limiter.release("a");
    expect(limiter.admit("a")).toBe("rate");
  });
});

describe("CertificateRenewer.renewalDelayMs", () => {
  const identity = { chainPem: [], privateKeyPem: "", serial: "1", spiffeId: "x", notBeforeMs: 0, expiresAtMs: 3_600_000 };
  it("renews at half-life, up to 10 % of the lifetime earlier with jitter", () => {
    expect(CertificateRenewer.renewalDelayMs(identity, 0, () => 0)).toBe(1_800_000);
    expect(CertificateRenewer.renewalDelayMs(identity, 0, () => 1)).toBe(1_440_000);
    // A CA backdates notBefore for clock skew: half-life counts from arrival, not from notBefore.
    expect(CertificateRenewer.renewalDelayMs({ ...identity, notBeforeMs: -300_000 }, 0, () => 0)).toBe(1_800_000);
  });
});
