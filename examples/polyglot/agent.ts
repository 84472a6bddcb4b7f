/**
 * The polyglot agent in TypeScript: the same capabilities, with the same answers,
 * as examples/polyglot/agent.py and go/main.go (see examples/polyglot/README.md).
 * The cross-language tests and `npm run bench:sdk` run all three side by side.
 */
import { MeshCaller, MeshError, type MeshErrorKind, type InvocationContext, serve } from "../../sdk/ts/src/index.js";

const language = "ts";

/** The names a caller may ask echo to fail with, and the kind (so the status) it answers. */
const failures: Record<string, MeshErrorKind> = {
  INVALID_ARGUMENT: "invalidArgument",
  NOT_FOUND: "notFound",
  PERMISSION_DENIED: "denied",
  RESOURCE_EXHAUSTED: "overLimit",
};

interface EchoRequest {
  tag?: string;
  delayMs?: number;
  fail?: string;
}

interface RelayRequest {
  capability?: string;
  payload?: string;
  versionRange?: string;
  stream?: boolean;
  timeoutMs?: number;
}

interface LoadRequest {
  capability?: string;
  versionRange?: string;
  count?: number;
  ratePerSec?: number;
  payloadBytes?: number;
  timeoutMs?: number;
}

let caller: MeshCaller | undefined;
const meshCaller = () => (caller ??= new MeshCaller());

function parse<T>(payload: Buffer): T | undefined {
  try {
    return JSON.parse(payload.toString("utf8")) as T;
  } catch {
    return undefined;
  }
}

function remainingMs(context: InvocationContext): number {
  return context.invocation.deadlineMs > 0 ? context.invocation.deadlineMs - Date.now() : -1;
}

async function echo(payload: Buffer, context: InvocationContext): Promise<string> {
  const asked = parse<EchoRequest>(payload) ?? {};
  const tag = typeof asked.tag === "string" ? asked.tag : "";
  if (tag) console.log(`call ${tag} received`);
  if (asked.delayMs) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, asked.delayMs);
      context.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        console.log(`call ${tag} cancelled`);
        resolve();
      });
    });
  }
  if (asked.fail === "INTERNAL") throw new Error("a bug the caller must not see");
  const kind = asked.fail ? failures[asked.fail] : undefined;
  if (kind) throw new MeshError(kind, `asked to fail with ${asked.fail}`);
  const { invocation } = context;
  return JSON.stringify({
    language,
    capability: invocation.capability,
    version: invocation.version,
    instanceId: process.env.AGENTMESH_INSTANCE_ID ?? "",
    caller: invocation.caller,
    payload: payload.toString("utf8"),
    tag,
    remainingMs: remainingMs(context),
    pid: process.pid,
  });
}

function failed(error: unknown): Record<string, unknown> {
  const { code, details, message } = error as { code?: number; details?: string; message?: string };
  return { ok: false, code: typeof code === "number" ? code : 2, message: details ?? message ?? String(error), via: language };
}

/** Calls another capability within the caller's deadline and answers what happened as data. */
async function relay(payload: Buffer, context: InvocationContext): Promise<string> {
  const asked = parse<RelayRequest>(payload);
  if (!asked?.capability) throw new MeshError("invalidArgument", "payload must be JSON naming a capability");
  const remaining = remainingMs(context);
  const budgets = [remaining, asked.timeoutMs ?? 0].filter((value) => value > 0);
  const options = { versionRange: asked.versionRange ?? "", signal: context.signal, ...(budgets.length > 0 ? { timeoutMs: Math.min(...budgets) } : {}) };
  try {
    if (!asked.stream) {
      const reply = await meshCaller().invoke(asked.capability, asked.payload ?? "", options);
      return JSON.stringify({ ok: true, payload: reply.payload.toString("utf8"), instanceId: reply.instanceId, version: reply.version, via: language });
    }
    const chunks: string[] = [];
    for await (const chunk of meshCaller().invokeStream(asked.capability, asked.payload ?? "", options)) chunks.push(chunk.toString("utf8"));
    return JSON.stringify({ ok: true, chunks, via: language });
  } catch (error) {
    return JSON.stringify(failed(error));
  }
}

/** Sends `count` calls at `ratePerSec` (open loop) and answers each latency in µs (-1: failed). */
async function load(payload: Buffer): Promise<string> {
  const asked = parse<LoadRequest>(payload);
  if (!asked?.capability || !asked.count || !asked.ratePerSec) throw new MeshError("invalidArgument", "payload must be JSON with capability, count and ratePerSec");
  const { capability, count, ratePerSec } = asked;
  const body = "x".repeat(asked.payloadBytes ?? 0);
  const timeoutMs = Math.max(asked.timeoutMs ?? 0, 1000);
  const latenciesUs: number[] = new Array<number>(count).fill(-1);
  let failedCalls = 0;
  let firstError = "";
  const startedAt = performance.now();
  const calls: Array<Promise<void>> = [];
  for (let index = 0; index < count; index += 1) {
    const pauseMs = startedAt + (index * 1000) / ratePerSec - performance.now();
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    const sentAt = performance.now();
    calls.push(
      meshCaller()
        .invoke(capability, body, { versionRange: asked.versionRange ?? "", timeoutMs })
        .then(
          () => {
            latenciesUs[index] = Math.round((performance.now() - sentAt) * 1000);
          },
          (error: unknown) => {
            failedCalls += 1;
            firstError ||= String(error);
          },
        ),
    );
  }
  await Promise.all(calls);
  return JSON.stringify({ latenciesUs, failed: failedCalls, firstError, seconds: (performance.now() - startedAt) / 1000 });
}

const serving = serve({
  handlers: {
    [`${language}.echo`]: echo,
    "polyglot.who": echo,
    [`${language}.relay`]: relay,
    [`${language}.load`]: load,
  },
  streamHandlers: {
    [`${language}.words`]: async function* (payload) {
      for (const word of payload.toString("utf8").split(/\s+/).filter(Boolean)) yield word;
    },
  },
  onError: (error) => console.error(`polyglot ts agent: ${String(error)}`),
});
process.once("SIGTERM", () => {
  serving.close();
  caller?.close();
  console.log("polyglot ts agent stopped");
  process.exit(0);
});
