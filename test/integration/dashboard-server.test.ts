// The dashboard as the server wires it: same HTTP port as /metrics, open on
// loopback, token-only beyond it, probes and scrapes untouched either way.
import { afterEach, describe, expect, it } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { auditView } from "../../services/dashboard/read-model.js";
import { createDashboardToken } from "../../services/dashboard/index.js";
import { type MintedIdentity, type SecureMesh, mintIdentity, spiffe, startSecureMesh } from "../helpers/mesh-pki.js";
import { type SseStream, openSse } from "../helpers/sse.js";
import { waitFor } from "../helpers/mesh-cluster.js";

let mesh: SecureMesh | undefined;
const streams: SseStream[] = [];

afterEach(async () => {
  for (const stream of streams.splice(0)) stream.close();
  await mesh?.close();
  mesh = undefined;
});

async function open(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const stream = await openSse(url, headers);
  streams.push(stream);
  return stream;
}

function tokenFor(identity: MintedIdentity): string {
  return createDashboardToken({ spiffeId: identity.spiffeId, privateKey: identity.privateKey, leafDer: identity.certificate.raw, ttlMs: 60_000, clock: systemClock }).token;
}

describe("dashboard on the server's HTTP port", () => {
  it("bound beyond loopback: data needs an admin token; /metrics, /healthz and /readyz stay open for Prometheus and probes", async () => {
    mesh = await startSecureMesh({ httpHost: "0.0.0.0" });
    const base = `http://127.0.0.1:${mesh.server.httpPort}`;
    for (const path of ["/metrics", "/healthz", "/readyz"]) expect((await fetch(`${base}${path}`)).status, path).toBe(200);
    expect((await fetch(`${base}/dashboard/`)).status).toBe(200);

    const refused = await open(`${base}/dashboard/api/events`);
    expect(refused.status).toBe(401);
    const second = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "admin", "second"));
    const stream = await open(`${base}/dashboard/api/events`, { authorization: `Bearer ${tokenFor(second)}` });
    expect(stream.status).toBe(200);
    expect((await stream.next((event) => event.event === "session")).data).toMatchObject({ authRequired: true, spiffeId: second.spiffeId });
    await stream.next((event) => event.event === "snapshot");

    // Both the refusal and the session are in the server's audit log.
    const audit = await waitFor("the dashboard audit entries", async () => {
      const entries = (await mesh?.server.security.audit.tail(50))?.map(auditView) ?? [];
      const actions = entries.map((entry) => entry?.action);
      return actions.includes("dashboard.denied") && actions.includes("dashboard.open") ? entries : undefined;
    });
    expect(audit.find((entry) => entry?.action === "dashboard.open")).toMatchObject({ actor: second.spiffeId, outcome: "success" });
    expect(audit.find((entry) => entry?.action === "dashboard.denied")).toMatchObject({ outcome: "denied" });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^agentmesh_dashboard_streams 1$/m);
    expect(metrics).toMatch(/^agentmesh_dashboard_denied_total 1$/m);
  });

  it("bound to loopback (the default): open like /metrics", async () => {
    mesh = await startSecureMesh();
    const stream = await open(`http://127.0.0.1:${mesh.server.httpPort}/dashboard/api/events`);
    expect(stream.status).toBe(200);
    expect((await stream.next((event) => event.event === "session")).data).toEqual({ authRequired: false, spiffeId: "", expiresAtMs: 0 });
  });
});
