// The "Status codes" table of docs/protocol.md is the contract: this test reads it
// from the markdown and makes every refusal it lists against a real server over
// mTLS, checking the code, the message and how it arrives (status or StreamError).
// A row without a scenario, or a scenario without a row, fails the test too.
import type { webcrypto } from "node:crypto";
import { X509Certificate } from "node:crypto";
import { type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { spiffeIdsFromCertificate } from "../../sdk/ts/src/core/spiffe-id.js";
import { subtle, x509 } from "../../sdk/ts/src/core/x509-setup.js";
import { IdentityServiceService, type IssueCertificateRequest, type IssueCertificateResponse } from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import {
  type ConnectRequest,
  type ConnectResponse,
  Hello,
  OrchestratorServiceService,
} from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest, type RegisterResponse, RegistryServiceService, type WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentManifest } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { EventLog } from "../helpers/events.js";
import { manifest } from "../helpers/manifests.js";
import { codeSpans, firstTable, readDoc, section } from "../helpers/markdown.js";
import {
  type MintedIdentity,
  type RawClients,
  type SecureMesh,
  call,
  connectMethod,
  joinOverRpc,
  mintIdentity,
  signedRegister,
  signerFor,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

interface Outcome {
  code: number;
  message: string;
  answer: "status" | "StreamError";
}

const rows = firstTable(section(readDoc("docs/protocol.md"), "Status codes")).map((row) => ({
  id: codeSpans(row.case ?? "")[0] ?? "",
  rpcs: codeSpans(row.rpc ?? ""),
  code: codeSpans(row.code ?? "")[0] ?? "",
  message: codeSpans(row.message ?? "")[0] ?? "",
  answer: row.answer ?? "",
}));

let mesh: SecureMesh;
let td: string;
const streams: Array<ClientDuplexStream<ConnectRequest, ConnectResponse>> = [];
let counter = 0;
const unique = (prefix: string) => `${prefix}-${(counter += 1)}`;

// A short first-message deadline keeps the row about it quick; every other stream sends at once.
const firstMessageTimeoutMs = 1000;

beforeAll(async () => {
  mesh = await startSecureMesh({ firstMessageTimeoutMs });
  td = mesh.trustDomain;
});

afterAll(async () => {
  for (const stream of streams.splice(0)) stream.cancel();
  await mesh.close();
});

// ---- calling any unary RPC by its name -------------------------------------------------

const services = { identity: IdentityServiceService, registry: RegistryServiceService, orchestrator: OrchestratorServiceService } as const;
type ServiceKey = keyof typeof services;

interface MethodDefinition {
  path: string;
  requestDeserialize(bytes: Buffer): Record<string, unknown>;
}

/** The service and method key (e.g. `scaleDeployment`) of an RPC named like `ScaleDeployment`. */
function methodOf(rpc: string): { service: ServiceKey; key: string; definition: MethodDefinition } {
  for (const service of Object.keys(services) as ServiceKey[]) {
    for (const [key, definition] of Object.entries(services[service]) as Array<[string, MethodDefinition]>) {
      if (definition.path.endsWith(`/${rpc}`)) return { service, key, definition };
    }
  }
  throw new Error(`no RPC ${rpc}`);
}

/** Calls `rpc` with a request whose unset fields have their proto defaults. */
function unary(clients: RawClients, rpc: string, fields: Record<string, unknown> = {}): Promise<unknown> {
  const { service, key, definition } = methodOf(rpc);
  const request = { ...definition.requestDeserialize(Buffer.alloc(0)), ...fields };
  const client = clients[service] as unknown as Record<string, (...args: unknown[]) => unknown>;
  const method = client[key];
  if (!method) throw new Error(`client has no ${key}`);
  return call((metadata, options, callback) => method.call(client, request, metadata, options, callback));
}

/** What a call that must fail answered; a success is reported as code 0 so the comparison names it. */
async function refusal(promise: Promise<unknown>): Promise<Outcome> {
  try {
    await promise;
    return { code: status.OK, message: "the call succeeded", answer: "status" };
  } catch (error) {
    const serviceError = error as ServiceError;
    return { code: serviceError.code, message: serviceError.details, answer: "status" };
  }
}

/** Asserts every outcome is the same and answers it (rows listing several RPCs, or several ways in). */
function same(outcomes: Outcome[]): Outcome {
  for (const outcome of outcomes) expect(outcome).toEqual(outcomes[0]);
  return outcomes[0] as Outcome;
}

// ---- identities --------------------------------------------------------------------

async function sidecar(allowedAgentNames: string[] = ["*"]): Promise<{ identity: MintedIdentity; clients: RawClients }> {
  const identity = await mintIdentity(mesh.server.security.ca, spiffe(td, "sidecar", unique("host")), { allowedAgentNames });
  return { identity, clients: mesh.clientsFor(identity) };
}

const register = (actor: { identity: MintedIdentity; clients: RawClients }, agentManifest: AgentManifest, instanceId = "") =>
  call<RegisterResponse>((metadata, options, callback) =>
    actor.clients.registry.register(signedRegister(signerFor(actor.identity), td, agentManifest, { instanceId }).request, metadata, options, callback),
  );

const issue = (clients: RawClients, request: Partial<IssueCertificateRequest>) =>
  call<IssueCertificateResponse>((metadata, options, callback) =>
    clients.identity.issueCertificate({ csrPem: "", joinToken: "", spiffeId: "", ttlSeconds: 0, ...request }, metadata, options, callback),
  );

const csrFor = async (spiffeId: string) => (await generateKeyAndCsr(spiffeId)).csrPem;

/** A CSR whose self-signature no longer verifies: the last byte of the signature flipped. */
async function csrWithBrokenSignature(spiffeId: string): Promise<string> {
  const der = Buffer.from(new x509.Pkcs10CertificateRequest(await csrFor(spiffeId)).rawData);
  der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
  return new x509.Pkcs10CertificateRequest(der).toString("pem");
}

async function p384Csr(): Promise<string> {
  const keys = (await subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: "CN=p384", keys, signingAlgorithm: { name: "ECDSA", hash: "SHA-384" } });
  return csr.toString("pem");
}

// ---- Connect -------------------------------------------------------------------------

interface ConnectSession {
  stream: ClientDuplexStream<ConnectRequest, ConnectResponse>;
  responses: EventLog<ConnectResponse>;
  ended: Promise<ServiceError | undefined>;
}

function openConnect(clients: RawClients): ConnectSession {
  const stream = clients.orchestrator.connect();
  streams.push(stream);
  const responses = new EventLog<ConnectResponse>();
  stream.on("data", (response: ConnectResponse) => responses.push(response));
  const ended = new Promise<ServiceError | undefined>((resolve) => {
    stream.on("error", (error: ServiceError) => resolve(error));
    stream.on("end", () => resolve(undefined));
  });
  return { stream, responses, ended };
}

/** A signed Hello; the sidecar id is the identity's own name, so no two scenarios share one. */
function signedHello(identity: MintedIdentity, fields: Partial<Hello>, audience = `spiffe://${td}/server`): Hello {
  const name = identity.spiffeId.split("/").pop() ?? "";
  const hello = Hello.fromPartial({ sidecarId: name, host: name, ...fields });
  hello.envelope = signerFor(identity).sign(Hello.encode(hello).finish(), connectMethod, "agentmesh.v1.Hello", audience);
  return hello;
}

/** A Connect whose first answer must be the end of the stream. */
async function connectRefused(clients: RawClients, first: ConnectRequest): Promise<Outcome> {
  const session = openConnect(clients);
  session.stream.write(first);
  const error = await session.ended;
  expect(session.responses.items).toEqual([]);
  return { code: error?.code ?? status.OK, message: error?.details ?? "stream ended without a status", answer: "status" };
}

/** A welcomed Connect stream (the Welcome must come first, whatever follows). */
async function welcomed(actor: { identity: MintedIdentity; clients: RawClients }, instanceIds: string[] = []): Promise<ConnectSession> {
  const session = openConnect(actor.clients);
  session.stream.write({ msg: { $case: "hello", value: signedHello(actor.identity, { instanceIds }) } });
  await session.responses.next((response) => response.msg !== undefined);
  expect(session.responses.items[0]?.msg?.$case).toBe("welcome");
  return session;
}

async function nextStreamError(session: ConnectSession): Promise<Outcome> {
  const response = await session.responses.next((item) => item.msg?.$case === "error");
  if (response.msg?.$case !== "error") throw new Error("not a StreamError");
  return { code: response.msg.value.code, message: response.msg.value.message, answer: "StreamError" };
}

const heartbeat = (sequence: number, instanceId: string, announce = false): ConnectRequest => ({
  msg: { $case: "heartbeat", value: { sequence, instances: [{ instanceId, load: undefined, reportedState: 0, announce }] } },
});

// ---- one scenario per row ----------------------------------------------------------

const scenarios: Record<string, (rpc: string) => Promise<Outcome>> = {
  "issue-spiffe-id-missing": async () => refusal(issue(mesh.clientsFor(), { csrPem: await csrFor(spiffe(td, "sidecar", "x")) })),
  "issue-spiffe-id-foreign": async () => {
    const spiffeId = "spiffe://other.example/sidecar/host-a";
    return refusal(issue(mesh.clientsFor(), { csrPem: await csrFor(spiffeId), spiffeId, joinToken: (await mesh.joinToken({ host: "host-a", agents: ["*"] })).token }));
  },
  "issue-csr-missing": async () => refusal(issue(mesh.clientsFor(), { spiffeId: spiffe(td, "sidecar", "host-a") })),
  "issue-csr-malformed": async () =>
    refusal(issue(mesh.clientsFor(), { spiffeId: spiffe(td, "sidecar", "host-a"), csrPem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" })),
  "issue-csr-key": async () => refusal(issue(mesh.clientsFor(), { spiffeId: spiffe(td, "sidecar", "host-a"), csrPem: await p384Csr() })),
  "issue-csr-signature": async () => {
    // Proof of possession is checked before the token is spent: the token still works afterwards.
    const host = unique("pop");
    const spiffeId = spiffe(td, "sidecar", host);
    const { token } = await mesh.joinToken({ host, agents: ["*"] });
    const outcome = await refusal(issue(mesh.clientsFor(), { spiffeId, joinToken: token, csrPem: await csrWithBrokenSignature(spiffeId) }));
    expect((await joinOverRpc(mesh, spiffeId, token)).response.spiffeId).toBe(spiffeId);
    return outcome;
  },
  "issue-ttl": async () => {
    const spiffeId = spiffe(td, "sidecar", "host-a");
    return refusal(issue(mesh.clientsFor(), { spiffeId, csrPem: await csrFor(spiffeId), ttlSeconds: 86_401 }));
  },
  "issue-token-server-identity": async () => {
    const { token } = await mesh.joinToken({ host: "host-a", agents: ["*"] });
    return same(
      await Promise.all(
        [spiffe(td, "server", "rogue"), spiffe(td, "admin", "rogue")].map(async (spiffeId) =>
          refusal(issue(mesh.clientsFor(), { spiffeId, joinToken: token, csrPem: await csrFor(spiffeId) })),
        ),
      ),
    );
  },
  "issue-token-name": async () => {
    const host = unique("names");
    const { token } = await mesh.joinToken({ host, agents: ["sql-agent"] });
    const outcomes: Outcome[] = [];
    for (const spiffeId of [spiffe(td, "agent", "payments"), spiffe(td, "sidecar", "another-host")]) {
      outcomes.push(await refusal(issue(mesh.clientsFor(), { spiffeId, joinToken: token, csrPem: await csrFor(spiffeId) })));
    }
    // Refusals spend nothing: the single use is still there for a name the token allows.
    expect((await joinOverRpc(mesh, spiffe(td, "agent", "sql-agent"), token)).response.allowedAgentNames).toEqual(["sql-agent"]);
    return same(outcomes);
  },
  "issue-token-reuse": async () => {
    const host = unique("reuse");
    const { token } = await mesh.joinToken({ host, agents: ["*"], uses: 1 });
    await joinOverRpc(mesh, spiffe(td, "sidecar", host), token);
    const spiffeId = spiffe(td, "sidecar", host);
    return refusal(issue(mesh.clientsFor(), { spiffeId, joinToken: token, csrPem: await csrFor(spiffeId) }));
  },
  "issue-no-credential": async () => {
    const spiffeId = spiffe(td, "sidecar", "host-a");
    return refusal(issue(mesh.clientsFor(), { spiffeId, csrPem: await csrFor(spiffeId) }));
  },
  "renew-other-id": async () => {
    const { identity, clients } = await sidecar();
    const other = spiffe(td, "sidecar", unique("other"));
    const outcome = await refusal(issue(clients, { spiffeId: other, csrPem: await csrFor(other) }));
    // The baseline: the same identity renews.
    expect((await issue(clients, { spiffeId: identity.spiffeId, csrPem: await csrFor(identity.spiffeId) })).spiffeId).toBe(identity.spiffeId);
    return outcome;
  },
  "no-client-certificate": async () => refusal(unary(mesh.clientsFor(), "ListAgents")),
  "revoked-certificate": async () => {
    const host = unique("revoked");
    const { token } = await mesh.joinToken({ host, agents: ["*"] });
    const { identity } = await joinOverRpc(mesh, spiffe(td, "sidecar", host), token);
    await unary(mesh.adminClients, "RevokeCertificate", { target: identity.serial, reason: "test" });
    return refusal(unary(mesh.clientsFor(identity), "ListAgents"));
  },
  "non-admin": async (rpc) => refusal(unary((await sidecar()).clients, rpc)),
  "undecodable": async () => {
    const { clients } = await sidecar();
    // Field 1 (name) announces 255 bytes that never come.
    return refusal(
      call((metadata, options, callback) =>
        clients.registry.makeUnaryRequest("/agentmesh.v1.RegistryService/ListAgents", (bytes: Buffer) => bytes, (bytes: Buffer) => bytes, Buffer.from([0x0a, 0xff]), metadata, options, callback),
      ),
    );
  },
  "register-no-envelope": async () => {
    const { clients } = await sidecar();
    return refusal(call((metadata, options, callback) => clients.registry.register(RegisterRequest.fromPartial({ manifest: manifest(), host: "h" }), metadata, options, callback)));
  },
  "register-audience": async () => {
    const actor = await sidecar();
    const { request } = signedRegister(signerFor(actor.identity), td, manifest(), { audience: `spiffe://${td}/server/${mesh.server.config.serverId}` });
    return refusal(call((metadata, options, callback) => actor.clients.registry.register(request, metadata, options, callback)));
  },
  "register-signer": async () => {
    const actor = await sidecar();
    const someoneElse = await sidecar();
    const { request } = signedRegister(signerFor(someoneElse.identity), td, manifest());
    return refusal(call((metadata, options, callback) => actor.clients.registry.register(request, metadata, options, callback)));
  },
  "register-replay": async () => {
    const actor = await sidecar();
    const { request } = signedRegister(signerFor(actor.identity), td, manifest());
    const send = () => call((metadata, options, callback) => actor.clients.registry.register(request, metadata, options, callback));
    await send();
    return refusal(send());
  },
  "register-payload": async () => {
    const actor = await sidecar();
    const envelope = signerFor(actor.identity).sign(Buffer.from([0x0a, 0xff]), "/agentmesh.v1.RegistryService/Register", "agentmesh.v1.RegisterRequest", `spiffe://${td}/server`);
    return refusal(call((metadata, options, callback) => actor.clients.registry.register(RegisterRequest.fromPartial({ envelope }), metadata, options, callback)));
  },
  "register-validation": async () =>
    refusal(register(await sidecar(), manifest({ capabilities: [{ name: "sql.query", version: "2.x", attributes: {} }] }))),
  "register-name": async () => refusal(register(await sidecar(["sql-agent"]), manifest({ name: "payments" }))),
  "register-owned": async () => {
    const instanceId = unique("owned");
    await register(await sidecar(), manifest(), instanceId);
    return refusal(register(await sidecar(), manifest(), instanceId));
  },
  "register-other-agent": async () => {
    const actor = await sidecar();
    const instanceId = unique("mine");
    await register(actor, manifest({ name: "sql-agent" }), instanceId);
    return refusal(register(actor, manifest({ name: "summarizer" }), instanceId));
  },
  "deregister-non-owner": async () => {
    const instanceId = (await register(await sidecar(), manifest())).instance?.instanceId ?? "";
    return refusal(unary((await sidecar()).clients, "Deregister", { instanceId }));
  },
  "deregister-unknown": async (rpc) => refusal(unary(mesh.adminClients, rpc, { instanceId: "no-such-instance" })),
  "command-non-owner": async (rpc) => {
    const instanceId = (await register(await sidecar(), manifest())).instance?.instanceId ?? "";
    return refusal(unary((await sidecar()).clients, rpc, { instanceId }));
  },
  "command-refused": async (rpc) => {
    const actor = await sidecar();
    const instanceId = (await register(actor, manifest())).instance?.instanceId ?? "";
    const session = await welcomed(actor, [instanceId]);
    const answered = refusal(unary(mesh.adminClients, rpc, { instanceId }));
    const sent = await session.responses.next((response) => response.msg?.$case === "command");
    const commandId = sent.msg?.$case === "command" ? sent.msg.value.commandId : "";
    session.stream.write({ msg: { $case: "commandResult", value: { commandId, ok: false, message: "no such process", instanceId } } });
    const outcome = await answered;
    // The placeholders of the row, filled in: this stream's sidecar_id, the command, the sidecar's message.
    expect(outcome.message).toBe(`sidecar ${actor.identity.spiffeId.split("/").pop()} refused ${rpc.replace(/Agent$/, "").toLowerCase()}: no such process`);
    return outcome;
  },
  "command-not-connected": async (rpc) => {
    const actor = await sidecar();
    const instanceId = (await register(actor, manifest())).instance?.instanceId ?? "";
    // The owner and an admin alike: the instance has no stream to send the command on.
    return same([await refusal(unary(actor.clients, rpc, { instanceId })), await refusal(unary(mesh.adminClients, rpc, { instanceId }))]);
  },
  "discover-range": async (rpc) => refusal(unary(mesh.adminClients, rpc, { capability: "sql.query", versionRange: "^^1" })),
  "no-healthy-instance": async (rpc) => refusal(unary(mesh.adminClients, rpc, { capability: "nothing.here" })),
  "watch-revision": async () => {
    const stream = mesh.adminClients.registry.watch({ sinceRevision: mesh.server.registry.currentRevision + 1000, capability: "", epoch: mesh.server.registry.epoch });
    const error = await new Promise<ServiceError>((resolve, reject) => {
      stream.on("error", resolve);
      stream.on("data", (event: WatchResponse) => reject(new Error(`watch answered an event: ${JSON.stringify(event)}`)));
    });
    return { code: error.code, message: error.details, answer: "status" };
  },
  "watch-no-epoch": async () => {
    const stream = mesh.adminClients.registry.watch({ sinceRevision: 1, capability: "", epoch: "" });
    const error = await new Promise<ServiceError>((resolve, reject) => {
      stream.on("error", resolve);
      stream.on("data", (event: WatchResponse) => reject(new Error(`watch answered an event: ${JSON.stringify(event)}`)));
    });
    return { code: error.code, message: error.details, answer: "status" };
  },
  "deployment-unknown": async () => refusal(unary(mesh.adminClients, "GetDeployment", { name: "no-such-deployment" })),
  "connect-first-message-timeout": async () => {
    const session = openConnect((await sidecar()).clients);
    const error = await session.ended;
    expect(error?.details).toBe(`no request message within ${firstMessageTimeoutMs} ms`);
    return { code: error?.code ?? status.OK, message: error?.details ?? "", answer: "status" };
  },
  "connect-first-not-hello": async () => connectRefused((await sidecar()).clients, heartbeat(1, "x")),
  "connect-no-envelope": async () => connectRefused((await sidecar()).clients, { msg: { $case: "hello", value: Hello.fromPartial({ sidecarId: "host-a" }) } }),
  "connect-audience": async () => {
    const actor = await sidecar();
    return connectRefused(actor.clients, { msg: { $case: "hello", value: signedHello(actor.identity, {}, `spiffe://${td}/server/${mesh.server.config.serverId}`) } });
  },
  "connect-sidecar-id": async () => {
    const actor = await sidecar();
    return connectRefused(actor.clients, { msg: { $case: "hello", value: signedHello(actor.identity, { sidecarId: "" }) } });
  },
  "stream-owned": async () => {
    const instanceId = (await register(await sidecar(), manifest())).instance?.instanceId ?? "";
    const intruder = await sidecar();
    const fromHello = await nextStreamError(await welcomed(intruder, [instanceId]));
    const session = await welcomed(intruder);
    session.stream.write(heartbeat(1, instanceId, true));
    return same([fromHello, await nextStreamError(session)]);
  },
  "stream-sequence": async () => {
    const actor = await sidecar();
    const instanceId = (await register(actor, manifest())).instance?.instanceId ?? "";
    const session = await welcomed(actor, [instanceId]);
    session.stream.write(heartbeat(0, instanceId));
    const zero = await nextStreamError(session);
    // Gaps are allowed; a repeat is not.
    session.stream.write(heartbeat(5, instanceId));
    session.stream.write(heartbeat(9, instanceId));
    session.stream.write(heartbeat(9, instanceId));
    const repeat = await nextStreamError(session);
    expect(session.responses.items.filter((response) => response.msg?.$case === "error")).toHaveLength(2);
    return same([zero, repeat]);
  },
  "stream-unknown-instance": async () => {
    const session = await welcomed(await sidecar());
    session.stream.write(heartbeat(1, "ghost-instance"));
    const fromHeartbeat = await nextStreamError(session);
    session.stream.write({ msg: { $case: "instanceEvent", value: { instanceId: "ghost-instance", state: 4, reason: "", exitCode: 0 } } });
    return same([fromHeartbeat, await nextStreamError(session)]);
  },
  "stream-hello-twice": async () => {
    const actor = await sidecar();
    const session = await welcomed(actor);
    session.stream.write({ msg: { $case: "hello", value: signedHello(actor.identity, {}) } });
    return nextStreamError(session);
  },
};

describe("docs/protocol.md status codes", () => {
  it("has a scenario for every row and a row for every scenario", () => {
    expect(rows.length).toBeGreaterThan(30);
    expect(rows.map((row) => row.id).sort()).toEqual(Object.keys(scenarios).sort());
  });

  it.each(rows.map((row) => [row.id, row] as const))("%s", { timeout: 30_000 }, async (_id, row) => {
    const scenario = scenarios[row.id];
    if (!scenario) throw new Error(`no scenario for ${row.id}`);
    const expected = { code: status[row.code as keyof typeof status], message: row.message, answer: row.answer };
    expect(expected.code, `unknown code ${row.code}`).toBeTypeOf("number");
    // `<…>` in a message stands for a value of the call; the scenario checks what it is.
    const pattern = new RegExp(`^${row.message.split(/<[^>]+>/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".+")}$`);
    // A row naming several RPCs holds for each of them.
    for (const rpc of row.rpcs.length > 0 ? row.rpcs : [""]) {
      const outcome = await scenario(rpc);
      const message = pattern.test(outcome.message) ? row.message : outcome.message;
      expect({ rpc, ...outcome, message }).toEqual({ rpc, ...expected });
    }
  });
});

describe("IssueCertificate, as docs/protocol.md describes it", () => {
  it("ignores the CSR's subject and SAN: the certificate names exactly the spiffe_id asked for", async () => {
    const host = unique("san");
    const spiffeId = spiffe(td, "sidecar", host);
    // A CSR claiming an admin identity in its SAN and subject.
    const { csrPem } = await generateKeyAndCsr(spiffe(td, "admin", "root"));
    const { token } = await mesh.joinToken({ host, agents: ["sql-agent"] });
    const response = await issue(mesh.clientsFor(), { spiffeId, joinToken: token, csrPem });
    const leaf = new X509Certificate(response.certificateChainPem[0] ?? "");
    expect(spiffeIdsFromCertificate(leaf)).toEqual([spiffeId]);
    expect(leaf.subject).not.toContain("root");
    expect(response).toMatchObject({ spiffeId, allowedAgentNames: ["sql-agent"] });
    // The key is the CSR's: the certificate is only useful to whoever holds its private key.
    const csrKey = Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).publicKey.rawData);
    expect(leaf.publicKey.export({ type: "spki", format: "der" }).equals(csrKey)).toBe(true);
  });
});
