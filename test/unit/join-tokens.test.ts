import { beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryJoinTokenStore } from "../../services/identity/adapters/memory-join-token-store.js";
import { hashJoinToken, JoinTokens } from "../../services/identity/domain/join-tokens.js";
import type { CreateJoinTokenInput } from "../../services/identity/domain/join-tokens.js";

const admin = "spiffe://mesh.local/admin/alice";
const sidecarA = "spiffe://mesh.local/sidecar/host-a";
const invalidOrExpired = new MeshError("unauthenticated", "join token invalid or expired");
const notForIdentity = new MeshError("unauthenticated", "join token not valid for this identity");

let clock: ManualClock;
let store: MemoryJoinTokenStore;
let tokens: JoinTokens;

beforeEach(() => {
  clock = new ManualClock();
  store = new MemoryJoinTokenStore();
  tokens = new JoinTokens({ store, clock, trustDomain: "mesh.local" });
});

const create = (overrides: Partial<CreateJoinTokenInput> = {}) =>
  tokens.create({ allowedAgentNames: ["summarizer", "sql-runner"], host: "host-a", createdBy: admin, ...overrides });

const uses = async (token: string): Promise<number | undefined> => (await store.get(hashJoinToken(token)))?.uses;

describe("JoinTokens", () => {
  it("makes a 32-byte base64url token and stores only its hash", async () => {
    const created = await create();
    expect(created.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(created.token, "base64url")).toHaveLength(32);
    expect(created.expiresAtMs).toBe(clock.nowMs() + 10 * 60_000);
    const record = await store.get(hashJoinToken(created.token));
    expect(record).toMatchObject({ tokenId: created.tokenId, maxUses: 1, uses: 0, host: "host-a", createdBy: admin });
    expect(JSON.stringify(record)).not.toContain(created.token);
  });

  it("is single use by default", async () => {
    const { token, tokenId } = await create();
    const grant = await tokens.consume(token, { requestedSpiffeId: sidecarA });
    expect(grant).toMatchObject({ tokenId, host: "host-a", allowedAgentNames: ["summarizer", "sql-runner"], usesLeft: 0 });
    expect(grant.spiffeId.uri).toBe(sidecarA);
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).rejects.toThrow(invalidOrExpired);
    expect(await uses(token)).toBe(1);
  });

  it("counts uses up to maxUses", async () => {
    const { token } = await create({ maxUses: 3 });
    for (const usesLeft of [2, 1, 0]) {
      expect((await tokens.consume(token, { requestedSpiffeId: sidecarA })).usesLeft).toBe(usesLeft);
    }
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).rejects.toThrow(invalidOrExpired);
    expect(await uses(token)).toBe(3);
  });

  it("lets only one of two racing joins spend the last use", async () => {
    const { token } = await create();
    const results = await Promise.allSettled([
      tokens.consume(token, { requestedSpiffeId: sidecarA }),
      tokens.consume(token, { requestedSpiffeId: sidecarA }),
    ]);
    expect(results.filter((result) => result.status === "fulfilled")).toHaveLength(1);
    expect(await uses(token)).toBe(1);
  });

  it("expires after its TTL", async () => {
    const { token } = await create({ ttlMs: 60_000 });
    clock.advance(60_000);
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).rejects.toThrow(invalidOrExpired);
    expect(await uses(token)).toBe(0);
    expect(await store.deleteExpired(clock.nowMs())).toBe(1);
  });

  it("is valid just before expiry", async () => {
    const { token } = await create({ ttlMs: 60_000 });
    clock.advance(59_999);
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).resolves.toMatchObject({ usesLeft: 0 });
  });

  it.each([
    ["unknown", "A".repeat(43)],
    ["malformed", "not-a-token"],
    ["empty", ""],
  ])("refuses an %s token", async (_label, token) => {
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).rejects.toThrow(invalidOrExpired);
  });

  it.each([
    ["another host's sidecar", "spiffe://mesh.local/sidecar/host-b"],
    ["an agent name it does not allow", "spiffe://mesh.local/agent/other"],
    ["another trust domain", "spiffe://other.mesh/sidecar/host-a"],
    ["an admin", "spiffe://mesh.local/admin/host-a"],
    ["a server", "spiffe://mesh.local/server/host-a"],
    ["a malformed SPIFFE ID", "spiffe://mesh.local/sidecar/host-a/x"],
  ])("refuses %s without spending a use", async (_label, requestedSpiffeId) => {
    const { token } = await create();
    await expect(tokens.consume(token, { requestedSpiffeId })).rejects.toThrow(notForIdentity);
    expect(await uses(token)).toBe(0);
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).resolves.toBeDefined();
  });

  it("lets an allowed agent join directly, covering only its own name", async () => {
    const { token } = await create();
    const grant = await tokens.consume(token, { requestedSpiffeId: "spiffe://mesh.local/agent/sql-runner" });
    expect(grant.allowedAgentNames).toEqual(["sql-runner"]);
  });

  it("with * allows any agent name", async () => {
    const { token } = await create({ allowedAgentNames: ["*"], maxUses: 2 });
    await expect(tokens.consume(token, { requestedSpiffeId: "spiffe://mesh.local/agent/anything" })).resolves.toBeDefined();
    await expect(tokens.consume(token, { requestedSpiffeId: sidecarA })).resolves.toMatchObject({ allowedAgentNames: ["*"] });
  });

  it.each([
    ["no agent names", { allowedAgentNames: [] }],
    ["a bad agent name", { allowedAgentNames: ["a/b"] }],
    ["a bad host", { host: "" }],
    ["zero uses", { maxUses: 0 }],
    ["fractional uses", { maxUses: 1.5 }],
    ["zero TTL", { ttlMs: 0 }],
    ["a TTL over 7 days", { ttlMs: 8 * 24 * 3_600_000 }],
  ])("refuses to create a token with %s", async (_label, overrides) => {
    await expect(create(overrides)).rejects.toMatchObject({ kind: "invalidArgument" });
  });

  it("uses the injected random source", async () => {
    const fixed = new JoinTokens({ store, clock, trustDomain: "mesh.local", randomBytes: (size) => Buffer.alloc(size, 1) });
    const created = await fixed.create({ allowedAgentNames: ["a"], host: "h", createdBy: admin });
    expect(created.token).toBe(Buffer.alloc(32, 1).toString("base64url"));
    expect(created.tokenId).toBe(hashJoinToken(created.token).slice(0, 16));
  });
});
