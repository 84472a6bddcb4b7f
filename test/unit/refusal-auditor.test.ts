import { afterEach, describe, expect, it } from "vitest";
import type { AuditEvent, AuditSink } from "../../sdk/ts/src/core/audit-log.js";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { IdentityLimits } from "../../services/identity/identity-limits.js";
import { type Refusal, RefusalAuditor, peerHost } from "../../services/identity/refusal-auditor.js";

const auditors: RefusalAuditor[] = [];

afterEach(() => {
  for (const auditor of auditors.splice(0)) auditor.close();
});

function setup(options: { perIdentityPerInterval?: number; maxKeys?: number } = {}) {
  const written: AuditEvent[] = [];
  const counted: Array<{ action: string; written: boolean }> = [];
  const audit: AuditSink = { append: async (event) => void written.push(event) };
  const clock = new ManualClock();
  const auditor = new RefusalAuditor({
    audit,
    clock,
    // Windows end by flush() here; the interval only has to outlast the test.
    intervalMs: 3_600_000,
    perIdentityPerInterval: options.perIdentityPerInterval ?? 3,
    maxKeys: options.maxKeys ?? 100,
    onRefusal: (refusal, isWritten) => counted.push({ action: refusal.action, written: isWritten }),
  });
  auditors.push(auditor);
  return { auditor, written, counted, clock };
}

const anonymous = (overrides: Partial<Refusal> = {}): Refusal => ({
  actor: "ipv4:10.0.0.7:51234",
  authenticated: false,
  action: "call.unauthenticated",
  target: "/agentmesh.v1.RegistryService/Discover",
  reason: "valid client certificate required",
  requestId: "",
  ...overrides,
});

describe("RefusalAuditor", () => {
  it("writes the first anonymous refusal per host, action, method and reason, counts the rest, and summarizes them at the window's end", () => {
    const { auditor, written, counted, clock } = setup();
    for (let index = 0; index < 1000; index += 1) {
      auditor.record(anonymous({ actor: `ipv4:10.0.0.7:${40_000 + index}` }));
      clock.advance(1);
    }
    auditor.record(anonymous({ target: "/agentmesh.v1.RegistryService/Register" }));
    auditor.record(anonymous({ reason: "client certificate expired or not yet valid" }));
    expect(written.map((event) => [event.action, event.target, event.details?.reason])).toEqual([
      ["call.unauthenticated", "/agentmesh.v1.RegistryService/Discover", "valid client certificate required"],
      ["call.unauthenticated", "/agentmesh.v1.RegistryService/Register", "valid client certificate required"],
      ["call.unauthenticated", "/agentmesh.v1.RegistryService/Discover", "client certificate expired or not yet valid"],
    ]);
    expect(counted.filter((entry) => !entry.written)).toHaveLength(999);

    auditor.flush();
    expect(written.slice(3)).toEqual([
      {
        actor: "ipv4:10.0.0.7",
        action: "audit.sampled",
        target: "/agentmesh.v1.RegistryService/Discover",
        outcome: "denied",
        requestId: "",
        details: {
          refusals: 999,
          authenticated: false,
          actions: { "call.unauthenticated": 999 },
          reasons: { "valid client certificate required": 999 },
          targets: { "/agentmesh.v1.RegistryService/Discover": 999 },
          firstAt: new Date(1_700_000_000_001).toISOString(),
          lastAt: new Date(1_700_000_000_999).toISOString(),
        },
      },
    ]);
    // A new window starts with a fresh budget.
    auditor.record(anonymous());
    expect(written).toHaveLength(5);
  });

  it("writes an identity's refusals one by one up to its budget, whatever the action, then summarizes", () => {
    const { auditor, written } = setup({ perIdentityPerInterval: 3 });
    const identity = "spiffe://mesh.local/agent/a";
    for (const action of ["call.denied", "limit.breach", "call.denied", "call.denied", "connect.denied"]) {
      auditor.record({ actor: identity, authenticated: true, action, target: "/x", reason: "r", requestId: "req" });
    }
    expect(written.map((event) => [event.actor, event.action, event.requestId])).toEqual([
      [identity, "call.denied", "req"],
      [identity, "limit.breach", "req"],
      [identity, "call.denied", "req"],
    ]);
    auditor.flush();
    expect(written[3]).toMatchObject({ actor: identity, action: "audit.sampled", details: { refusals: 2, authenticated: true, actions: { "call.denied": 1, "connect.denied": 1 } } });
  });

  it("tracks a bounded number of keys: more hosts share one overflow key", () => {
    const { auditor, written } = setup({ maxKeys: 10 });
    for (let host = 0; host < 500; host += 1) auditor.record(anonymous({ actor: `ipv4:10.1.${host >> 8}.${host & 255}:1` }));
    // Ten hosts got their own entry, then one for everyone else (the first of them, by its address).
    expect(written).toHaveLength(11);
    expect(written[10]?.actor).toBe("ipv4:10.1.0.10:1");
    auditor.flush();
    expect(written.slice(11)).toEqual([expect.objectContaining({ actor: "*", action: "audit.sampled", details: expect.objectContaining({ refusals: 489 }) })]);
  });

  it("keeps a summary small: at most ten kinds of reason, the rest as other", () => {
    const { auditor, written } = setup();
    for (let index = 0; index < 30; index += 1) auditor.record(anonymous({ actor: "10.0.0.1:1", reason: "same" }));
    for (let index = 0; index < 30; index += 1) auditor.record({ actor: "spiffe://mesh.local/agent/b", authenticated: true, action: "call.denied", target: "/x", reason: `reason ${index}`, requestId: "" });
    auditor.flush();
    const summary = written.find((event) => event.action === "audit.sampled" && event.actor === "spiffe://mesh.local/agent/b");
    const reasons = summary?.details?.reasons as Record<string, number>;
    expect(Object.keys(reasons)).toHaveLength(11);
    expect(reasons.other).toBe(17);
  });
});

describe("peerHost", () => {
  it.each([
    ["ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"],
    ["10.0.0.7:51234", "10.0.0.7"],
    ["[::1]:51234", "[::1]"],
    ["ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"],
    ["2001:db8::1", "2001:db8::1"],
    ["spiffe://mesh.local/agent/x", "spiffe://mesh.local/agent/x"],
    ["", ""],
  ])("%s → %s", (peer, host) => {
    expect(peerHost(peer)).toBe(host);
  });
});

describe("IdentityLimits", () => {
  it("counts unary calls and streams apart, with one rate bucket for both", () => {
    const clock = new ManualClock();
    const limits = new IdentityLimits({ ratePerSecond: 1, burst: 4, maxInFlight: 1, maxStreams: 2 }, clock);
    expect(limits.admit("a", "stream")).toBeUndefined();
    expect(limits.admit("a", "stream")).toBeUndefined();
    // Two open streams leave the unary slot free.
    expect(limits.admit("a", "unary")).toBeUndefined();
    expect(limits.admit("a", "unary")).toBe("in_flight");
    expect(limits.admit("a", "stream")).toBe("streams");
    expect(limits.admit("b", "stream")).toBeUndefined();
    limits.release("a", "stream");
    expect(limits.admit("a", "stream")).toBeUndefined();
    limits.release("a", "stream");
    limits.release("a", "unary");
    // Four admitted from a bucket of four: free slots of either kind now wait for the rate.
    expect(limits.admit("a", "stream")).toBe("rate");
    expect(limits.admit("a", "unary")).toBe("rate");
    clock.advance(1000);
    expect(limits.admit("a", "unary")).toBeUndefined();
  });

  it("0 means unlimited", () => {
    const limits = new IdentityLimits({ ratePerSecond: 0, burst: 0, maxInFlight: 0, maxStreams: 0 }, new ManualClock());
    for (let index = 0; index < 1000; index += 1) {
      expect(limits.admit("a", "unary")).toBeUndefined();
      expect(limits.admit("a", "stream")).toBeUndefined();
    }
  });
});
