import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";

const nonce = (value: number): Uint8Array => new Uint8Array(16).fill(value);
const alice = "spiffe://mesh.local/agent/alice";
const bob = "spiffe://mesh.local/agent/bob";

describe("MemoryNonceCache", () => {
  it("accepts a nonce once and refuses it again within the window", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock });
    expect(cache.checkAndRemember(alice, nonce(1), clock.nowMs())).toBe(true);
    expect(cache.checkAndRemember(alice, nonce(1), clock.nowMs())).toBe(false);
    clock.advance(30_000);
    expect(cache.checkAndRemember(alice, nonce(1), clock.nowMs() - 30_000)).toBe(false);
  });

  it("keeps signers apart", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock });
    expect(cache.checkAndRemember(alice, nonce(1), clock.nowMs())).toBe(true);
    expect(cache.checkAndRemember(bob, nonce(1), clock.nowMs())).toBe(true);
  });

  it("compares nonce bytes, not views", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock });
    const backing = new Uint8Array(48).fill(9);
    expect(cache.checkAndRemember(alice, backing.subarray(16, 32), clock.nowMs())).toBe(true);
    expect(cache.checkAndRemember(alice, Buffer.alloc(16, 9), clock.nowMs())).toBe(false);
  });

  it("forgets a nonce once its envelope has left the window, and frees the memory", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock, windowMs: 30_000, bucketMs: 1_000 });
    const issuedAtMs = clock.nowMs();
    for (let index = 0; index < 100; index += 1) cache.checkAndRemember(alice, nonce(index), issuedAtMs);
    expect(cache.size).toBe(100);
    clock.advance(30_000);
    expect(cache.checkAndRemember(alice, nonce(1), issuedAtMs)).toBe(false);
    clock.advance(2_001);
    expect(cache.checkAndRemember(bob, nonce(1), clock.nowMs())).toBe(true);
    expect(cache.size).toBe(1);
    expect(cache.checkAndRemember(alice, nonce(1), issuedAtMs)).toBe(true);
  });

  it("remembers a future-dated nonce until it leaves the window", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock, windowMs: 30_000 });
    const issuedAtMs = clock.nowMs() + 30_000;
    expect(cache.checkAndRemember(alice, nonce(7), issuedAtMs)).toBe(true);
    clock.advance(59_000);
    expect(cache.checkAndRemember(alice, nonce(7), issuedAtMs)).toBe(false);
    clock.advance(60_000);
    cache.checkAndRemember(bob, nonce(1), clock.nowMs());
    expect(cache.size).toBe(1);
  });

  it("refuses new nonces when full instead of forgetting old ones", () => {
    const clock = new ManualClock();
    const cache = new MemoryNonceCache({ clock, maxEntries: 2 });
    cache.checkAndRemember(alice, nonce(1), clock.nowMs());
    cache.checkAndRemember(alice, nonce(2), clock.nowMs());
    expect(() => cache.checkAndRemember(alice, nonce(3), clock.nowMs())).toThrow(new MeshError("overLimit", "nonce cache full"));
    expect(cache.checkAndRemember(alice, nonce(1), clock.nowMs())).toBe(false);
    clock.advance(32_000);
    expect(cache.checkAndRemember(alice, nonce(3), clock.nowMs())).toBe(true);
  });
});
