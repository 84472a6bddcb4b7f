// 10,000 random and mutated Register requests (and 1,000 Connect Hellos) over mTLS: bit flips in signed
// payloads and signatures, random envelope fields, signed garbage payloads, huge
// strings within the size limit, invalid UTF-8, replays, raw garbage. Every answer
// must be a proper gRPC status from the expected set with a short fixed message,
// nothing may hang, and afterwards the server is healthy and registers as before.
// The seed is printed on failure; FUZZ_SEED=<n> replays a run.
import { type Client, Metadata, type ServiceError, makeGenericClientConstructor, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConnectResponse, Hello } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest, type RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { AgentManifest, SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type LogSink, logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import {
  type MintedIdentity,
  type SecureMesh,
  call,
  channelOptions,
  connectMethod,
  mintIdentity,
  mtlsCredentials,
  registerMethod,
  registerPayloadType,
  signedRegister,
  signerFor,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

const totalCases = 10_000;
const concurrency = 48;
const connections = 4;
const deadlineMs = 15_000;
const maxMessageBytes = 1024 * 1024;
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);

/** mulberry32: small, fast, reproducible. */
function prng(start: number): () => number {
  let state = start >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = prng(seed);
const integer = (below: number) => Math.floor(random() * below);
const pick = <T>(items: readonly T[]): T => items[integer(items.length)] as T;
const bytes = (length: number) => Buffer.from(Array.from({ length }, () => integer(256)));

function flipBits(input: Uint8Array, count = 1 + integer(3)): Buffer {
  const output = Buffer.from(input);
  if (output.length === 0) return output;
  for (let index = 0; index < count; index += 1) {
    const position = integer(output.length);
    output[position] = (output[position] ?? 0) ^ (1 << integer(8));
  }
  return output;
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-._/:@ ?#%\u00e9\u4e2d\u{1f600}\u0000\n";
function text(maxLength = 40): string {
  const length = integer(maxLength + 1);
  let out = "";
  for (let index = 0; index < length; index += 1) out += alphabet[integer(alphabet.length)];
  return out;
}

/** Up to most of the size limit, so huge strings still reach the handlers. */
const hugeText = () => "x".repeat(1 + integer(maxMessageBytes / 2));

// Minimal protobuf writing, for what ts-proto cannot produce: invalid UTF-8 in string fields.
function varint(value: number): Buffer {
  const out: number[] = [];
  let remaining = value;
  while (remaining >= 0x80) {
    out.push((remaining & 0x7f) | 0x80);
    remaining = Math.floor(remaining / 128);
  }
  out.push(remaining);
  return Buffer.from(out);
}
const lengthDelimited = (field: number, content: Uint8Array) => Buffer.concat([varint((field << 3) | 2), varint(content.length), content]);
const invalidUtf8 = () => pick([Buffer.from([0xff, 0xfe]), Buffer.from([0xc3, 0x28]), Buffer.from([0xe2, 0x82]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.concat([Buffer.from("sql-"), Buffer.from([0x80])])]);

function randomManifest(): AgentManifest {
  const base = manifest({ name: pick(["sql-agent", "fuzz-agent", text(), "a".repeat(64), ""]) });
  switch (integer(8)) {
    case 0:
      return { ...base, version: pick(["1.0.0", text(), "999999999999.0.0", "1.0.0-+"]) };
    case 1:
      return { ...base, labels: Object.fromEntries(Array.from({ length: integer(40) }, () => [text(20), text(80)])) };
    case 2:
      return { ...base, capabilities: Array.from({ length: integer(20) }, () => ({ name: text(30), version: text(10), attributes: { [text(5)]: text(5) } })) };
    case 3:
      return { ...base, agentCardJson: pick([hugeText(), "{", text(200), "null"]) };
    case 4:
      return { ...base, labels: { [text(5)]: hugeText() } };
    case 5:
      return { ...base, healthPolicy: { heartbeatIntervalMs: pick([0, -1, 1, 2 ** 31 - 1, 2 ** 32 - 1]) >>> 0, degradedErrorRate: pick([Number.NaN, -1, 2, 0.5, Number.POSITIVE_INFINITY]), readinessTimeoutMs: integer(2 ** 31), hungRestartAfterMs: integer(2 ** 32) } };
    default:
      return base;
  }
}

interface FuzzCase {
  kind: string;
  /** May not even parse as a RegisterRequest: that is the caller's fault too (INVALID_ARGUMENT, never INTERNAL). */
  request: Buffer;
}

let mesh: SecureMesh;
let sidecar: MintedIdentity;
let sink: LogSink;
const accepted: SignedEnvelope[] = [];

function signed(payload: Uint8Array, overrides: Partial<{ method: string; payloadType: string; audience: string }> = {}): SignedEnvelope {
  return signerFor(sidecar).sign(payload, overrides.method ?? registerMethod, overrides.payloadType ?? registerPayloadType, overrides.audience ?? `spiffe://${mesh.trustDomain}/server`);
}

const outer = (envelope: SignedEnvelope | undefined, extra: Partial<RegisterRequest> = {}) =>
  Buffer.from(RegisterRequest.encode(RegisterRequest.fromPartial({ ...extra, envelope })).finish());

const validEnvelope = () => signedRegister(signerFor(sidecar), mesh.trustDomain, randomManifest()).envelope;

const generators: Array<[string, () => FuzzCase]> = [
  ["flip-payload", () => { const envelope = validEnvelope(); return { kind: "flip-payload", request: outer({ ...envelope, payload: flipBits(envelope.payload) }) }; }],
  ["flip-signature", () => { const envelope = validEnvelope(); return { kind: "flip-signature", request: outer({ ...envelope, signature: flipBits(envelope.signature) }) }; }],
  ["flip-request-bytes", () => ({ kind: "flip-request-bytes", request: flipBits(outer(validEnvelope()), 1 + integer(8)) })],
  ["truncated-request", () => { const request = outer(validEnvelope()); return { kind: "truncated-request", request: request.subarray(0, integer(request.length)) }; }],
  [
    "random-envelope-fields",
    () => {
      const envelope = validEnvelope();
      const mutations: Array<() => Partial<SignedEnvelope>> = [
        () => ({ signer: pick([text(), spiffe(mesh.trustDomain, "admin", "operator"), spiffe("other.example", "sidecar", "fuzz"), ""]) }),
        () => ({ audience: pick([text(), "", `spiffe://${mesh.trustDomain}/server/x`]) }),
        () => ({ method: pick([text(), "", "/agentmesh.v1.OrchestratorService/Connect"]) }),
        () => ({ payloadType: pick([text(), "", "agentmesh.v1.Hello"]) }),
        () => ({ alg: pick(["", "none", "RS256", "es256", "Ed25519", text(8)]) }),
        () => ({ nonce: bytes(pick([0, 1, 15, 17, 32, 1024])) }),
        () => ({ issuedAtMs: pick([0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, Date.now() - 31_000, Date.now() + 31_000, integer(2 ** 40)]) }),
        () => ({ signature: bytes(pick([0, 1, 63, 64, 65, 72, 512])) }),
        () => ({ signerChain: Array.from({ length: 1 + integer(3) }, () => bytes(integer(600))) }),
        () => ({ payload: bytes(integer(300)) }),
      ];
      let mutated = envelope;
      for (let count = 1 + integer(3); count > 0; count -= 1) mutated = { ...mutated, ...pick(mutations)() };
      return { kind: "random-envelope-fields", request: outer(mutated) };
    },
  ],
  [
    "signed-garbage-payload",
    () => {
      const payloads: Array<() => Uint8Array> = [
        () => bytes(integer(2000)),
        () => flipBits(RegisterRequest.encode(RegisterRequest.fromPartial({ manifest: randomManifest() })).finish(), 1 + integer(6)),
        () => RegisterRequest.encode(RegisterRequest.fromPartial({ manifest: randomManifest() })).finish().subarray(0, 1 + integer(40)),
        () => lengthDelimited(1, Buffer.concat([lengthDelimited(1, invalidUtf8()), lengthDelimited(2, Buffer.from("1.0.0"))])),
        () => Buffer.concat([lengthDelimited(1, AgentManifest.encode(manifest()).finish()), lengthDelimited(4, invalidUtf8()), lengthDelimited(2, invalidUtf8())]),
        // A signed request nested in the payload: never unwrapped twice.
        () => outer(validEnvelope()),
        () => RegisterRequest.encode(RegisterRequest.fromPartial({ manifest: randomManifest(), instanceId: pick([text(), "x".repeat(65), "../etc", ""]), endpoint: pick([text(), "host:99999", ""]), host: text(300) })).finish(),
      ];
      return { kind: "signed-garbage-payload", request: outer(signed(pick(payloads)())) };
    },
  ],
  ["valid-random-manifest", () => ({ kind: "valid-random-manifest", request: outer(validEnvelope()) })],
  ["unsigned", () => ({ kind: "unsigned", request: outer(undefined, { manifest: randomManifest(), host: text() }) })],
  ["bad-utf8-outer", () => ({ kind: "bad-utf8-outer", request: Buffer.concat([outer(validEnvelope()), lengthDelimited(4, invalidUtf8())]) })],
  ["replay", () => ({ kind: "replay", request: outer(accepted.length > 0 ? pick(accepted) : validEnvelope()) })],
  ["raw-garbage", () => ({ kind: "raw-garbage", request: bytes(integer(500)) })],
];

/** What may answer each case: never INTERNAL from our handlers, never an unexpected code. */
const expectedCodes = new Set([status.OK, status.INVALID_ARGUMENT, status.UNAUTHENTICATED, status.PERMISSION_DENIED, status.RESOURCE_EXHAUSTED]);

type RawRegister = (request: Buffer, options: { deadline: Date }, callback: (error: ServiceError | null, response?: Buffer) => void) => void;
const RawRegistryClient = makeGenericClientConstructor(
  {
    register: {
      path: registerMethod,
      requestStream: false,
      responseStream: false,
      requestSerialize: (value: Buffer) => value,
      requestDeserialize: (value: Buffer) => value,
      responseSerialize: (value: Buffer) => value,
      responseDeserialize: (value: Buffer) => value,
    },
  },
  "RawRegistry",
);

beforeAll(async () => {
  sink = logSink("warn");
  mesh = await startSecureMesh(
    { maxMessageBytes, identityRatePerSecond: 1_000_000, identityBurst: 1_000_000, identityMaxInFlight: 10_000, maxInstancesPerIdentity: 1_000_000 },
    sink.log,
  );
  sidecar = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "sidecar", "fuzz-host"), { allowedAgentNames: ["*"] });
});

afterAll(async () => {
  await mesh.close();
});

describe("fuzzing signed requests over mTLS", () => {
  it(`answers ${totalCases} random and mutated requests with proper statuses and stays healthy`, { timeout: 120_000 }, async () => {
    const rawClients = Array.from({ length: connections }, () => new RawRegistryClient(mesh.server.address, mtlsCredentials(mesh.trustBundle, sidecar), channelOptions) as unknown as Client & { register: RawRegister });
    const counts = new Map<string, number>();
    const problems: string[] = [];
    let next = 0;
    const startedAt = Date.now();

    const runOne = async (index: number, client: Client & { register: RawRegister }) => {
      const fuzzCase = pick(generators)[1]();
      const outcome = await new Promise<{ code: number; details: string; response?: Buffer }>((resolve) =>
        client.register(fuzzCase.request, { deadline: new Date(Date.now() + deadlineMs) }, (error, response) =>
          resolve(error ? { code: error.code, details: error.details } : { code: status.OK, details: "", response }),
        ),
      );
      const key = `${fuzzCase.kind} ${status[outcome.code]}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const fine = expectedCodes.has(outcome.code);
      // Messages are short texts: no stack traces, paths or key material (validation
      // may quote a bounded piece of the offending input).
      const leaky = outcome.details.length > 300 || /\n\s+at |node_modules|-----BEGIN|Error:|\.ts:\d/.test(outcome.details);
      if (!fine || leaky) problems.push(`case ${index} ${fuzzCase.kind}: ${status[outcome.code]} ${JSON.stringify(outcome.details)} request=${fuzzCase.request.subarray(0, 200).toString("hex")}`);
      if (outcome.code === status.OK && fuzzCase.kind === "valid-random-manifest" && accepted.length < 100) {
        accepted.push(RegisterRequest.decode(fuzzCase.request).envelope as SignedEnvelope);
      }
    };

    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        const client = rawClients[worker % connections] as Client & { register: RawRegister };
        for (let index = next++; index < totalCases; index = next++) await runOne(index, client);
      }),
    );
    const elapsedMs = Date.now() - startedAt;
    for (const client of rawClients) client.close();

    const summary = [...counts.entries()].sort().map(([key, count]) => `${key}: ${count}`).join("\n");
    expect(problems.slice(0, 20), `seed ${seed}\n${summary}`).toEqual([]);
    expect([...counts.values()].reduce((sum, count) => sum + count, 0)).toBe(totalCases);
    // The fuzzer reached every layer: refusals by signature, by validation, and acceptances.
    expect(counts.get("flip-payload UNAUTHENTICATED")).toBeGreaterThan(0);
    expect([...counts.keys()].some((key) => key.endsWith("INVALID_ARGUMENT"))).toBe(true);
    expect([...counts.keys()].some((key) => key.endsWith(" OK"))).toBe(true);
    // Our handlers never failed unexpectedly (that would be INTERNAL and an error log).
    expect(sink.lines.filter((line) => line.msg === "unexpected failure" || line.level === 50)).toEqual([]);
    console.info(`fuzz seed ${seed}: ${totalCases} cases in ${elapsedMs} ms\n${summary}`);

    // Still healthy, still serving a valid Register.
    const health = await call<{ status: string }>((_metadata, options, callback) => mesh.adminClients.health.check({ service: "" }, options, callback));
    expect(health.status).toBe("SERVING");
    const agentClients = mesh.clientsFor(sidecar);
    const registered = await call<RegisterResponse>((metadata, options, callback) =>
      agentClients.registry.register(signedRegister(signerFor(sidecar), mesh.trustDomain, manifest({ name: "after-fuzz" })).request, metadata, options, callback),
    );
    expect(registered.instance?.manifest?.name).toBe("after-fuzz");
  });

  it("answers 1,000 mutated Connect Hellos with a welcome or a proper stream status", { timeout: 60_000 }, async () => {
    const clients = mesh.clientsFor(sidecar);
    const outcomes = new Map<string, number>();
    const problems: string[] = [];
    const audience = `spiffe://${mesh.trustDomain}/server`;
    const helloCase = (): Hello => {
      const hello = Hello.fromPartial({ sidecarId: pick(["fuzz-host", text(), "x".repeat(300), ""]), host: text(), instanceIds: Array.from({ length: integer(4) }, () => text(70)) });
      const envelope = signerFor(sidecar).sign(Hello.encode(hello).finish(), connectMethod, "agentmesh.v1.Hello", audience);
      switch (integer(6)) {
        case 0:
          return { ...hello, envelope: { ...envelope, payload: flipBits(envelope.payload) } };
        case 1:
          return { ...hello, envelope: { ...envelope, signature: flipBits(envelope.signature) } };
        case 2:
          return { ...hello, envelope: signerFor(sidecar).sign(bytes(integer(300)), connectMethod, "agentmesh.v1.Hello", audience) };
        case 3:
          return { ...hello, envelope: { ...envelope, nonce: bytes(integer(20)), alg: pick(["ES256", "", text(5)]) } };
        case 4:
          return { ...hello, envelope: undefined };
        default:
          return { ...hello, envelope };
      }
    };
    const runOne = (index: number) =>
      new Promise<void>((resolve) => {
        const hello = helloCase();
        const stream = clients.orchestrator.connect(new Metadata(), { deadline: new Date(Date.now() + deadlineMs) });
        let settled = false;
        const settle = (key: string, problem?: string) => {
          if (settled) return;
          settled = true;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          if (problem) problems.push(`hello ${index}: ${problem}`);
          stream.cancel();
          resolve();
        };
        stream.on("data", (response: ConnectResponse) => {
          if (response.msg?.$case === "welcome") settle("welcome");
        });
        stream.on("error", (error: ServiceError) => {
          const fine = [status.UNAUTHENTICATED, status.INVALID_ARGUMENT, status.RESOURCE_EXHAUSTED, status.PERMISSION_DENIED].includes(error.code);
          settle(status[error.code] ?? String(error.code), fine ? undefined : `${status[error.code]} ${JSON.stringify(error.details)}`);
        });
        stream.write({ msg: { $case: "hello", value: hello } });
      });
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let index = next++; index < 1000; index = next++) await runOne(index);
    }));
    expect(problems.slice(0, 20), `seed ${seed} ${JSON.stringify([...outcomes])}`).toEqual([]);
    expect(outcomes.get("UNAUTHENTICATED")).toBeGreaterThan(0);
    expect(outcomes.get("welcome")).toBeGreaterThan(0);
    expect(sink.lines.filter((line) => line.level === 50)).toEqual([]);
    await expect.poll(() => mesh.server.hub.openStreams).toBe(0);
    const health = await call<{ status: string }>((_metadata, options, callback) => mesh.adminClients.health.check({ service: "" }, options, callback));
    expect(health.status).toBe("SERVING");
  });
});
