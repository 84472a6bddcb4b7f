// Agents in three languages in one mTLS mesh: the polyglot agent of
// examples/polyglot in TypeScript, Python and Go, each run by its own sidecar
// (so every call between two languages crosses a sidecar-to-sidecar tunnel),
// calling each other through their SDKs' callers. Each agent's `<lang>.relay`
// makes the call with its own SDK and answers the outcome as data (reply, or
// the status code its typed error carries), so the test sees what a Python,
// Go or TypeScript caller sees, for every caller × callee pair.
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MeshCluster, type SidecarNode, waitFor, waitForLogAfter } from "../helpers/mesh-cluster.js";
import { repoRoot, run, tempDir } from "../helpers/processes.js";

const languages = ["ts", "py", "go"] as const;
type Language = (typeof languages)[number];
/** The version each language's agent serves `polyglot.who` at, so a range picks a language. */
const whoVersion: Record<Language, string> = { ts: "1.4.0", py: "2.1.0", go: "3.0.0" };

// Under an "agents" folder: MeshCluster reaps leftover agent processes by that path.
const binDir = join(tempDir("agentmesh-polyglot-"), "agents");
const goAgentPath = join(binDir, "polyglot-go");
const python = join(repoRoot, ".venv", "bin", "python");

function command(language: Language): string {
  if (language === "ts") return `{command: ${JSON.stringify(process.execPath)}, args: [${JSON.stringify(join(repoRoot, "dist", "examples", "polyglot", "agent.js"))}]}`;
  if (language === "py") return `{command: ${JSON.stringify(python)}, args: [${JSON.stringify(join(repoRoot, "examples", "polyglot", "agent.py"))}]}`;
  return `{command: ${JSON.stringify(goAgentPath)}}`;
}

function agentYaml(language: Language): string {
  return [
    "kind: Deployment",
    `name: poly-${language}`,
    "version: 1.0.0",
    "replicas: 1",
    `capabilities: [${language}.echo@1.0.0, ${language}.words@1.0.0, ${language}.relay@1.0.0, ${language}.load@1.0.0, polyglot.who@${whoVersion[language]}]`,
    `process: ${command(language)}`,
    "health: {heartbeatInterval: 200ms, readinessTimeout: 10s}",
    "restartPolicy: {initialBackoff: 50ms, maxBackoff: 200ms}",
    "",
  ].join("\n");
}

function execute(file: string, args: string[], cwd: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { cwd, timeout: timeoutMs }, (error, _stdout, stderr) => (error ? reject(new Error(`${file} ${args.join(" ")} failed: ${stderr}`)) : resolve())),
  );
}

interface RelayOutcome {
  ok: boolean;
  via: string;
  payload?: string;
  chunks?: string[];
  instanceId?: string;
  version?: string;
  code?: number;
  message?: string;
}

interface EchoAnswer {
  language: string;
  capability: string;
  version: string;
  instanceId: string;
  caller: string;
  payload: string;
  tag: string;
  remainingMs: number;
  pid: number;
}

let cluster: MeshCluster;
const sidecars = {} as Record<Language, SidecarNode>;
const instanceIds = {} as Record<Language, string>;
/** The test's own calls enter the mesh at the TypeScript agent's sidecar. */
const entry = () => sidecars.ts;

async function relay(via: Language, request: Record<string, unknown>, timeoutMs = 8000): Promise<RelayOutcome> {
  const reply = await entry().caller.invoke(`${via}.relay`, JSON.stringify(request), { timeoutMs });
  return JSON.parse(reply.payload.toString("utf8")) as RelayOutcome;
}

const pairs = languages.flatMap((via) => languages.map((target) => ({ via, target })));

beforeAll(async () => {
  mkdirSync(binDir, { recursive: true });
  // The Go agent is its own module (examples/polyglot/go) on the SDK through a replace: built once here.
  await Promise.all([
    execute("go", ["build", "-o", goAgentPath, "."], join(repoRoot, "examples", "polyglot", "go"), 240_000),
    // npm test runs vitest before test:python builds .venv: make sure it is there (quick when current).
    execute("bash", [join(repoRoot, "scripts", "python-env.sh")], repoRoot, 240_000),
  ]);
  cluster = await MeshCluster.start();
  const started = await Promise.all(languages.map((language) => cluster.startSidecar({ host: `host-${language}`, manifests: [cluster.writeFile(`${language}.yaml`, agentYaml(language))] })));
  for (const [index, language] of languages.entries()) sidecars[language] = started[index] as SidecarNode;
  for (const language of languages) {
    const [instance] = await cluster.waitForReady(`poly-${language}`, 1);
    instanceIds[language] = instance?.instanceId ?? "";
  }
  // Every sidecar must route to every language before the calls start.
  await Promise.all(
    languages.map((language) =>
      waitFor(`every language in host-${language}'s routing cache`, async () => ((await sidecars[language].caller.discover("polyglot.who")).length === 3 ? true : undefined)),
    ),
  );
}, 300_000);

afterAll(async () => {
  await cluster?.close();
});

describe("TypeScript, Python and Go agents calling each other through mTLS sidecars", () => {
  it("every language calls every language: unary and streaming, the callee sees the calling sidecar and the deadline", async () => {
    const outcomes = await Promise.all(
      pairs.map(async ({ via, target }) => ({
        via,
        target,
        unary: await relay(via, { capability: `${target}.echo`, payload: `héllo from ${via}` }, 4000),
        stream: await relay(via, { capability: `${target}.words`, payload: "one two  three", stream: true }),
      })),
    );
    for (const { via, target, unary, stream } of outcomes) {
      expect(unary, `${via} → ${target}`).toMatchObject({ ok: true, via, instanceId: instanceIds[target], version: "1.0.0" });
      const answer = JSON.parse(unary.payload ?? "") as EchoAnswer;
      expect(answer, `${via} → ${target}`).toMatchObject({ language: target, capability: `${target}.echo`, payload: `héllo from ${via}`, instanceId: instanceIds[target] });
      // The sidecar that verified the caller is the relaying agent's own.
      expect(answer.caller, `${via} → ${target}`).toBe(sidecars[via].spiffeId);
      // The relay passed on the test's 4 s deadline (its SDK's default is 30 s), less what two hops used.
      expect(answer.remainingMs, `${via} → ${target}`).toBeGreaterThan(0);
      expect(answer.remainingMs, `${via} → ${target}`).toBeLessThanOrEqual(4000);
      expect(stream, `${via} → ${target} (stream)`).toEqual({ ok: true, via, chunks: ["one", "two", "three"] });
    }
  }, 30_000);

  it("a version range picks the language whose agent serves that version, from every caller", async () => {
    const ranges: Array<[string, Language]> = [["~1.4", "ts"], ["^2.0.0", "py"], [">=3 <4", "go"], ["", "go"]];
    for (const via of languages) {
      for (const [versionRange, language] of ranges) {
        const outcome = await relay(via, { capability: "polyglot.who", versionRange });
        expect(outcome, `${via} asks ${versionRange || "any version"}`).toMatchObject({ ok: true, version: whoVersion[language], instanceId: instanceIds[language] });
        expect((JSON.parse(outcome.payload ?? "") as EchoAnswer).language).toBe(language);
      }
    }
  }, 30_000);

  it("errors keep their gRPC status across languages, and internals stay inside the agent", async () => {
    const cases: Array<{ fail: string; code: number; message: string }> = [
      { fail: "INVALID_ARGUMENT", code: status.INVALID_ARGUMENT, message: "asked to fail with INVALID_ARGUMENT" },
      { fail: "NOT_FOUND", code: status.NOT_FOUND, message: "asked to fail with NOT_FOUND" },
      { fail: "PERMISSION_DENIED", code: status.PERMISSION_DENIED, message: "asked to fail with PERMISSION_DENIED" },
      { fail: "RESOURCE_EXHAUSTED", code: status.RESOURCE_EXHAUSTED, message: "asked to fail with RESOURCE_EXHAUSTED" },
      { fail: "INTERNAL", code: status.INTERNAL, message: "agent failed" },
    ];
    const checks = pairs.flatMap(({ via, target }) =>
      cases.map(async ({ fail, code, message }) => {
        const outcome = await relay(via, { capability: `${target}.echo`, payload: JSON.stringify({ fail }) });
        expect(outcome, `${target} fails ${fail}, ${via} calls`).toEqual({ ok: false, via, code, message });
      }),
    );
    await Promise.all(checks);
    for (const via of languages) {
      // Nothing serves it, or no version satisfies the range: UNAVAILABLE in every SDK.
      expect(await relay(via, { capability: "no.such.capability" }), via).toMatchObject({ ok: false, code: status.UNAVAILABLE });
      expect(await relay(via, { capability: "polyglot.who", versionRange: "^9" }), via).toMatchObject({ ok: false, code: status.UNAVAILABLE });
      // The relay's own refusal reaches the TypeScript caller as the status it chose.
      const refused = await entry().caller.invoke(`${via}.relay`, "not json", { timeoutMs: 5000 }).catch((error: { code: number; details: string }) => error);
      expect(refused, via).toMatchObject({ code: status.INVALID_ARGUMENT, details: "payload must be JSON naming a capability" });
      // A streaming callee's failure ends the stream with its status.
      expect(await relay(via, { capability: "no.such.stream", stream: true }), via).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    }
  }, 30_000);

  it("a deadline set in one language ends the call in another: DEADLINE_EXCEEDED for the caller, the callee's handler cancelled", async () => {
    const marks = Object.fromEntries(languages.map((language) => [language, sidecars[language].process.lines.length])) as Record<Language, number>;
    const outcomes = await Promise.all(
      pairs.map(async ({ via, target }) => ({
        via,
        target,
        outcome: await relay(via, { capability: `${target}.echo`, payload: JSON.stringify({ tag: `late-${via}-${target}`, delayMs: 5000 }), timeoutMs: 300 }),
      })),
    );
    for (const { via, target, outcome } of outcomes) {
      expect(outcome, `${via} → ${target}`).toMatchObject({ ok: false, via, code: status.DEADLINE_EXCEEDED });
      await waitForLogAfter(sidecars[target].process, marks[target], (line) => line.msg === `call late-${via}-${target} cancelled`, 5000);
    }
  }, 30_000);

  it("kill -9 of the Python agent: its sidecar restarts it and calls from TypeScript and Go resume", async () => {
    const pid = sidecars.py.agentStates(instanceIds.py).findLast((line) => line.state === "ready")?.pid;
    expect(pid).toBeTypeOf("number");
    const mark = sidecars.py.process.lines.length;
    process.kill(pid as number, "SIGKILL");
    const again = await sidecars.py.waitForAgentState(instanceIds.py, "ready", mark, 15_000);
    expect(again.pid).not.toBe(pid);
    for (const via of ["ts", "go"] as const) {
      const outcome = await waitFor(`${via} → py after the restart`, async () => {
        const attempt = await relay(via, { capability: "py.echo", payload: "back" });
        return attempt.ok ? attempt : undefined;
      });
      expect(JSON.parse(outcome.payload ?? "") as EchoAnswer).toMatchObject({ language: "py", pid: again.pid, instanceId: instanceIds.py });
    }
  }, 30_000);

  it("ctl drain then ctl stop of each language's agent: calls in flight from another language finish, then the agent exits 0", async () => {
    const callers: Record<Language, Language> = { ts: "py", py: "go", go: "ts" };
    const marks = Object.fromEntries(languages.map((language) => [language, sidecars[language].process.lines.length])) as Record<Language, number>;
    const inFlight = languages.map((target) => relay(callers[target], { capability: `${target}.echo`, payload: JSON.stringify({ tag: `drain-${target}`, delayMs: 1200 }) }, 10_000));
    for (const target of languages) await waitForLogAfter(sidecars[target].process, marks[target], (line) => line.msg === `call drain-${target} received`);

    const drained = await Promise.all(languages.map((target) => cluster.ctl("drain", instanceIds[target], "--timeout", "20s")));
    for (const [index, target] of languages.entries()) {
      expect({ code: drained[index]?.code, stderr: drained[index]?.stderr }, target).toEqual({ code: 0, stderr: "" });
      expect(drained[index]?.stdout, target).toContain(`${instanceIds[target]} drained`);
    }
    const finished = await Promise.all(inFlight);
    for (const [index, target] of languages.entries()) {
      expect(finished[index], target).toMatchObject({ ok: true, via: callers[target], instanceId: instanceIds[target] });
      expect((JSON.parse(finished[index]?.payload ?? "") as EchoAnswer).tag).toBe(`drain-${target}`);
    }
    // Out of routing: a new call finds no instance (the entry sidecar's view follows the Watch).
    for (const target of languages) {
      await waitFor(`${target} out of host-ts's routing`, async () => ((await entry().caller.discover(`${target}.echo`)).length === 0 ? true : undefined));
      const refused = await entry().caller.invoke(`${target}.echo`, "", { timeoutMs: 2000 }).catch((error: { code: number }) => error);
      expect((refused as { code: number }).code, target).toBe(status.UNAVAILABLE);
    }

    const pids = Object.fromEntries(languages.map((target) => [target, sidecars[target].agentStates(instanceIds[target]).findLast((line) => line.pid !== undefined)?.pid])) as Record<Language, number>;
    const stopped = await Promise.all(languages.map((target) => cluster.ctl("stop", instanceIds[target])));
    for (const [index, target] of languages.entries()) {
      expect({ code: stopped[index]?.code, stderr: stopped[index]?.stderr }, target).toEqual({ code: 0, stderr: "" });
      const exit = await waitForLogAfter(
        sidecars[target].process,
        marks[target],
        (line) => line.msg === "agent process state changed" && line.instanceId === instanceIds[target] && line.pid === pids[target] && line.exitCode !== undefined,
      );
      // SIGTERM after the drain: each SDK's agent leaves cleanly.
      expect(exit, target).toMatchObject({ exitCode: 0, signal: null });
      await waitForLogAfter(sidecars[target].process, marks[target], (line) => line.msg === `polyglot ${target} agent stopped`);
    }
    const states = await Promise.all(languages.map(async (target) => (await cluster.instances(`poly-${target}`)).map((instance) => instance.state)));
    for (const [index, target] of languages.entries()) expect(states[index], target).not.toContain(HealthState.HEALTH_STATE_READY);
  }, 60_000); // each `ctl` is a process of its own: seconds each on a loaded machine
});
