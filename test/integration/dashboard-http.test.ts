// The dashboard's HTTP side over real sockets: the page, the event stream fed by a
// real Registry's Watch, the refresh loop, the routing view from a real Resolver,
// and token authentication. Deployments, alerts and audit come from plain arrays.
import type { Server } from "node:http";
import { rmSync } from "node:fs";
import { Registry as PromRegistry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../sdk/ts/src/core/audit-log.js";
import { ManualClock, systemClock } from "../../sdk/ts/src/core/clock.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { Deployment, Rollout, Rollout_Phase } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type Dashboard, type DashboardSources, DashboardTokenVerifier, type FiringAlert, createDashboard, createDashboardToken } from "../../services/dashboard/index.js";
import { type MeshCa, loadOrCreateCa, splitPemCertificates } from "../../services/identity/domain/ca.js";
import { Resolver } from "../../services/orchestrator/resolver.js";
import { MemoryChangeFeed } from "../../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../../services/registry/adapters/memory-instance-store.js";
import { Registry } from "../../services/registry/registry.js";
import { startHttpEndpoints } from "../../services/server/http-endpoints.js";
import { logSink } from "../helpers/log-sink.js";
import { waitFor } from "../helpers/mesh-cluster.js";
import { manifest } from "../helpers/manifests.js";
import { type MintedIdentity, mintIdentity, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";
import { type SseEvent, type SseStream, openSse } from "../helpers/sse.js";

interface Harness {
  base: string;
  registry: Registry;
  deployments: Deployment[];
  rollouts: Map<string, Rollout>;
  alerts: FiringAlert[];
  auditLines: string[];
  audited: AuditEvent[];
  reads: { deployments: number };
  /** Makes the deployments source fail, as an unreachable store would. */
  failing: { deployments: boolean };
  dashboard: Dashboard;
  server: Server;
}

const trustDomain = "dash.test";
const caDir = tempDir("agentmesh-dashboard-http-");
const clock = new ManualClock(Date.now());
let ca: MeshCa;
let admin: MintedIdentity;
let harness: Harness | undefined;
const streams: SseStream[] = [];

beforeAll(async () => {
  ca = await loadOrCreateCa({ dataDir: caDir, trustDomain, clock });
  admin = await mintIdentity(ca, spiffe(trustDomain, "admin", "operator"), { clock });
});
afterAll(() => rmSync(caDir, { recursive: true, force: true }));
afterEach(async () => {
  for (const stream of streams.splice(0)) stream.close();
  if (!harness) return;
  harness.dashboard.close();
  await new Promise<void>((resolve) => {
    harness?.server.close(() => resolve());
    harness?.server.closeAllConnections();
  });
  harness = undefined;
});

async function start(options: { authenticated?: boolean; maxStreams?: number } = {}): Promise<Harness> {
  let counter = 0;
  const registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), systemClock, logSink("silent").log, {}, () => `i-${++counter}`);
  const resolver = new Resolver(registry);
  const state = {
    deployments: [] as Deployment[],
    rollouts: new Map<string, Rollout>(),
    alerts: [] as FiringAlert[],
    auditLines: [] as string[],
    audited: [] as AuditEvent[],
    reads: { deployments: 0 },
    failing: { deployments: false },
  };
  const sources: DashboardSources = {
    watchInstances: (onChange) => registry.watch(0, "", onChange),
    listInstances: () => registry.all(),
    listDeployments: async () => {
      state.reads.deployments += 1;
      if (state.failing.deployments) throw new Error("deployment store unreachable");
      return state.deployments;
    },
    rollout: (name) => state.rollouts.get(name),
    alertsFiring: () => state.alerts,
    auditTail: async (limit) => state.auditLines.slice(-limit),
    routing: (capability) => resolver.routingView(capability),
  };
  const dashboard = createDashboard({
    sources,
    tokens: options.authenticated
      ? new DashboardTokenVerifier({
          trustDomain,
          verifier: new PeerVerifier(trustDomain, [...ca.trustBundle(), ...splitPemCertificates(ca.certificatePem)]),
          revocations: { isRevoked: () => false },
          clock,
        })
      : undefined,
    audit: (event) => state.audited.push(event),
    clock,
    log: logSink("silent").log,
    refreshIntervalMs: 20,
    loadIntervalMs: 20,
    maxStreams: options.maxStreams,
  });
  const { server, port } = await startHttpEndpoints({ host: "127.0.0.1", port: 0, metrics: new PromRegistry(), isLive: () => true, isReady: () => true, routes: dashboard.handle });
  harness = { base: `http://127.0.0.1:${port}`, registry, dashboard, server, ...state };
  return harness;
}

async function open(base: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const stream = await openSse(`${base}/dashboard/api/events`, headers);
  streams.push(stream);
  return stream;
}

async function register(registry: Registry, name: string, capabilityVersion = "1.0.0"): Promise<string> {
  const { instance } = await registry.register({
    manifest: manifest({ name, capabilities: [{ name: "test.echo", version: capabilityVersion, attributes: {} }] }),
    instanceId: "",
    endpoint: "127.0.0.1:1",
    host: "host-a",
    owner: "spiffe://dash.test/sidecar/host-a",
  });
  return instance.instanceId;
}

const ofEvent = (name: string) => (event: SseEvent) => event.event === name;

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function token(ttlMs = 60_000): string {
  return createDashboardToken({ spiffeId: admin.spiffeId, privateKey: admin.privateKey, leafDer: admin.certificate.raw, ttlMs, clock }).token;
}

describe("dashboard page and assets", () => {
  it("serves the page, its module and style sheet under a policy that forbids every other origin; other paths fall through", async () => {
    const { base } = await start();
    const page = await fetch(`${base}/dashboard/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="dashboard.js"></script>');
    // Nothing the page references leaves this server.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);

    const script = await fetch(`${base}/dashboard/dashboard.js`);
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const etag = script.headers.get("etag") ?? "";
    expect((await fetch(`${base}/dashboard/dashboard.js`, { headers: { "if-none-match": etag } })).status).toBe(304);
    expect((await fetch(`${base}/dashboard/dashboard.css`)).headers.get("content-type")).toBe("text/css; charset=utf-8");

    const redirect = await fetch(`${base}/dashboard`, { redirect: "manual" });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get("location")).toBe("/dashboard/");
    expect((await fetch(`${base}/dashboard/api/nothing`)).status).toBe(404);
    expect((await fetch(`${base}/dashboardish`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect(await (await fetch(`${base}/healthz`)).text()).toBe("ok\n");
  });
});

describe("dashboard event stream", () => {
  it("starts with a snapshot of the registry, then follows its Watch: added, state changes, removed", async () => {
    const { base, registry } = await start();
    const first = await register(registry, "echo");
    const stream = await open(base);
    expect(stream.status).toBe(200);
    expect(stream.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
    expect((await stream.next(ofEvent("session"))).data).toEqual({ authRequired: false, spiffeId: "", expiresAtMs: 0 });
    const snapshot = (await stream.next(ofEvent("snapshot"))).data as { instances: Array<{ id: string; state: string; capabilities: string[] }> };
    expect(snapshot.instances).toEqual([expect.objectContaining({ id: first, state: "STARTING", capabilities: ["test.echo@1.0.0"] })]);

    const second = await register(registry, "other");
    await stream.next((event) => event.event === "instance" && (event.data as { kind: string; instance: { id: string } }).instance.id === second);
    registry.recordHeartbeat(first, undefined, "ready");
    const ready = await stream.next((event) => event.event === "instance" && (event.data as { instance?: { id: string; state: string } }).instance?.state === "READY");
    expect(ready.data).toMatchObject({ kind: "updated", instance: { id: first, state: "READY", reason: "heartbeat" } });
    await registry.deregister(second, "test");
    expect((await stream.next((event) => event.event === "instance" && (event.data as { kind: string }).kind === "removed")).data).toMatchObject({ kind: "removed", id: second });
  });

  it("pushes load changes (which publish no Watch event) for the instances whose load moved, and only those", async () => {
    const { base, registry } = await start();
    const busy = await register(registry, "busy");
    const idle = await register(registry, "idle");
    registry.recordHeartbeat(busy, undefined, "ready");
    registry.recordHeartbeat(idle, undefined, "ready");
    const stream = await open(base);
    await stream.next(ofEvent("snapshot"));
    const initial = await stream.next(ofEvent("load"));
    expect(Object.keys(initial.data as object).sort()).toEqual([busy, idle].sort());
    const mark = stream.events.length;
    registry.recordHeartbeat(busy, { inFlight: 7, queueDepth: 2, cpuMillis: 30, rssBytes: 50 << 20, p50Ms: 12.34, errorRate: 0.25 }, "ready");
    const changed = await stream.next(ofEvent("load"), mark);
    expect(changed.data).toEqual({ [busy]: { inFlight: 7, queueDepth: 2, cpuMillis: 30, rssBytes: 50 << 20, p50Ms: 12.3, errorRate: 0.25 } });
  });

  it("pushes deployments with their rollout, alerts and audit entries when they change, not on every refresh", async () => {
    const { base, deployments, rollouts, alerts, auditLines, reads } = await start();
    const stream = await open(base);
    await stream.next((event) => event.event === "deployments");
    deployments.push(Deployment.fromPartial({ name: "echo", replicas: 2, generation: 2, manifest: manifest({ name: "echo", version: "2.0.0" }), status: { readyReplicas: 2, updatedReplicas: 1, phase: "progressing" } }));
    rollouts.set("echo", Rollout.fromPartial({ deployment: "echo", fromVersion: "1.0.0", toVersion: "2.0.0", phase: Rollout_Phase.PHASE_PROGRESSING, updatedReplicas: 1, readyReplicas: 2, desiredReplicas: 2 }));
    const pushed = await stream.next((event) => event.event === "deployments" && (event.data as unknown[]).length === 1);
    expect(pushed.data).toEqual([
      {
        name: "echo",
        version: "2.0.0",
        generation: 2,
        replicas: 2,
        ready: 2,
        updated: 1,
        phase: "progressing",
        message: "",
        rollout: { fromVersion: "1.0.0", toVersion: "2.0.0", phase: "progressing", updated: 1, ready: 2, desired: 2, message: "", startedAtMs: 0 },
      },
    ]);
    const readsAtPush = reads.deployments;
    alerts.push({ fingerprint: "f1", alertname: "AgentDown", severity: "critical", labels: { alertname: "AgentDown", instance: "i-1" }, annotations: { summary: "i-1 is down" }, startsAtMs: 5 });
    auditLines.push(JSON.stringify({ seq: 1, time: "2026-01-01T00:00:00.000Z", actor: "system", action: "deployment.apply", target: "echo", outcome: "success", requestId: "r" }), "not json");
    expect((await stream.next(ofEvent("alerts"), 0)).data).toEqual([]);
    expect((await stream.next((event) => event.event === "alerts" && (event.data as unknown[]).length === 1)).data).toEqual([
      { fingerprint: "f1", alertname: "AgentDown", severity: "critical", labels: { alertname: "AgentDown", instance: "i-1" }, summary: "i-1 is down", description: "", startsAtMs: 5 },
    ]);
    const audit = await stream.next((event) => event.event === "audit" && (event.data as unknown[]).length === 1);
    expect(audit.data).toEqual([{ seq: 1, time: "2026-01-01T00:00:00.000Z", actor: "system", action: "deployment.apply", target: "echo", outcome: "success" }]);
    // Several refreshes later the unchanged deployments were read again but not sent again.
    await waitFor("five more refreshes", () => (reads.deployments >= readsAtPush + 5 ? true : undefined));
    expect(stream.events.filter(ofEvent("deployments"))).toHaveLength(2);
  });

  it("keeps pushing the other topics while one source fails", async () => {
    const { base, alerts, auditLines, failing } = await start();
    failing.deployments = true;
    const stream = await open(base);
    await stream.next(ofEvent("snapshot"));
    alerts.push({ fingerprint: "f1", alertname: "AgentDown", severity: "critical", labels: {}, annotations: {}, startsAtMs: 1 });
    auditLines.push(JSON.stringify({ seq: 1, action: "agent.register" }));
    await stream.next((event) => event.event === "alerts" && (event.data as unknown[]).length === 1);
    await stream.next((event) => event.event === "audit" && (event.data as unknown[]).length === 1);
    expect(stream.events.filter(ofEvent("deployments"))).toEqual([]);
    failing.deployments = false;
    await stream.next(ofEvent("deployments"));
  });

  it("reads nothing while no page is open", async () => {
    const { base, reads } = await start();
    expect((await fetch(`${base}/dashboard/`)).status).toBe(200);
    expect(reads.deployments).toBe(0);
    const stream = await open(base);
    await stream.next(ofEvent("deployments"));
    expect(reads.deployments).toBeGreaterThan(0);
  });

  it("refuses more pages than its limit with 503", async () => {
    const { base } = await start({ maxStreams: 1 });
    const first = await open(base);
    await first.next(ofEvent("snapshot"));
    const second = await open(base);
    expect(second.status).toBe(503);
    expect(JSON.parse(second.body)).toEqual({ error: "too many open dashboard pages; close one and reload" });
  });
});

describe("routing view", () => {
  it("shows the routable set of the newest version, the load the balancer sees and each instance's share of picks", async () => {
    const { base, registry } = await start();
    const idle = await register(registry, "idle", "2.0.0");
    const busy = await register(registry, "busy", "2.0.0");
    const old = await register(registry, "old", "1.0.0");
    const starting = await register(registry, "starting", "2.0.0");
    registry.recordHeartbeat(idle, { inFlight: 0, queueDepth: 0, cpuMillis: 0, rssBytes: 0, p50Ms: 1, errorRate: 0 }, "ready");
    registry.recordHeartbeat(busy, { inFlight: 5, queueDepth: 1, cpuMillis: 0, rssBytes: 0, p50Ms: 1, errorRate: 0 }, "ready");
    registry.recordHeartbeat(old, undefined, "ready");
    const response = await fetch(`${base}/dashboard/api/routing?capability=test.echo`);
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBe("no-store");
    const view = (await response.json()) as { version: string; candidates: Array<{ id: string; load: number; share: number }> };
    expect(view.version).toBe("2.0.0");
    // Two candidates: the less loaded one wins both orders of the only pair.
    expect(view.candidates.map(({ id, load, share }) => ({ id, load, share }))).toEqual([
      { id: idle, load: 0, share: 1 },
      { id: busy, load: 6, share: 0 },
    ]);
    expect(view.candidates.map((candidate) => candidate.id)).not.toContain(starting);

    expect(await (await fetch(`${base}/dashboard/api/routing?capability=Not_A_Name`)).json()).toEqual({ error: "capability: must be dotted lowercase, like sql.query" });
    const missing = await fetch(`${base}/dashboard/api/routing`);
    expect(missing.status).toBe(400);
    expect(await missing.json()).toEqual({ error: "capability: required" });
  });
});

describe("dashboard authentication (HTTP port beyond loopback)", () => {
  it("refuses data without a valid token (401, the reason, audited) and serves it with one (audited)", async () => {
    const { base, audited } = await start({ authenticated: true });
    const refused = await open(base);
    expect(refused.status).toBe(401);
    expect(refused.headers["www-authenticate"]).toBe('Bearer realm="agentmesh-dashboard"');
    expect(JSON.parse(refused.body)).toEqual({ error: "token required: run `agentmesh ctl dashboard-token` and open the URL it prints" });
    const forged = await open(base, bearer(`${token().slice(0, -8)}AAAAAAAA`));
    expect(forged.status).toBe(401);
    const routing = await fetch(`${base}/dashboard/api/routing?capability=test.echo`, { headers: bearer("garbage") });
    expect(routing.status).toBe(401);
    expect(await routing.json()).toEqual({ error: "token malformed" });
    expect(audited.filter((event) => event.action === "dashboard.denied").map((event) => event.outcome)).toEqual(["denied", "denied", "denied"]);
    // The page itself holds no data: it loads, then asks for a token.
    expect((await fetch(`${base}/dashboard/`)).status).toBe(200);

    const stream = await open(base, bearer(token()));
    expect(stream.status).toBe(200);
    expect((await stream.next(ofEvent("session"))).data).toEqual({ authRequired: true, spiffeId: admin.spiffeId, expiresAtMs: clock.nowMs() + 60_000 });
    await stream.next(ofEvent("snapshot"));
    expect((await fetch(`${base}/dashboard/api/routing?capability=test.echo`, { headers: bearer(token()) })).status).toBe(200);
    expect(audited.filter((event) => event.action === "dashboard.open")).toEqual([expect.objectContaining({ actor: admin.spiffeId, outcome: "success" })]);
  });

  it("ends an open stream when its token expires", async () => {
    const { base } = await start({ authenticated: true });
    const stream = await open(base, bearer(token(30_000)));
    await stream.next(ofEvent("snapshot"));
    clock.advance(30_000);
    const ended = await stream.next(ofEvent("session-ended"));
    expect((ended.data as { reason: string }).reason).toMatch(/token expired/);
    await stream.ended;
  });
});
