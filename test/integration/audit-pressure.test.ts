// The audit log under pressure, over real mTLS calls: floods of refused calls
// grow it by a bounded number of entries (and are counted in full), every
// registration, deregistration and command is in it (batched: 10,000
// registrations cost a few hundred writes at most, not 10,000 fsyncs), and a full
// disk (a real one: a small tmpfs filled to the last byte) makes the server refuse
// audited actions and report not ready until it can write again.
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { closeSync, openSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Metadata, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import { MemoryInstanceStore } from "../../services/registry/adapters/memory-instance-store.js";
import { afterEach, describe, expect, it } from "vitest";
import { MeshClient } from "../../sdk/ts/src/client/mesh-client.js";
import { verifyAuditLog } from "../../sdk/ts/src/core/audit-log.js";
import { OrchestratorServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { DiscoverResponse, RegisterBatchResponse, RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type RunningServer, startServer } from "../../services/server/server.js";
import { type LogSink, logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import {
  type RawClients,
  type SecureMesh,
  auditSince,
  call,
  expectCode,
  foreignCa,
  mintIdentity,
  refusals,
  signedRegister,
  signerFor,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

let mesh: SecureMesh | undefined;
let devServer: RunningServer | undefined;
const cleanups: Array<() => void> = [];

afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  await devServer?.close();
  devServer = undefined;
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

const discover = (clients: RawClients) =>
  call<DiscoverResponse>((metadata, options, callback) =>
    clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: true }, metadata, options, callback),
  );

/** `total` calls, `concurrency` at a time: a small load generator. */
async function flood(total: number, concurrency: number, send: () => Promise<unknown>): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        const outcome = await send().then(
          () => "OK",
          (error: { code: number }) => status[error.code] ?? String(error.code),
        );
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    }),
  );
  return outcomes;
}

describe("floods of refused calls", () => {
  it("2,000 calls without a client certificate add one entry and one summary, and all are counted", async () => {
    mesh = await startSecureMesh();
    const anonymous = mesh.clientsFor();
    const before = snapshot(mesh.server);
    expect(await flood(2000, 50, () => discover(anonymous))).toEqual(new Map([["UNAUTHENTICATED", 2000]]));
    expect((await auditSince(mesh.server, before.auditSeq)).map((entry) => [entry.action, entry.details?.reason])).toEqual([
      ["call.unauthenticated", "valid client certificate required"],
    ]);
    expect(await refusals(mesh.server, { action: "call.unauthenticated", audit: "entry" })).toBe(1);
    expect(await refusals(mesh.server, { action: "call.unauthenticated", audit: "sampled" })).toBe(1999);

    // The window closes with one summary of what was only counted.
    const summarySeq = mesh.server.security.audit.head.seq;
    mesh.server.security.refusals.flush();
    const [summary, ...more] = await auditSince(mesh.server, summarySeq);
    expect(more).toEqual([]);
    expect(summary).toMatchObject({
      action: "audit.sampled",
      outcome: "denied",
      target: "/agentmesh.v1.RegistryService/Discover",
      details: { refusals: 1999, authenticated: false, actions: { "call.unauthenticated": 1999 }, reasons: { "valid client certificate required": 1999 } },
    });
    // One key per host, not per connection: the port is not part of it.
    expect(summary?.actor).not.toMatch(/:\d+$/);
  });

  it("a foreign CA over many connections adds one entry per method, however many calls", async () => {
    mesh = await startSecureMesh();
    const secure = mesh;
    const stranger = await mintIdentity(await foreignCa(secure.trustDomain), spiffe(secure.trustDomain, "agent", "sql-agent"));
    const connections = Array.from({ length: 10 }, () => secure.clientsFor(stranger));
    const before = snapshot(secure.server);
    let turn = 0;
    const outcomes = await flood(1000, 40, () => {
      const clients = connections[turn++ % connections.length] as RawClients;
      return turn % 2 === 0
        ? discover(clients)
        : call<RegisterResponse>((metadata, options, callback) => clients.registry.register(signedRegister(signerFor(stranger), secure.trustDomain, manifest()).request, metadata, options, callback));
    });
    expect(outcomes).toEqual(new Map([["UNAUTHENTICATED", 1000]]));
    expect((await auditSince(secure.server, before.auditSeq)).map((entry) => entry.target).sort()).toEqual([
      "/agentmesh.v1.RegistryService/Discover",
      "/agentmesh.v1.RegistryService/Register",
    ]);
    expect(secure.server.registry.size).toBe(0);
  });

  it("an authenticated identity's bad signatures are audited one by one up to its budget, then counted", async () => {
    mesh = await startSecureMesh({ auditDenialsPerIdentity: 5 });
    const secure = mesh;
    const agent = await mintIdentity(secure.server.security.ca, spiffe(secure.trustDomain, "agent", "sql-agent"));
    const clients = secure.clientsFor(agent);
    const before = snapshot(secure.server);
    const outcomes = await flood(300, 20, () => {
      const { request, envelope } = signedRegister(signerFor(agent), secure.trustDomain, manifest());
      const signature = Buffer.from(envelope.signature);
      signature[signature.length - 1] = (signature[signature.length - 1] ?? 0) ^ 0x01;
      return call<RegisterResponse>((metadata, options, callback) =>
        clients.registry.register({ ...request, envelope: { ...envelope, signature } }, metadata, options, callback),
      );
    });
    expect(outcomes).toEqual(new Map([["UNAUTHENTICATED", 300]]));
    const written = await auditSince(secure.server, before.auditSeq);
    expect(written.map((entry) => [entry.action, entry.actor])).toEqual(Array(5).fill(["call.denied", agent.spiffeId]));
    secure.server.security.refusals.flush();
    const [summary] = await auditSince(secure.server, before.auditSeq + 5);
    expect(summary).toMatchObject({ action: "audit.sampled", actor: agent.spiffeId, details: { refusals: 295, authenticated: true } });
    expect(secure.server.registry.size).toBe(0);
  });
});

describe("what the registry and orchestrator do is audited", () => {
  it("10,000 registrations are 10,000 entries written in batches, and a deregistration names who asked", { timeout: 120_000 }, async () => {
    mesh = await startSecureMesh({ auditFsync: true, maxInstancesPerIdentity: 20_000, identityRatePerSecond: 0 });
    const secure = mesh;
    const sidecar = await mintIdentity(secure.server.security.ca, spiffe(secure.trustDomain, "sidecar", "host-a"), { allowedAgentNames: ["*"] });
    const clients = secure.clientsFor(sidecar);
    const before = snapshot(secure.server);
    const fsyncsBefore = secure.server.security.audit.stats.syncs;
    const batches = await Promise.all(
      Array.from({ length: 10 }, (_, batch) =>
        call<RegisterBatchResponse>(
          (metadata, options, callback) =>
            clients.registry.registerBatch(
              { registrations: Array.from({ length: 1000 }, (_, index) => signedRegister(signerFor(sidecar), secure.trustDomain, manifest({ name: `agent-${batch}-${index}` })).request) },
              metadata,
              options,
              callback,
            ),
          60_000,
        ),
      ),
    );
    expect(batches.flatMap((response) => response.results).filter((result) => result.code !== status.OK)).toEqual([]);
    // Each batch answered OK after its entries were on file: no waiting here.
    const entries = await auditSince(secure.server, before.auditSeq);
    expect(entries.length).toBe(10_000);
    expect(new Set(entries.map((entry) => entry.action))).toEqual(new Set(["agent.register"]));
    expect(entries[0]).toMatchObject({ actor: sidecar.spiffeId, outcome: "success", details: { replaced: false, host: "host-a" } });
    const fsyncs = secure.server.security.audit.stats.syncs - fsyncsBefore;
    expect(fsyncs).toBeGreaterThan(0);
    expect(fsyncs).toBeLessThan(200);

    const instanceId = entries[0]?.target ?? "";
    const deregisterSeq = secure.server.security.audit.head.seq;
    await call((metadata, options, callback) => clients.registry.deregister({ instanceId, reason: "done" }, metadata, options, callback));
    expect((await auditSince(secure.server, deregisterSeq)).map((entry) => [entry.action, entry.actor, entry.target, entry.details?.reason])).toEqual([
      ["agent.deregister", sidecar.spiffeId, instanceId, "done"],
    ]);
  });

  it("a command sent to a sidecar is audited with its id and the sidecar, beside the request for it", async () => {
    devServer = await startServer({ port: 0, httpPort: 0, insecureDev: true, dataDir: tempDir() }, { log: logSink("silent").log });
    // Stands in for a sidecar: answers each command as carried out, so RestartAgent returns.
    const agent: MeshClient = new MeshClient({
      address: devServer.address,
      sidecarId: "host-a",
      onCommand: (response) => {
        if (response.msg?.$case === "command") agent.sendCommandResult({ commandId: response.msg.value.commandId, ok: true, message: "", instanceId: handle.instanceId });
      },
    });
    cleanups.push(() => agent.close());
    const handle = await agent.register(manifest());
    await agent.waitConnected();
    const orchestrator = new OrchestratorServiceClient(devServer.address, grpcCredentials.createInsecure());
    cleanups.push(() => orchestrator.close());
    const seq = devServer.security.audit.head.seq;
    await new Promise<void>((resolve, reject) =>
      orchestrator.restartAgent({ instanceId: handle.instanceId }, new Metadata(), (error) => (error ? reject(error) : resolve())),
    );
    const lines = await devServer.security.audit.tail(devServer.security.audit.head.seq - seq);
    const entries = lines.map((line) => JSON.parse(line) as { action: string; target: string; details?: Record<string, unknown> });
    expect(entries.map((entry) => [entry.action, entry.target])).toEqual([
      ["command.restart", handle.instanceId],
      ["agent.restart", handle.instanceId],
    ]);
    expect(entries[0]?.details).toEqual({ commandId: expect.stringMatching(/^[0-9a-f]{16}$/), sidecar: "host-a" });
  });
});

describe("a full disk", () => {
  /** A tmpfs of its own (the tests run as root, here and in CI), filled to the last byte by a file that can be removed again. */
  function smallDisk(): { dataDir: string; fill: () => void; free: () => void } {
    const mountPoint = tempDir("agentmesh-full-disk-");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mountPoint]);
    cleanups.push(() => execFileSync("umount", ["-l", mountPoint]));
    const filler = join(mountPoint, "filler");
    return {
      dataDir: join(mountPoint, "data"),
      fill: () => {
        const descriptor = openSync(filler, "w");
        const chunk = Buffer.alloc(4096);
        try {
          for (;;) writeSync(descriptor, chunk);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
        } finally {
          closeSync(descriptor);
        }
      },
      free: () => unlinkSync(filler),
    };
  }

  const readyz = async (server: RunningServer) => (await fetch(`http://127.0.0.1:${server.httpPort}/readyz`)).status;
  const health = (clients: RawClients) => call<{ status: string }>((_metadata, options, callback) => clients.health.check({ service: "" }, options, callback)).then((response) => response.status);

  it("refuses audited actions with UNAVAILABLE and reports not ready, logs ENOSPC once, and recovers with an audit.gap entry when space returns", async () => {
    const disk = smallDisk();
    const sink: LogSink = logSink("info");
    // Registrations in memory here, so that once the state store (SQLite, on the same disk)
    // refuses, registrations still reach the audit log and it is what meets the full disk.
    mesh = await startSecureMesh({ dataDir: disk.dataDir, auditRetryIntervalMs: 50 }, sink.log, undefined, { store: new MemoryInstanceStore() });
    const secure = mesh;
    const agent = await mintIdentity(secure.server.security.ca, spiffe(secure.trustDomain, "agent", "sql-agent"));
    const agentClients = secure.clientsFor(agent);
    const register = () =>
      call<RegisterResponse>((metadata, options, callback) => agentClients.registry.register(signedRegister(signerFor(agent), secure.trustDomain, manifest()).request, metadata, options, callback));
    expect(await health(secure.adminClients)).toBe("SERVING");

    disk.fill();
    // The log's last page may still have room: admin actions go on until the write that needs a new one.
    // The state store (SQLite, on the same disk) may refuse the token first: that too is
    // UNAVAILABLE, never an accepted and lost write; registrations (soft state) then fill the audit log.
    let refused: { code: number; details: string } | undefined;
    const storeRefusals: Array<{ code: number; details: string }> = [];
    for (let attempt = 0; attempt < 200 && !refused; attempt += 1) {
      const operation = storeRefusals.length === 0 ? secure.joinToken({ host: "host-a", agents: ["sql-agent"] }) : register();
      await operation.catch((error: { code: number; details: string }) => {
        if (error.details === "state store unavailable") storeRefusals.push(error);
        else refused = error;
      });
    }
    expect(storeRefusals.every((error) => error.code === status.UNAVAILABLE)).toBe(true);
    expect(refused).toEqual(expect.objectContaining({ code: status.UNAVAILABLE, details: "audit log unavailable: audited actions are refused" }));

    const before = snapshot(secure.server);
    expect((await expectCode(register(), status.UNAVAILABLE)).details).toBe("audit log unavailable: audited actions are refused");
    expect(secure.server.registry.size).toBe(before.instances);
    expect(await health(secure.adminClients)).toBe("NOT_SERVING");
    expect(await readyz(secure.server)).toBe(503);
    // Reads need no audit entry and keep working (they see what was registered before the disk filled).
    expect((await discover(agentClients)).instances).toHaveLength(before.instances);
    const failing = sink.lines.filter((line) => String(line.msg).startsWith("audit log cannot be written"));
    expect(failing).toHaveLength(1);
    expect(failing[0]?.err).toMatchObject({ code: "ENOSPC" });
    expect(sink.lines.filter((line) => line.msg === "audit append failed")).toEqual([]);

    disk.free();
    await expect.poll(() => readyz(secure.server), { timeout: 5000 }).toBe(200);
    expect(await health(secure.adminClients)).toBe("SERVING");
    expect(sink.lines.filter((line) => String(line.msg).startsWith("audit log writable again"))).toHaveLength(1);
    const gapSeq = before.auditSeq;
    const [gap] = await auditSince(secure.server, gapSeq);
    expect(gap).toMatchObject({ actor: "system", action: "audit.gap", outcome: "failure", details: { errorCode: "ENOSPC" } });
    expect(gap?.details?.droppedEntries).toBeGreaterThanOrEqual(1);
    expect((await register()).instance?.manifest?.name).toBe("sql-agent");

    await secure.close();
    mesh = undefined;
    const caKeys = [new X509Certificate(secure.server.security.ca.certificatePem).publicKey];
    expect(await verifyAuditLog(join(disk.dataDir, "audit.log"), { headKeys: { publicKeys: caKeys } })).toMatchObject({ ok: true, entriesPastAnchor: 0 });
  });
});
