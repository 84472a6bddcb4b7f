// Certificates from a foreign CA, with real certificates made in the test: one CA
// with a name of its own, and one that copies the mesh CA's subject and issues a
// leaf without an authority key identifier, so OpenSSL matches the issuer by name
// and checks the leaf against the mesh CA's key. Both must be handled as ADR 0001
// says: the handshake completes and every call is UNAUTHENTICATED at once (never a
// dropped connection or a call that waits out its deadline), audited and counted.
import { status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DiscoverResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type LogSink, logSink } from "../helpers/log-sink.js";
import {
  type HandMadeCa,
  type SecureMesh,
  auditSince,
  call,
  handMadeCa,
  leafWithoutKeyIdentifier,
  refusals,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

let mesh: SecureMesh;
let sink: LogSink;

beforeEach(async () => {
  sink = logSink("info");
  mesh = await startSecureMesh({}, sink.log);
});

afterEach(async () => {
  await mesh.close();
});

const attempts = 6;

const cases: Array<[string, (trustDomain: string) => Promise<HandMadeCa>]> = [
  ["its own name", () => handMadeCa("CN=other CA, O=elsewhere")],
  ["the mesh CA's name", (trustDomain) => handMadeCa(`CN=agentmesh CA ${trustDomain}, O=agentmesh`)],
];

describe("a client certificate from a foreign CA", () => {
  it.each(cases)("with %s: each of several fresh connections completes TLS and its call is UNAUTHENTICATED, audited once and counted", async (_name, makeCa) => {
    const foreign = await makeCa(mesh.trustDomain);
    const before = snapshot(mesh.server);
    const countedBefore = await refusals(mesh.server, { action: "call.unauthenticated" });
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      const impostor = await leafWithoutKeyIdentifier(foreign, spiffe(mesh.trustDomain, "agent", "sql-agent"));
      // A new certificate and a new channel each time: every attempt is its own handshake.
      const clients = mesh.clientsFor(impostor);
      const outcome = await call<DiscoverResponse>(
        (metadata, options, callback) => clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: true }, metadata, options, callback),
        5000,
      ).then(
        () => "OK",
        (error: { code: number; details: string }) => `${status[error.code]} ${error.details}`,
      );
      outcomes.push(outcome);
      clients.close();
    }
    expect(outcomes).toEqual(Array(attempts).fill("UNAUTHENTICATED valid client certificate required"));
    expect(mesh.server.registry.size).toBe(before.instances);
    // Sampled: the first refusal from this peer is written at once, the rest are counted.
    const entries = await auditSince(mesh.server, before.auditSeq);
    expect(entries.map((entry) => [entry.action, entry.target, entry.details?.reason])).toEqual([
      ["call.unauthenticated", "/agentmesh.v1.RegistryService/Discover", "valid client certificate required"],
    ]);
    expect((await refusals(mesh.server, { action: "call.unauthenticated" })) - countedBefore).toBe(attempts);
    expect(sink.lines.filter((line) => (line.level as number) >= 50)).toEqual([]);
  });
});
