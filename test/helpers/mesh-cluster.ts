// A whole mesh as real processes for the e2e tests: one `agentmesh server`
// (mTLS, its own temp data dir), admin credentials from `ctl init-admin`, and
// sidecars joined with join tokens. Every process it starts — agents the
// sidecars spawned included — is gone after close().
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ServiceError } from "@grpc/grpc-js";
import { MeshCaller } from "../../sdk/ts/src/agent/invoke.js";
import type { CreateJoinTokenResponse } from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import type { GetDeploymentResponse } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { ListAgentsRequest, type ListAgentsResponse, type WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { EventLog } from "./events.js";
import { type RawClients, call, mtlsCredentials, rawClients } from "./mesh-pki.js";
import { type CommandResult, type ManagedProcess, cliPath, repoRoot, run, startProcess, tempDir } from "./processes.js";

/** Time a process gets between SIGTERM and SIGKILL when the cluster is torn down. */
const STOP_GRACE_MS = 5000;
const POLL_INTERVAL_MS = 100;

export const fixtureAgentsDir = join(repoRoot, "test", "fixtures", "agents");
export const exampleAgentsDir = join(repoRoot, "dist", "examples", "agents");

/** Sends `signal`, then SIGKILL if the process is still there after `graceMs`; resolves with the exit code. */
export async function stopProcess(managed: ManagedProcess, signal: NodeJS.Signals = "SIGTERM", graceMs = STOP_GRACE_MS): Promise<number | null> {
  const { child } = managed;
  if (child.exitCode !== null || child.signalCode !== null) return managed.exited;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  try {
    return await managed.exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it answers something other than undefined. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/** Waits for a JSON log line of `managed` at index `fromIndex` or later. */
export function waitForLogAfter(
  managed: ManagedProcess,
  fromIndex: number,
  predicate: (line: Record<string, unknown>) => boolean,
  timeoutMs = 15_000,
): Promise<Record<string, unknown>> {
  return managed.waitForLog((line) => managed.lines.indexOf(line) >= fromIndex && predicate(line), timeoutMs);
}

export interface SidecarOptions {
  host: string;
  /** Managed instances the orchestrator may place here (default 0). */
  capacity?: number;
  /** Deployment-format YAML files of unmanaged agents it runs itself. */
  manifests?: string[];
  extraArgs?: string[];
  /** A join token made beforehand; a new one-use token otherwise. */
  joinToken?: string;
  /** Extra environment of the sidecar process (and so of the agents it starts). */
  env?: Record<string, string>;
}

/** One running `agentmesh sidecar`. */
export interface SidecarNode {
  host: string;
  /** What it was started with, so `restartSidecar` can start it again alike. */
  options: SidecarOptions;
  spiffeId: string;
  process: ManagedProcess;
  dataDir: string;
  inboundAddress: string;
  localAddress: string;
  /** host:port of /metrics, /healthz, /readyz. */
  httpAddress: string;
  /** Calls through this sidecar's local port, as an agent beside it would. */
  caller: MeshCaller;
  /** Supervisor state changes logged for `instanceId` (state, pid, reason), oldest first. */
  agentStates(instanceId?: string): AgentStateLine[];
  /** The next supervisor state line for `instanceId` in `state`, logged at index `fromIndex` or later. */
  waitForAgentState(instanceId: string, state: string, fromIndex?: number, timeoutMs?: number): Promise<AgentStateLine>;
}

export interface AgentStateLine {
  instanceId: string;
  state: string;
  previous: string;
  reason: string;
  pid?: number;
}

export interface TimedWatchEvent {
  receivedAtMs: number;
  event: WatchResponse;
}

export interface ClusterOptions {
  /** Extra `agentmesh server` flags, e.g. ["--alert-webhook", url]. */
  serverArgs?: string[];
}

/**
 * A server and its sidecars as child processes. Built with `MeshCluster.start`,
 * torn down with `close()` (sidecars first, newest first, then the server, then
 * any agent process a killed sidecar left behind; then its temp dir).
 */
export class MeshCluster {
  readonly sidecars: SidecarNode[] = [];
  readonly workDir: string;
  readonly serverDataDir: string;
  readonly credentialsDir: string;
  /** The mesh CA bundle (ca.pem written by init-admin). */
  readonly caCertFile: string;
  /** Admin gRPC clients over mTLS with the init-admin credentials. */
  admin!: RawClients;
  server!: ManagedProcess;
  address = "";
  /** The server's /metrics, /healthz, /readyz port. */
  httpPort = 0;
  private readonly serverArgs: string[];
  private readonly pastServers: ManagedProcess[] = [];
  private readonly agentPids = new Set<number>();
  private readonly watches: Array<() => void> = [];
  private readonly stoppedSidecars: SidecarNode[] = [];

  private constructor(options: ClusterOptions) {
    this.workDir = tempDir("agentmesh-cluster-");
    this.serverDataDir = join(this.workDir, "server");
    this.credentialsDir = join(this.workDir, "admin");
    this.caCertFile = join(this.credentialsDir, "ca.pem");
    this.serverArgs = options.serverArgs ?? [];
  }

  /** Starts the server, writes admin credentials with `ctl init-admin` and connects admin clients. */
  static async start(options: ClusterOptions = {}): Promise<MeshCluster> {
    const cluster = new MeshCluster(options);
    try {
      await cluster.startServer(0);
      const initAdmin = await run(process.execPath, [cliPath, "ctl", "init-admin", "--data-dir", cluster.serverDataDir, "--out", cluster.credentialsDir]);
      if (initAdmin.code !== 0) throw new Error(`ctl init-admin failed: ${initAdmin.stderr}`);
      const chainPem = readFileSync(join(cluster.credentialsDir, "admin-cert.pem"), "utf8");
      const privateKeyPem = readFileSync(join(cluster.credentialsDir, "admin-key.pem"), "utf8");
      const trustBundle = [readFileSync(cluster.caCertFile, "utf8")];
      cluster.admin = rawClients(cluster.address, mtlsCredentials(trustBundle, { chainPem: [chainPem], privateKeyPem }));
    } catch (error) {
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  /** `agentmesh ctl <args>` against this server with the admin credentials. */
  ctl(...args: string[]): Promise<CommandResult> {
    return run(process.execPath, [cliPath, "ctl", "--server", this.address, "--credentials-dir", this.credentialsDir, ...args], 30_000);
  }

  /** Writes a file (a deployment YAML, say) into the cluster's temp dir; returns its path. */
  writeFile(name: string, text: string): string {
    const path = join(this.workDir, name);
    writeFileSync(path, text);
    return path;
  }

  /** A one-use join token for `host`, allowed to register any agent name. */
  async joinToken(host: string): Promise<string> {
    const response = await call<CreateJoinTokenResponse>((metadata, options, callback) =>
      this.admin.identity.createJoinToken({ host, allowedAgentNames: ["*"], maxUses: 1, ttlSeconds: 600 }, metadata, options, callback),
    );
    return response.token;
  }

  /** Joins and starts a sidecar; resolves once it is connected to the control plane and listening. */
  async startSidecar(options: SidecarOptions): Promise<SidecarNode> {
    const dataDir = join(this.workDir, `sidecar-${options.host}`);
    const args = [
      cliPath,
      "sidecar",
      "--server",
      this.address,
      "--host",
      options.host,
      "--join-token",
      options.joinToken ?? (await this.joinToken(options.host)),
      "--ca-cert",
      this.caCertFile,
      "--inbound-port",
      "0",
      "--local-port",
      "0",
      "--http-port",
      "0",
      "--data-dir",
      dataDir,
      "--capacity",
      String(options.capacity ?? 0),
      ...(options.manifests ?? []).flatMap((manifest) => ["--manifest", manifest]),
      ...(options.extraArgs ?? []),
    ];
    const managed = startProcess(process.execPath, args, options.env);
    let scanned = 0;
    managed.child.stdout?.on("data", () => {
      scanned = this.collectAgentPids(managed, scanned);
    });
    let listening: Record<string, unknown>;
    try {
      listening = await managed.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    } catch (error) {
      await stopProcess(managed, "SIGKILL");
      throw error;
    }
    const stateLines = (instanceId?: string) =>
      managed.lines
        .filter((line) => line.msg === "agent process state changed" && (instanceId === undefined || line.instanceId === instanceId))
        .map((line) => line as unknown as AgentStateLine);
    const node: SidecarNode = {
      host: options.host,
      options,
      spiffeId: String(listening.spiffeId),
      process: managed,
      dataDir,
      inboundAddress: String(listening.inboundAddress),
      localAddress: String(listening.localAddress),
      httpAddress: String(listening.httpAddress),
      caller: new MeshCaller(String(listening.localAddress)),
      agentStates: stateLines,
      waitForAgentState: async (instanceId, state, fromIndex = 0, timeoutMs = 15_000) =>
        (await waitForLogAfter(
          managed,
          fromIndex,
          (line) => line.msg === "agent process state changed" && line.instanceId === instanceId && line.state === state,
          timeoutMs,
        )) as unknown as AgentStateLine,
    };
    this.sidecars.push(node);
    return node;
  }

  /**
   * Kills a sidecar (SIGKILL by default) and starts it again at once with the same
   * options (same host name and data dir; a fresh join token, since tokens are one-use).
   * Its agent processes outlive a SIGKILL, as on a real host; close() reaps them.
   */
  async restartSidecar(node: SidecarNode, signal: NodeJS.Signals = "SIGKILL"): Promise<SidecarNode> {
    await this.killSidecar(node, signal);
    return this.startSidecar(node.options);
  }

  /** Kills a sidecar (SIGKILL by default); `startSidecar(node.options)` brings the host back later. */
  async killSidecar(node: SidecarNode, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    node.caller.close();
    await stopProcess(node.process, signal);
    this.sidecars.splice(this.sidecars.indexOf(node), 1);
    this.stoppedSidecars.push(node);
  }

  /** Registered instances (all states), optionally of one agent name. */
  async instances(name = ""): Promise<AgentInstance[]> {
    const response = await call<ListAgentsResponse>((metadata, options, callback) =>
      this.admin.registry.listAgents(ListAgentsRequest.fromPartial({ name, pageSize: 1000 }), metadata, options, callback),
    );
    return response.instances;
  }

  /** Waits until exactly `count` instances of `name` are READY (and none other of it is registered, when `exclusive`). */
  async waitForReady(name: string, count: number, options: { exclusive?: boolean; timeoutMs?: number } = {}): Promise<AgentInstance[]> {
    return waitFor(
      `${count} READY instance(s) of ${name}`,
      async () => {
        const all = await this.instances(name);
        const ready = all.filter((instance) => instance.state === HealthState.HEALTH_STATE_READY);
        if (ready.length !== count) return undefined;
        if (options.exclusive && all.length !== count) return undefined;
        return ready;
      },
      options.timeoutMs ?? 20_000,
    );
  }

  async deployment(name: string): Promise<GetDeploymentResponse> {
    return call<GetDeploymentResponse>((metadata, options, callback) => this.admin.orchestrator.getDeployment({ name }, metadata, options, callback));
  }

  /** Registry changes as they arrive at the test (Watch from revision 0), each stamped with its arrival time. */
  watch(capability = ""): EventLog<TimedWatchEvent> {
    const log = new EventLog<TimedWatchEvent>();
    const stream = this.admin.registry.watch({ sinceRevision: 0, capability, epoch: "" });
    stream.on("data", (event: WatchResponse) => log.push({ receivedAtMs: Date.now(), event }));
    // A broken watch just stops adding events; a test waiting on it then times out naming what it missed.
    stream.on("error", () => undefined);
    this.watches.push(() => stream.cancel());
    return log;
  }

  /** Stops the server (SIGTERM, bounded; or SIGKILL) and answers its exit code; sidecars stay up. */
  async stopServer(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const code = await stopProcess(this.server, signal);
    this.pastServers.push(this.server);
    return code;
  }

  /** Starts a new server on the same data dir (same CA) and port as the first one, after stopping this one with `signal`. */
  async restartServer(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.server.child.exitCode === null && this.server.child.signalCode === null) await this.stopServer(signal);
    const port = Number(this.address.split(":").pop());
    await this.startServer(port);
  }

  /** Stops every sidecar (newest first), then the server, then any agent process left behind; SIGKILL after a bound. */
  async close(): Promise<void> {
    for (const stop of this.watches.splice(0)) stop();
    for (const node of [...this.sidecars].reverse()) {
      node.caller.close();
      await stopProcess(node.process);
    }
    this.admin?.close();
    if (this.server) await stopProcess(this.server);
    for (const managed of this.pastServers) await stopProcess(managed, "SIGKILL");
    for (const node of this.stoppedSidecars) await stopProcess(node.process, "SIGKILL");
    this.killLeftoverAgents();
    rmSync(this.workDir, { recursive: true, force: true });
  }

  private async startServer(port: number): Promise<void> {
    const managed = startProcess(process.execPath, [
      cliPath,
      "server",
      "--port",
      String(port),
      "--http-port",
      "0",
      "--data-dir",
      this.serverDataDir,
      ...this.serverArgs,
    ]);
    this.server = managed;
    const listening = await managed.waitForLog((line) => line.msg === "listening", 20_000);
    this.address = String(listening.grpcAddress);
    this.httpPort = Number(listening.httpPort);
  }

  /** Remembers the pid of every agent process a sidecar reports, to reap orphans of a killed sidecar. */
  private collectAgentPids(managed: ManagedProcess, fromIndex: number): number {
    for (const line of managed.lines.slice(fromIndex)) {
      if (line.msg === "agent process state changed" && typeof line.pid === "number") this.agentPids.add(line.pid);
    }
    return managed.lines.length;
  }

  /**
   * Agents run in their own process group, so a sidecar killed with SIGKILL
   * leaves them running; kill those groups, checking the pid still is one of
   * our agents (not a reused pid).
   */
  private killLeftoverAgents(): void {
    for (const pid of this.agentPids) {
      let commandLine = "";
      try {
        commandLine = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      } catch {
        continue;
      }
      if (!commandLine.includes("/agents/")) continue;
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, "SIGKILL");
          break;
        } catch {
          // already gone, or not a group leader: try the pid itself
        }
      }
    }
  }
}

export interface CallRecord {
  /** Client-side send and answer times (epoch ms). */
  startedAtMs: number;
  endedAtMs: number;
  ok: boolean;
  /** gRPC status code of a failed call. */
  code?: number;
  details?: string;
  instanceId?: string;
  version?: string;
  payload?: string;
}

export interface CallLoop {
  readonly records: CallRecord[];
  /** Resolves once `count` more calls have finished. */
  waitForCalls(count: number, timeoutMs?: number): Promise<void>;
  /** Stops sending, waits for the calls in flight and answers every record. */
  stop(): Promise<CallRecord[]>;
}

/**
 * Sends idempotent calls through `caller` back to back on `concurrency` lanes
 * until stopped, recording each one's times, outcome and answering instance.
 */
export function startCallLoop(
  caller: MeshCaller,
  capability: string,
  payload: () => string,
  options: { concurrency?: number; timeoutMs?: number; idempotent?: boolean } = {},
): CallLoop {
  const records: CallRecord[] = [];
  let running = true;
  const lane = async () => {
    while (running) {
      const startedAtMs = Date.now();
      try {
        const result = await caller.invoke(capability, payload(), { idempotent: options.idempotent ?? true, timeoutMs: options.timeoutMs ?? 5000 });
        records.push({ startedAtMs, endedAtMs: Date.now(), ok: true, instanceId: result.instanceId, version: result.version, payload: result.payload.toString("utf8") });
      } catch (error) {
        const serviceError = error as Partial<ServiceError>;
        records.push({ startedAtMs, endedAtMs: Date.now(), ok: false, code: serviceError.code, details: serviceError.details ?? String(error) });
        // A failure that comes back without I/O must not turn the lane into a microtask loop that starves the event loop.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  };
  const lanes = Array.from({ length: options.concurrency ?? 1 }, () => lane());
  return {
    records,
    waitForCalls: (count, timeoutMs = 15_000) => {
      const target = records.length + count;
      return waitFor(`${count} more calls`, () => (records.length >= target ? true : undefined), timeoutMs).then(() => undefined);
    },
    stop: async () => {
      running = false;
      await Promise.all(lanes);
      return records;
    },
  };
}

/** Failed calls, shortened for a readable assertion message. */
export function failures(records: readonly CallRecord[]): Array<Pick<CallRecord, "code" | "details" | "startedAtMs">> {
  return records.filter((record) => !record.ok).map(({ code, details, startedAtMs }) => ({ code, details, startedAtMs }));
}

/** A deployment YAML for the echo fixture agent (test.echo), tuned for quick tests. */
export function echoDeploymentYaml(options: {
  name?: string;
  version?: string;
  replicas?: number;
  mode?: "serve" | "crash" | "never-ready";
  resources?: string;
  restartPolicy?: string;
  readyTimeout?: string;
  /** Extra environment variables, e.g. ECHO_AGENT_FLAVOR. */
  env?: Record<string, string>;
}): string {
  const version = options.version ?? "1.0.0";
  const extraEnv = Object.entries(options.env ?? {}).map(([name, value]) => `, ${name}: ${JSON.stringify(value)}`).join("");
  return [
    "kind: Deployment",
    `name: ${options.name ?? "echo"}`,
    `version: ${version}`,
    `replicas: ${options.replicas ?? 1}`,
    "capabilities: [test.echo@1.0.0]",
    "process:",
    "  command: node",
    `  args: [${JSON.stringify(join(fixtureAgentsDir, "echo-agent.mjs"))}]`,
    `  env: {ECHO_AGENT_VERSION: "${version}", ECHO_AGENT_MODE: ${options.mode ?? "serve"}${extraEnv}}`,
    `health: {heartbeatInterval: 200ms, readinessTimeout: ${options.readyTimeout ?? "5s"}}`,
    `restartPolicy: ${options.restartPolicy ?? "{initialBackoff: 50ms, maxBackoff: 200ms}"}`,
    `strategy: {maxSurge: 1, maxUnavailable: 0, readyTimeout: ${options.readyTimeout ?? "5s"}}`,
    ...(options.resources ? [`resources: ${options.resources}`] : []),
    "",
  ].join("\n");
}

/** A deployment YAML for one of the compiled example agents (word-stats: SDK; json-validator: plain AgentService). */
export function exampleDeploymentYaml(agent: "word-stats" | "json-validator", replicas: number, options: { heartbeatInterval?: string } = {}): string {
  const capability = agent === "word-stats" ? "text.word-stats@1.0.0" : "json.validate@1.0.0";
  return [
    "kind: Deployment",
    `name: ${agent}`,
    "version: 1.0.0",
    `replicas: ${replicas}`,
    `capabilities: [${capability}]`,
    `process: {command: node, args: [${JSON.stringify(join(exampleAgentsDir, `${agent}.js`))}]}`,
    `health: {heartbeatInterval: ${options.heartbeatInterval ?? "200ms"}, readinessTimeout: 5s}`,
    "restartPolicy: {initialBackoff: 50ms, maxBackoff: 200ms}",
    "strategy: {readyTimeout: 5s}",
    "",
  ].join("\n");
}
