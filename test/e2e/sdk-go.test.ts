// The Go SDK (sdk/go) against real processes: `go build` compiles the example
// agents once, a sidecar runs the Go agent, and the TypeScript SDK calls it (and
// it calls a TypeScript agent) through the mesh. Written in vitest rather than
// `go test` so it reuses MeshCluster (server, admin PKI, join tokens, sidecars,
// teardown of every child) instead of re-implementing it in Go; the Go unit tests
// (`go test ./...` in sdk/go) cover the SDK's own logic.
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { type ManagedProcess, repoRoot, run, tempDir } from "../helpers/processes.js";

const goModuleDir = join(repoRoot, "sdk", "go");
// Under an "agents" folder: MeshCluster reaps leftover agent processes by that path.
const binDir = join(tempDir("agentmesh-go-"), "agents");
const meshAgentPath = join(binDir, "mesh-agent");
const directInvokePath = join(binDir, "direct-invoke");

let cluster: MeshCluster | undefined;

beforeAll(async () => {
  mkdirSync(binDir, { recursive: true });
  await new Promise<void>((resolve, reject) =>
    execFile("go", ["build", "-o", binDir, "./examples/mesh-agent", "./examples/direct-invoke"], { cwd: goModuleDir, timeout: 240_000 }, (error, _stdout, stderr) =>
      error ? reject(new Error(`go build failed: ${stderr}`)) : resolve(),
    ),
  );
}, 300_000);

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

function goAgentYaml(options: { name?: string; version?: string } = {}): string {
  const version = options.version ?? "1.0.0";
  return [
    "kind: Deployment",
    `name: ${options.name ?? "go-agent"}`,
    `version: ${version}`,
    "replicas: 1",
    `capabilities: [go.echo@${version}, go.words@${version}, go.relay@${version}]`,
    `process: {command: ${JSON.stringify(meshAgentPath)}, env: {GO_AGENT_VERSION: "${version}"}}`,
    "health: {heartbeatInterval: 200ms, readinessTimeout: 5s}",
    "restartPolicy: {initialBackoff: 50ms, maxBackoff: 200ms}",
    "",
  ].join("\n");
}

function stdoutLines(managed: ManagedProcess, pattern: RegExp): string[] {
  return managed.lines.filter((line) => line.stream === "stdout" && pattern.test(String(line.msg))).map((line) => String(line.msg));
}

describe("Go SDK agent under a real sidecar", () => {
  it("becomes READY, answers unary and streaming calls from a TS caller, and calls a TS agent through the mesh", async () => {
    cluster = await MeshCluster.start();
    const goSidecar = await cluster.startSidecar({ host: "host-go", manifests: [cluster.writeFile("go.yaml", goAgentYaml())] });
    const tsSidecar = await cluster.startSidecar({ host: "host-ts", manifests: [cluster.writeFile("echo.yaml", echoDeploymentYaml({ name: "echo" }))] });
    const [goInstance] = await cluster.waitForReady("go-agent", 1);
    await cluster.waitForReady("echo", 1);
    await waitFor("go.echo in host-ts's routing cache", async () => ((await tsSidecar.caller.discover("go.echo")).length === 1 ? true : undefined));
    await waitFor("test.echo in host-go's routing cache", async () => ((await goSidecar.caller.discover("test.echo")).length === 1 ? true : undefined));

    const echoed = await tsSidecar.caller.invoke("go.echo", "héllo", { versionRange: "^1.0.0", timeoutMs: 5000 });
    const answer = JSON.parse(echoed.payload.toString()) as Record<string, unknown>;
    expect(answer).toMatchObject({ language: "go", instanceId: goInstance?.instanceId, payload: "héllo", version: "1.0.0" });
    expect(answer.caller).toBe(tsSidecar.spiffeId);
    expect(echoed.instanceId).toBe(goInstance?.instanceId);

    const chunks: string[] = [];
    for await (const chunk of tsSidecar.caller.invokeStream("go.words", "one two three", { timeoutMs: 5000 })) chunks.push(chunk.toString());
    expect(chunks).toEqual(["one", "two", "three"]);

    // The Go agent's Caller: unary and streaming through its own sidecar, to the TS agent and back to itself.
    const relayed = await tsSidecar.caller.invoke("go.relay", JSON.stringify({ capability: "test.echo", payload: JSON.stringify({ tag: "from-go" }) }), { timeoutMs: 5000 });
    expect(JSON.parse(relayed.payload.toString())).toMatchObject({ tag: "from-go" });
    const streamed = await tsSidecar.caller.invoke("go.relay", JSON.stringify({ capability: "go.words", payload: "a b", stream: true }), { timeoutMs: 5000 });
    expect(streamed.payload.toString()).toBe("a|b");

    // Errors keep their status across the hops: the Go caller's typed error for an unknown capability
    // (reported by the relay as FAILED_PRECONDITION), a range nothing satisfies, the agent's own refusal.
    const missing = await tsSidecar.caller.invoke("go.relay", JSON.stringify({ capability: "no.such" }), { timeoutMs: 5000 }).catch((error: { code: number }) => error);
    expect(missing).toMatchObject({ code: status.FAILED_PRECONDITION, details: expect.stringMatching(/^relay to no\.such: unavailable: /) });
    const badRange = await tsSidecar.caller.invoke("go.echo", "x", { versionRange: "^2.0.0", timeoutMs: 5000 }).catch((error: { code: number }) => error);
    expect((badRange as { code: number }).code).toBe(status.UNAVAILABLE);
    const refused = await tsSidecar.caller.invoke("go.relay", "not json", { timeoutMs: 5000 }).catch((error: { code: number; details: string }) => error);
    expect(refused).toMatchObject({ code: status.INVALID_ARGUMENT, details: "payload must be JSON naming a capability" });

    // Start → READY as the sidecar saw it (spawn to Attach welcome), for the report; not asserted (speed lives in bench/).
    const states = goSidecar.agentStates(goInstance?.instanceId);
    const spawned = goSidecar.process.lines.find((line) => line.msg === "agent process state changed" && line.state === "starting");
    const ready = goSidecar.process.lines.find((line) => line.msg === "agent process state changed" && line.state === "ready");
    expect(states.map((line) => line.state)).toContain("ready");
    console.log(`go agent start → READY: ${Date.parse(String(ready?.time)) - Date.parse(String(spawned?.time))} ms (sidecar log timestamps)`);
  }, 120_000);

  it("SIGTERM to the Go agent finishes its calls in flight, then it exits 0", async () => {
    cluster = await MeshCluster.start();
    const entry = await cluster.startSidecar({ host: "host-a" });
    const serving = await cluster.startSidecar({ host: "host-go", manifests: [cluster.writeFile("go.yaml", goAgentYaml())] });
    const [instance] = await cluster.waitForReady("go-agent", 1);
    await waitFor("go.echo in host-a's routing cache", async () => ((await entry.caller.discover("go.echo")).length === 1 ? true : undefined));
    const pid = serving.agentStates(instance?.instanceId).find((line) => line.state === "ready")?.pid;
    expect(pid).toBeTypeOf("number");

    const tags = ["slow-1", "slow-2", "slow-3"];
    const calls = tags.map((tag) => entry.caller.invoke("go.echo", JSON.stringify({ delayMs: 1500, tag }), { timeoutMs: 10_000 }));
    for (const tag of tags) await serving.process.waitForLog((line) => line.msg === `call ${tag} received`);
    const stateLinesBefore = serving.process.lines.length;
    process.kill(pid as number, "SIGTERM");

    const results = await Promise.all(calls);
    expect(results.map((result) => (JSON.parse(result.payload.toString()) as { tag: string }).tag)).toEqual(tags);
    expect(results.every((result) => result.instanceId === instance?.instanceId)).toBe(true);
    const exited = await serving.process.waitForLog(
      (line) => serving.process.lines.indexOf(line) >= stateLinesBefore && line.msg === "agent process state changed" && line.instanceId === instance?.instanceId && line.pid === pid && line.state !== "ready",
    );
    expect(exited).toMatchObject({ exitCode: 0 });
    expect(stdoutLines(serving.process, /^go agent stopped$/)).toHaveLength(1);
  }, 120_000);
});

describe("Go SDK direct mode against a real mTLS server", () => {
  it("joins with a token from `ctl join-token`, invokes through the server, registers signed, and keeps working across renewals", async () => {
    // A short certificate for the client only (--ttl 6s): it renews at half-life within seconds,
    // and the client moves its calls to a connection with the new certificate each time.
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-go", manifests: [cluster.writeFile("go.yaml", goAgentYaml())] });
    await cluster.waitForReady("go-agent", 1);
    const created = await cluster.ctl("join-token", "--host", "script-host", "--agents", "script");
    expect(created.code).toBe(0);
    const token = created.stdout.trim().split(/\s+/)[0] ?? "";
    const direct = await run(
      directInvokePath,
      ["--server", cluster.address, "--ca", cluster.caCertFile, "--token", token, "--spiffe-id", "spiffe://agentmesh.local/agent/script",
        "--capability", "go.echo", "--payload", "direct", "--register", "--renewals", "2", "--ttl", "6s"],
      60_000,
    );
    const steps = direct.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(direct.code, direct.stdout + direct.stderr).toBe(0);
    expect(steps.map((step) => step.step)).toEqual(["joined", "invoked", "registered", "deregistered", "invoked after renewal", "invoked after renewal"]);
    expect(JSON.parse(String(steps[1]?.payload))).toMatchObject({ language: "go", payload: "direct", caller: expect.stringMatching(/\/server/) });
    expect(steps[2]?.owner).toBe("spiffe://agentmesh.local/agent/script");
    const serials = new Set(steps.map((step) => step.serial).filter((serial) => serial !== undefined));
    expect(serials.size).toBe(3);

    // The token was spent on the first certificate: a second join with it is refused with the server's status.
    const again = await run(directInvokePath, ["--server", cluster.address, "--ca", cluster.caCertFile, "--token", token, "--spiffe-id", "spiffe://agentmesh.local/agent/script"], 30_000);
    expect(again.code).toBe(1);
    expect(JSON.parse(again.stdout.trim())).toMatchObject({ step: "join", code: expect.stringMatching(/Unauthenticated|PermissionDenied/) });
    expect((await cluster.instances("script")).filter((item) => item.state !== HealthState.HEALTH_STATE_STOPPED)).toEqual([]);
  }, 120_000);
});
