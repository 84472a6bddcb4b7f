import { readFile } from "node:fs/promises";
import { type ServiceError, status } from "@grpc/grpc-js";
import type { Command as Program } from "commander";
import { formatDurationMs } from "../sdk/ts/src/core/duration.js";
import {
  type ApplyDeploymentResponse,
  ApplyDeploymentResponse_Outcome,
  type DeleteDeploymentResponse,
  Deployment,
  type GetDeploymentResponse,
  type GetRolloutResponse,
  type InvokeResponse,
  type ListDeploymentsResponse,
  type Rollout,
  Rollout_Phase,
  type ScaleDeploymentResponse,
} from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { GetAgentResponse } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { parseDeploymentYaml } from "../services/orchestrator/deployment-yaml.js";
import { healthStateName } from "../services/registry/domain/health-state.js";
import { CliError, inContext } from "./cli-error.js";
import { type CtlClients, call, ctlAction, print } from "./ctl-command.js";
import { durationOption, parseInteger, parseSelectorFlag } from "./options.js";
import { formatAge, renderTable } from "./table.js";

/** More than the server waits for a sidecar's CommandResult beyond the grace (lifecycle.ts). */
const COMMAND_WAIT_SLACK_MS = 30_000;
/** How often ctl looks again while it follows a rollout, a drain or a delete. */
const FOLLOW_INTERVAL_MS = 250;

const outcomeWords: Record<ApplyDeploymentResponse_Outcome, string> = {
  [ApplyDeploymentResponse_Outcome.OUTCOME_CREATED]: "created",
  [ApplyDeploymentResponse_Outcome.OUTCOME_CONFIGURED]: "configured",
  [ApplyDeploymentResponse_Outcome.OUTCOME_UNCHANGED]: "unchanged",
  [ApplyDeploymentResponse_Outcome.OUTCOME_UNSPECIFIED]: "",
  [ApplyDeploymentResponse_Outcome.UNRECOGNIZED]: "",
};

/** kubectl's words; a server from before the outcome field only says whether it changed. */
function applyOutcome(result: ApplyDeploymentResponse): string {
  return outcomeWords[result.outcome] || (result.changed ? "configured" : "unchanged");
}

/** Deployments of a YAML file, the file named in any failure. */
async function deploymentsFromFile(path: string): Promise<Deployment[]> {
  const text = await inContext({ kind: "readFile", flag: "-f", path }, () => readFile(path, "utf8"));
  try {
    return parseDeploymentYaml(text);
  } catch (error) {
    throw CliError.failed(`${path}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
}

/** ctl commands for deployments and agent lifecycle. */
export function addLifecycleCommands(ctl: Program): void {
  const apply = ctl.command("apply").description("create or update deployments from a YAML file").requiredOption("-f, --file <path>", "deployment YAML (several documents allowed)");
  apply.action(
    ctlAction(apply, async ({ orchestrator, options }) => {
      const { file } = apply.opts() as { file: string };
      const results: ApplyDeploymentResponse[] = [];
      for (const deployment of await deploymentsFromFile(file)) {
        results.push(await call<ApplyDeploymentResponse>((metadata, callOptions, callback) => orchestrator.applyDeployment({ deployment }, metadata, callOptions, callback)));
      }
      print(options, results.map((result) => ({ name: result.deployment?.name, outcome: applyOutcome(result), changed: result.changed, generation: result.deployment?.generation })), () =>
        results.map((result) => `deployment/${result.deployment?.name} ${applyOutcome(result)}`).join("\n"),
      );
    }),
  );

  const remove = ctl
    .command("delete [names...]")
    .description("delete deployments: their serving instances are drained, then every instance is stopped, then the deployment is removed")
    .option("-f, --file <path>", "delete the deployments named in this YAML file")
    .option("--no-wait", "return once the deletion has begun")
    .addOption(durationOption("--timeout <duration>", "how long to wait for the instances to stop", "2m"));
  remove.action(
    ctlAction(remove, async (clients, names: string[]) => {
      const flags = remove.opts() as { file?: string; wait: boolean; timeout: number };
      const targets = [...names, ...(flags.file ? (await deploymentsFromFile(flags.file)).map((deployment) => deployment.name) : [])];
      if (targets.length === 0) throw CliError.usage("delete: name a deployment, or -f a file");
      for (const name of targets) await deleteDeployment(clients, name, flags);
    }),
  );

  const deployments = ctl.command("deployments").description("list deployments");
  deployments.action(
    ctlAction(deployments, async ({ orchestrator, options }) => {
      const response = await call<ListDeploymentsResponse>((metadata, callOptions, callback) => orchestrator.listDeployments({}, metadata, callOptions, callback));
      const now = Date.now();
      print(options, response.deployments.map((deployment) => Deployment.toJSON(deployment)), () =>
        renderTable(
          ["name", "version", "ready", "updated", "phase", "age", "message"],
          response.deployments.map((deployment) => [
            deployment.name,
            deployment.manifest?.version ?? "",
            `${deployment.status?.readyReplicas ?? 0}/${deployment.replicas}`,
            String(deployment.status?.updatedReplicas ?? 0),
            deployment.status?.phase ?? "",
            formatAge(deployment.createdAtMs, now),
            needsExplaining(deployment) ? (deployment.status?.message ?? "") : "",
          ]),
        ),
      );
    }),
  );

  const rollout = ctl.command("rollout").description("rolling updates");
  const rolloutStatus = rollout
    .command("status <deployment>")
    .description("follow a rollout until it completes or rolls back, printing each change")
    .addOption(durationOption("--timeout <duration>", "give up (exit 1, saying why) after", "10m"))
    .option("--once", "print the current state and exit");
  rolloutStatus.action(
    ctlAction(rolloutStatus, async ({ orchestrator, options }, name: string) => {
      const flags = rolloutStatus.opts() as { timeout: number; once?: boolean };
      const deadline = Date.now() + flags.timeout;
      const redraw = process.stdout.isTTY && options.output !== "json";
      let last = "";
      for (;;) {
        const current = await currentRollout(orchestrator, name);
        if (current === undefined) {
          // Applied a moment ago: the first reconcile pass has not made its rollout yet.
          if (Date.now() >= deadline || flags.once) throw CliError.failed(`no rollout for ${name} yet`);
          await pause(FOLLOW_INTERVAL_MS);
          continue;
        }
        const done = current.phase === Rollout_Phase.PHASE_COMPLETE || current.phase === Rollout_Phase.PHASE_ROLLED_BACK;
        const line = options.output === "json" ? JSON.stringify({ ...current, phase: phaseName(current) }) : rolloutLine(current);
        // Changes only: a rollout waiting for capacity prints once, not every poll.
        if (line !== last) {
          process.stdout.write(redraw ? `\r${line}\x1b[K` : `${line}\n`);
          last = line;
        }
        if (done || flags.once) {
          if (redraw) process.stdout.write("\n");
          if (current.phase === Rollout_Phase.PHASE_ROLLED_BACK) throw CliError.failed(`rollout of ${name} rolled back: ${current.message}`);
          return;
        }
        if (Date.now() >= deadline) {
          if (redraw) process.stdout.write("\n");
          throw CliError.failed(`rollout of ${name} not complete after ${formatDurationMs(flags.timeout)}: ${rolloutReason(current)}`);
        }
        await pause(500);
      }
    }),
  );

  const scale = ctl.command("scale <deployment> <replicas>").description("set a deployment's replica count");
  scale.action(
    ctlAction(scale, async ({ orchestrator, options }, name: string, replicasText: string) => {
      const replicas = parseInteger("replicas", 0, 1000)(replicasText);
      const response = await call<ScaleDeploymentResponse>((metadata, callOptions, callback) =>
        orchestrator.scaleDeployment({ name, replicas }, metadata, callOptions, callback),
      );
      print(options, response, () => `deployment/${name} scaled to ${response.deployment?.replicas}`);
    }),
  );

  for (const [verb, done, description] of [
    ["restart", "restarted", "restart an agent instance in place"],
    ["stop", "stopped", "drain and stop an instance (a deployment then places a replacement)"],
  ] as const) {
    const command = ctl.command(`${verb} <instance-id>`).description(description).addOption(durationOption("--grace <duration>", "time for in-flight calls", "5s"));
    command.action(
      ctlAction(command, async ({ orchestrator, options }, instanceId: string) => {
        const graceMs = (command.opts() as { grace: number }).grace;
        // The server answers once the sidecar has carried the command out (or refused it):
        // after the drain and the grace, so wait longer than both.
        await call<unknown>((metadata, callOptions, callback) => {
          if (verb === "restart") return orchestrator.restartAgent({ instanceId }, metadata, callOptions, callback);
          return orchestrator.stopAgent({ instanceId, graceMs }, metadata, callOptions, callback);
        }, graceMs + COMMAND_WAIT_SLACK_MS);
        print(options, { instanceId, action: verb, outcome: done }, () => `${instanceId} ${done}`);
      }),
    );
  }

  const drain = ctl
    .command("drain <instance-id>")
    .description("take an instance out of routing and let its calls finish; a deployment's instance is then stopped and replaced")
    .addOption(durationOption("--grace <duration>", "time for in-flight calls", "5s"))
    .option("--no-wait", "return once the drain is done, without following the stop and the replacement")
    .addOption(durationOption("--timeout <duration>", "how long to follow the stop and the replacement", "2m"));
  drain.action(
    ctlAction(drain, async (clients, instanceId: string) => {
      const flags = drain.opts() as { grace: number; wait: boolean; timeout: number };
      await drainInstance(clients, instanceId, flags);
    }),
  );

  const invoke = ctl
    .command("invoke <capability> [range]")
    .description("call a capability through the control plane (for clients without a sidecar)")
    .option("-d, --data <text>", "payload (text); @file reads a file", "")
    .option("-l, --selector <selector>", "label selector", parseSelectorFlag)
    .option("--idempotent", "retry once on another instance if one is unavailable");
  invoke.action(
    ctlAction(invoke, async ({ orchestrator, options }, capability: string, range: string | undefined) => {
      const flags = invoke.opts() as { data: string; selector?: ReturnType<typeof parseSelectorFlag>; idempotent?: boolean };
      const payload = flags.data.startsWith("@")
        ? await inContext({ kind: "readFile", flag: "--data", path: flags.data.slice(1) }, () => readFile(flags.data.slice(1)))
        : Buffer.from(flags.data);
      const response = await call<InvokeResponse>(
        (metadata, callOptions, callback) =>
          orchestrator.invoke(
            { capability, versionRange: range ?? "", labelSelector: flags.selector, payload, contentType: "", idempotent: Boolean(flags.idempotent), metadata: {} },
            metadata,
            callOptions,
            callback,
          ),
        35_000,
      );
      const text = Buffer.from(response.payload).toString("utf8");
      print(options, { instanceId: response.instanceId, version: response.version, payload: text }, () => text);
    }),
  );
}

/** A deployment short of its replicas, or not settled, shows its status message in the table (the reason was only in -o json). */
function needsExplaining(deployment: Deployment): boolean {
  const status = deployment.status;
  if (!status) return false;
  return status.phase !== "complete" || status.readyReplicas < deployment.replicas || status.replicas !== deployment.replicas;
}

/** The deployment's rollout; undefined while the deployment exists but has none yet (NOT_FOUND for an unknown deployment). */
async function currentRollout(orchestrator: CtlClients["orchestrator"], name: string): Promise<Rollout | undefined> {
  try {
    const { rollout } = await call<GetRolloutResponse>((metadata, callOptions, callback) => orchestrator.getRollout({ deployment: name }, metadata, callOptions, callback));
    return rollout;
  } catch (error) {
    if (!isNotFound(error)) throw error;
    await call<GetDeploymentResponse>((metadata, callOptions, callback) => orchestrator.getDeployment({ name }, metadata, callOptions, callback));
    return undefined;
  }
}

function phaseName(rollout: Rollout): string {
  return (Rollout_Phase[rollout.phase] ?? "UNKNOWN").replace("PHASE_", "").toLowerCase();
}

/** Why a rollout is not done: capacity first, since nothing else can move while it is short. */
function rolloutReason(rollout: Rollout): string {
  if (rollout.waitingForCapacity > 0) return capacityReason(rollout.waitingForCapacity);
  return rollout.message || phaseName(rollout);
}

function capacityReason(waiting: number): string {
  return `${waiting} instance(s) wait for sidecar capacity: no connected sidecar has room (start a sidecar, or raise a sidecar's --capacity)`;
}

function rolloutLine(current: Rollout): string {
  const width = 30;
  const filled = current.desiredReplicas === 0 ? width : Math.round((current.updatedReplicas / current.desiredReplicas) * width);
  const bar = `[${"#".repeat(Math.min(width, filled))}${"-".repeat(Math.max(0, width - filled))}]`;
  // Same version on both sides: an env or args change, told apart by template revision.
  const sameVersion = current.fromVersion === current.toVersion;
  const label = (version: string, revision: string) => (version === "" ? "-" : sameVersion && revision !== "" ? `${version} (revision ${revision})` : version);
  const waiting = current.waitingForCapacity > 0 ? `; ${capacityReason(current.waitingForCapacity)}` : "";
  return `${bar} ${current.updatedReplicas}/${current.desiredReplicas} updated, ${current.readyReplicas} ready  ${label(current.fromVersion, current.fromRevision)} → ${label(current.toVersion, current.toRevision)}  ${phaseName(current)}${current.message ? `: ${current.message}` : ""}${waiting}`;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isNotFound(error: unknown): boolean {
  return (error as Partial<ServiceError>).code === status.NOT_FOUND;
}

/** Prints each progress line once, in order; JSON output prints only the final summary. */
function progressPrinter(options: CtlClients["options"]): (line: string) => void {
  const printed = new Set<string>();
  return (line) => {
    if (options.output === "json" || printed.has(line)) return;
    printed.add(line);
    process.stdout.write(`${line}\n`);
  };
}

async function deleteDeployment(clients: CtlClients, name: string, flags: { wait: boolean; timeout: number }): Promise<void> {
  const { orchestrator, options } = clients;
  const say = progressPrinter(options);
  const response = await call<DeleteDeploymentResponse>((metadata, callOptions, callback) => orchestrator.deleteDeployment({ name }, metadata, callOptions, callback));
  const what = response.instances === 0 ? "it has no instances" : `its ${response.instances} instance(s) are drained, then stopped`;
  say(`deployment/${name} deleting: ${what}`);
  if (!flags.wait) {
    print(options, { name, outcome: "deleting", instances: response.instances }, () => `deployment/${name} is removed once none is left`);
    return;
  }
  const deadline = Date.now() + flags.timeout;
  for (;;) {
    let current: GetDeploymentResponse;
    try {
      current = await call<GetDeploymentResponse>((metadata, callOptions, callback) => orchestrator.getDeployment({ name }, metadata, callOptions, callback));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      print(options, { name, outcome: "deleted", instances: response.instances }, () => `deployment/${name} deleted`);
      return;
    }
    say(`deployment/${name}: ${current.instances.length} instance(s) left`);
    if (Date.now() >= deadline) {
      throw CliError.failed(`deployment/${name} still has ${current.instances.length} instance(s) after ${formatDurationMs(flags.timeout)}: ${current.deployment?.status?.message ?? ""}`);
    }
    await pause(FOLLOW_INTERVAL_MS);
  }
}

/**
 * drain, then (for a deployment's instance) follow what the orchestrator does
 * next: stop the drained instance, which frees its slot, and place a
 * replacement. Prints each step once; exits 1 naming the reason when the
 * replacement is not READY within --timeout (no sidecar capacity, say).
 */
async function drainInstance(clients: CtlClients, instanceId: string, flags: { grace: number; wait: boolean; timeout: number }): Promise<void> {
  const { orchestrator, registry, options } = clients;
  const say = progressPrinter(options);
  const { instance } = await call<GetAgentResponse>((metadata, callOptions, callback) => registry.getAgent({ instanceId }, metadata, callOptions, callback));
  const deployment = instance?.deployment ?? "";
  // Taken before the drain: with room on a sidecar the replacement may start before ctl looks again.
  const before = new Set<string>();
  if (deployment !== "") {
    const current = await call<GetDeploymentResponse>((metadata, callOptions, callback) => orchestrator.getDeployment({ name: deployment }, metadata, callOptions, callback));
    for (const each of current.instances) before.add(each.instanceId);
  }
  say(`${instanceId} draining: out of routing, in-flight calls finish`);
  await call<unknown>((metadata, callOptions, callback) => orchestrator.drainAgent({ instanceId, graceMs: flags.grace }, metadata, callOptions, callback), flags.grace + COMMAND_WAIT_SLACK_MS);
  say(`${instanceId} drained`);
  if (deployment === "") {
    print(options, { instanceId, action: "drain", outcome: "drained" }, () => `${instanceId} stays out of routing: it is unmanaged, so nothing stops or replaces it ('ctl stop' ends it)`);
    return;
  }
  if (!flags.wait) {
    print(options, { instanceId, action: "drain", outcome: "drained", deployment }, () => `deployment/${deployment} stops it and places a replacement`);
    return;
  }
  say(`${instanceId} stopping; deployment/${deployment} places a replacement`);
  const deadline = Date.now() + flags.timeout;
  for (;;) {
    const current = await call<GetDeploymentResponse>((metadata, callOptions, callback) => orchestrator.getDeployment({ name: deployment }, metadata, callOptions, callback));
    const { rollout } = await call<GetRolloutResponse>((metadata, callOptions, callback) => orchestrator.getRollout({ deployment }, metadata, callOptions, callback)).catch(() => ({ rollout: undefined }));
    const instances = current.instances;
    const drained = instances.find((each) => each.instanceId === instanceId);
    if (!drained) say(`${instanceId} stopped`);
    const replacements = instances.filter((each) => !before.has(each.instanceId));
    for (const replacement of replacements) say(`replacement ${replacement.instanceId} ${stateWord(replacement)} on ${replacement.host || "?"}`);
    const waiting = rollout?.waitingForCapacity ?? 0;
    // While the drained instance still runs, it holds its slot: waiting is expected until it has stopped.
    if (waiting > 0 && !drained) say(`replacement waits: ${capacityReason(waiting)}`);
    const desired = current.deployment?.replicas ?? 0;
    const ready = instances.filter((each) => each.state === HealthState.HEALTH_STATE_READY).length;
    if (!drained && ready >= desired) {
      const replacement = replacements.find((each) => each.state === HealthState.HEALTH_STATE_READY);
      print(options, { instanceId, action: "drain", outcome: "replaced", deployment, replacement: replacement?.instanceId ?? "", ready, replicas: desired }, () => `deployment/${deployment} ${ready}/${desired} READY`);
      return;
    }
    if (Date.now() >= deadline) {
      const why = waiting > 0 ? capacityReason(waiting) : drained ? `${instanceId} is still ${healthStateName(drained.state)}` : (current.deployment?.status?.message ?? "");
      throw CliError.failed(`deployment/${deployment} is at ${ready}/${desired} READY after ${formatDurationMs(flags.timeout)}: ${why}`);
    }
    await pause(FOLLOW_INTERVAL_MS);
  }
}

function stateWord(instance: AgentInstance): string {
  return instance.state === HealthState.HEALTH_STATE_READY ? "READY" : healthStateName(instance.state).toLowerCase();
}
