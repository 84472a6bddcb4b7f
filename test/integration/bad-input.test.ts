// Bad input over real mTLS calls, as a table: every case answers its own status
// with a short message naming the problem (never INTERNAL, never an echo of the
// whole input), and changes nothing: no instance, no revision, no audit entry.
// Undecodable requests are refused before any handler runs, in one place for every
// service (services/server/request-guard.ts).
import { type Client, type ClientDuplexStream, type ClientReadableStream, Metadata, type ServiceError, makeGenericClientConstructor, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type InvokeRequest, InvokeRequest as InvokeRequestMessage } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type DiscoverRequest, LabelRequirement_Operator, RegisterRequest } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { undecodableMessage } from "../../services/server/request-guard.js";
import { manifest } from "../helpers/manifests.js";
import { type LogSink, logSink } from "../helpers/log-sink.js";
import {
  type MintedIdentity,
  type RawClients,
  type SecureMesh,
  call,
  channelOptions,
  mintIdentity,
  mtlsCredentials,
  signedRegister,
  signerFor,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

let mesh: SecureMesh;
let sink: LogSink;
let sidecar: MintedIdentity;
let clients: RawClients;
let raw: RawClient;

const identity = (value: Buffer) => value;
const rawMethod = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: identity,
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity,
});
const RawConstructor = makeGenericClientConstructor(
  {
    register: rawMethod("/agentmesh.v1.RegistryService/Register", false, false),
    discover: rawMethod("/agentmesh.v1.RegistryService/Discover", false, false),
    watch: rawMethod("/agentmesh.v1.RegistryService/Watch", false, true),
    connect: rawMethod("/agentmesh.v1.OrchestratorService/Connect", true, true),
    check: rawMethod("/grpc.health.v1.Health/Check", false, false),
  },
  "Raw",
);
type Callback = (error: ServiceError | null) => void;
type RawClient = Client & {
  register(request: Buffer, metadata: Metadata, options: { deadline: Date }, callback: Callback): void;
  discover(request: Buffer, metadata: Metadata, options: { deadline: Date }, callback: Callback): void;
  check(request: Buffer, metadata: Metadata, options: { deadline: Date }, callback: Callback): void;
  watch(request: Buffer, metadata: Metadata, options: { deadline: Date }): ClientReadableStream<Buffer>;
  connect(metadata: Metadata, options: { deadline: Date }): ClientDuplexStream<Buffer, Buffer>;
};

beforeAll(async () => {
  sink = logSink("info");
  mesh = await startSecureMesh({}, sink.log);
  sidecar = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "sidecar", "host-a"), { allowedAgentNames: ["*"] });
  clients = mesh.clientsFor(sidecar);
  raw = new RawConstructor(mesh.server.address, mtlsCredentials(mesh.trustBundle, sidecar), channelOptions) as unknown as RawClient;
  // Something to change, so "nothing changed" means something; its long interval keeps the detector from changing it meanwhile.
  const quiet = manifest({ healthPolicy: { heartbeatIntervalMs: 60_000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } });
  await call((metadata, options, callback) => clients.registry.register(signedRegister(signerFor(sidecar), mesh.trustDomain, quiet).request, metadata, options, callback));
});

afterAll(async () => {
  raw.close();
  await mesh.close();
});

const deadline = () => ({ deadline: new Date(Date.now() + 5000) });
type Outcome = { code: number; details: string };
const settle = (invoke: (callback: (error: ServiceError | null) => void) => void): Promise<Outcome> =>
  new Promise((resolve) => invoke((error) => resolve(error ? { code: error.code, details: error.details } : { code: status.OK, details: "" })));
const streamOutcome = (stream: ClientReadableStream<unknown> | ClientDuplexStream<unknown, unknown>): Promise<Outcome> =>
  new Promise((resolve) => {
    stream.on("data", () => {});
    stream.on("error", (error: ServiceError) => resolve({ code: error.code, details: error.details }));
    stream.on("end", () => resolve({ code: status.OK, details: "" }));
  });

/** Field 1 (varint) = 2^63 − 1: a valid int64 that no JavaScript number holds exactly. */
const maxInt64SinceRevision = Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
const signedRegisterBytes = () => Buffer.from(RegisterRequest.encode(signedRegister(signerFor(sidecar), mesh.trustDomain, manifest({ name: "cut-short" })).request).finish());

const discover = (selector: DiscoverRequest["labelSelector"]) =>
  settle((callback) =>
    clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: selector, limit: 0, includeUnhealthy: true }, new Metadata(), deadline(), callback),
  );
const inValues = (values: string[]) => ({ matchLabels: {}, matchExpressions: [{ key: "tier", operator: LabelRequirement_Operator.OPERATOR_IN, values }] });
const invoke = (metadata: Record<string, string>) =>
  settle((callback) =>
    clients.orchestrator.invoke(
      InvokeRequestMessage.fromPartial({ capability: "sql.query", metadata } satisfies Partial<InvokeRequest>),
      new Metadata(),
      deadline(),
      callback,
    ),
  );
const entries = (count: number, valueBytes = 1) => Object.fromEntries(Array.from({ length: count }, (_, index) => [`key-${index}`, "v".repeat(valueBytes)]));

const cases: Array<[string, () => Promise<Outcome>, number, string | RegExp]> = [
  ["a truncated Register message", () => settle((callback) => raw.register(signedRegisterBytes().subarray(0, 40), new Metadata(), deadline(), callback)), status.INVALID_ARGUMENT, undecodableMessage],
  ["bytes that are no protobuf at all", () => settle((callback) => raw.discover(Buffer.from([0xff, 0xff, 0xff, 0xff]), new Metadata(), deadline(), callback)), status.INVALID_ARGUMENT, undecodableMessage],
  ["Watch.since_revision of 2^63−1", () => streamOutcome(raw.watch(maxInt64SinceRevision, new Metadata(), deadline())), status.INVALID_ARGUMENT, undecodableMessage],
  [
    "a Connect stream whose first message does not decode",
    () => {
      const stream = raw.connect(new Metadata(), deadline());
      stream.write(Buffer.from([0x0a, 0x7f, 0x01]));
      return streamOutcome(stream);
    },
    status.INVALID_ARGUMENT,
    undecodableMessage,
  ],
  ["a health check for a 100 kB service name", () => settle((callback) => clients.health.check({ service: "s".repeat(100_000) }, deadline(), callback)), status.NOT_FOUND, /^unknown service "s{40}…"$/],
  ["an In selector with 65 values", () => discover(inValues(Array.from({ length: 65 }, (_, index) => `v${index}`))), status.INVALID_ARGUMENT, "label_selector.match_expressions[0].values: more than 64"],
  ["an In selector value that is no label value", () => discover(inValues(["ok", "not ok!"])), status.INVALID_ARGUMENT, "label_selector.match_expressions[0].values[1]: must be 0-63 of [A-Za-z0-9._-]"],
  ["an In selector value of 64 characters", () => discover(inValues(["x".repeat(64)])), status.INVALID_ARGUMENT, "label_selector.match_expressions[0].values[0]: must be 0-63 of [A-Za-z0-9._-]"],
  ["Invoke metadata with 65 entries", () => invoke(entries(65)), status.INVALID_ARGUMENT, "metadata: more than 64 entries"],
  ["an Invoke metadata key of 129 characters", () => invoke({ ["k".repeat(129)]: "v" }), status.INVALID_ARGUMENT, /^metadata\[k{40}…\]: key must be 1-128 of \[A-Za-z0-9._-\]$/],
  ["an Invoke metadata key with a space", () => invoke({ "bad key": "v" }), status.INVALID_ARGUMENT, "metadata[bad key]: key must be 1-128 of [A-Za-z0-9._-]"],
  ["an Invoke metadata value over 4096 bytes", () => invoke({ big: "é".repeat(2049) }), status.INVALID_ARGUMENT, "metadata[big]: value over 4096 bytes"],
  ["Invoke metadata over 16 KiB in all", () => invoke(entries(8, 4000)), status.INVALID_ARGUMENT, "metadata: over 16384 bytes in all"],
];

describe("bad input", () => {
  it.each(cases)("%s: its own status, a short message, nothing changed", async (_name, send, code, details) => {
    const before = snapshot(mesh.server);
    const outcome = await send();
    expect(outcome.code).toBe(code);
    if (typeof details === "string") expect(outcome.details).toBe(details);
    else expect(outcome.details).toMatch(details);
    expect(outcome.details.length).toBeLessThan(120);
    expect(snapshot(mesh.server)).toEqual(before);
  });

  it("none of it was logged as an internal failure, and the server still serves", async () => {
    expect(sink.lines.filter((line) => (line.level as number) >= 50)).toEqual([]);
    const health = await call<{ status: string }>((_metadata, options, callback) => clients.health.check({ service: "" }, options, callback));
    expect(health.status).toBe("SERVING");
    const outcome = await invoke(entries(64, 200));
    // Within every limit: past validation, refused only because nothing offers the capability.
    expect(outcome.code).toBe(status.UNAVAILABLE);
  });
});
