import { readFileSync } from "node:fs";
import type { Command as Program } from "commander";
import { parseLabelSelector } from "../sdk/ts/src/core/label-selector.js";
import {
  type ApplyDeploymentResponse,
  Deployment,
  type GetRolloutResponse,
  type InvokeResponse,
  type ListDeploymentsResponse,
  Rollout_Phase,
  type ScaleDeploymentResponse,
} from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { parseDeploymentYaml } from "../services/orchestrator/deployment-yaml.js";
import { call, ctlAction, print } from "./ctl-command.js";
import { parseDurationMs } from "./duration.js";
import { parseInteger } from "./options.js";
import { formatAge, renderTable } from "./table.js";

/** More than the server waits for a sidecar's CommandResult beyond the grace (lifecycle.ts). */
const COMMAND_WAIT_SLACK_MS = 30_000;

/** ctl commands for deployments and agent lifecycle. */
export function addLifecycleCommands(ctl: Program): void {
  const apply = ctl.command("apply").description("create or update deployments from a YAML file").requiredOption("-f, --file <path>", "deployment YAML (several documents allowed)");
  apply.action(
    ctlAction(apply, async ({ orchestrator, options }) => {
      const { file } = apply.opts() as { file: string };
      const deployments = parseDeploymentYaml(readFileSync(file, "utf8"));
      const results: ApplyDeploymentResponse[] = [];
      for (const deployment of deployments) {
        results.push(await call<ApplyDeploymentResponse>((metadata, callOptions, callback) => orchestrator.applyDeployment({ deployment }, metadata, callOptions, callback)));
      }
      print(options, results.map((result) => ({ name: result.deployment?.name, changed: result.changed, generation: result.deployment?.generation })), () =>
        results.map((result) => `deployment/${result.deployment?.name} ${result.changed ? "configured" : "unchanged"}`).join("\n"),
      );
    }),
  );

  const deployments = ctl.command("deployments").description("list deployments");
  deployments.action(
    ctlAction(deployments, async ({ orchestrator, options }) => {
      const response = await call<ListDeploymentsResponse>((metadata, callOptions, callback) => orchestrator.listDeployments({}, metadata, callOptions, callback));
      const now = Date.now();
      print(options, response.deployments.map((deployment) => Deployment.toJSON(deployment)), () =>
        renderTable(
          ["name", "version", "ready", "updated", "phase", "age"],
          response.deployments.map((deployment) => [
            deployment.name,
            deployment.manifest?.version ?? "",
            `${deployment.status?.readyReplicas ?? 0}/${deployment.replicas}`,
            String(deployment.status?.updatedReplicas ?? 0),
            deployment.status?.phase ?? "",
            formatAge(deployment.createdAtMs, now),
          ]),
        ),
      );
    }),
  );

  const rollout = ctl.command("rollout").description("rolling updates");
  const rolloutStatus = rollout
    .command("status <deployment>")
    .description("follow a rollout until it completes or rolls back")
    .option("--timeout <duration>", "give up after", "10m")
    .option("--once", "print the current state and exit");
  rolloutStatus.action(
    ctlAction(rolloutStatus, async ({ orchestrator, options }, name: string) => {
      const flags = rolloutStatus.opts() as { timeout: string; once?: boolean };
      const deadline = Date.now() + parseDurationMs(flags.timeout);
      for (;;) {
        const { rollout: current } = await call<GetRolloutResponse>((metadata, callOptions, callback) => orchestrator.getRollout({ deployment: name }, metadata, callOptions, callback));
        if (!current) throw new Error("no rollout");
        const phase = Rollout_Phase[current.phase].replace("PHASE_", "").toLowerCase();
        const done = current.phase === Rollout_Phase.PHASE_COMPLETE || current.phase === Rollout_Phase.PHASE_ROLLED_BACK;
        if (options.output === "json") {
          process.stdout.write(`${JSON.stringify({ ...current, phase })}\n`);
        } else {
          const width = 30;
          const filled = current.desiredReplicas === 0 ? width : Math.round((current.updatedReplicas / current.desiredReplicas) * width);
          const bar = `[${"#".repeat(Math.min(width, filled))}${"-".repeat(Math.max(0, width - filled))}]`;
          // Same version on both sides: an env or args change, told apart by template revision.
          const sameVersion = current.fromVersion === current.toVersion;
          const label = (version: string, revision: string) => (version === "" ? "-" : sameVersion && revision !== "" ? `${version} (revision ${revision})` : version);
          const line = `${bar} ${current.updatedReplicas}/${current.desiredReplicas} updated, ${current.readyReplicas} ready  ${label(current.fromVersion, current.fromRevision)} → ${label(current.toVersion, current.toRevision)}  ${phase}${current.message ? `: ${current.message}` : ""}`;
          process.stdout.write(process.stdout.isTTY ? `\r${line}\x1b[K` : `${line}\n`);
        }
        if (done || flags.once) {
          if (process.stdout.isTTY && options.output !== "json") process.stdout.write("\n");
          if (current.phase === Rollout_Phase.PHASE_ROLLED_BACK) process.exitCode = 1;
          return;
        }
        if (Date.now() > deadline) throw new Error("timed out waiting for the rollout");
        await new Promise((resolve) => setTimeout(resolve, 500));
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
    ["drain", "drained", "take an instance out of routing and let its calls finish"],
    ["stop", "stopped", "drain and stop an instance"],
  ] as const) {
    const command = ctl.command(`${verb} <instance-id>`).description(description).option("--grace <duration>", "time for in-flight calls", "5s");
    command.action(
      ctlAction(command, async ({ orchestrator, options }, instanceId: string) => {
        const graceMs = parseDurationMs((command.opts() as { grace: string }).grace);
        // The server answers once the sidecar has carried the command out (or refused it):
        // after the drain and the grace, so wait longer than both.
        const timeoutMs = graceMs + COMMAND_WAIT_SLACK_MS;
        await call<unknown>((metadata, callOptions, callback) => {
          if (verb === "restart") return orchestrator.restartAgent({ instanceId }, metadata, callOptions, callback);
          if (verb === "drain") return orchestrator.drainAgent({ instanceId, graceMs }, metadata, callOptions, callback);
          return orchestrator.stopAgent({ instanceId, graceMs }, metadata, callOptions, callback);
        }, timeoutMs);
        print(options, { instanceId, action: verb, outcome: done }, () => `${instanceId} ${done}`);
      }),
    );
  }

  const invoke = ctl
    .command("invoke <capability> [range]")
    .description("call a capability through the control plane (for clients without a sidecar)")
    .option("-d, --data <text>", "payload (text); @file reads a file", "")
    .option("-l, --selector <selector>", "label selector")
    .option("--idempotent", "retry once on another instance if one is unavailable");
  invoke.action(
    ctlAction(invoke, async ({ orchestrator, options }, capability: string, range: string | undefined) => {
      const flags = invoke.opts() as { data: string; selector?: string; idempotent?: boolean };
      const payload = flags.data.startsWith("@") ? readFileSync(flags.data.slice(1)) : Buffer.from(flags.data);
      const response = await call<InvokeResponse>(
        (metadata, callOptions, callback) =>
          orchestrator.invoke(
            {
              capability,
              versionRange: range ?? "",
              labelSelector: flags.selector ? parseLabelSelector(flags.selector) : undefined,
              payload,
              contentType: "",
              idempotent: Boolean(flags.idempotent),
              metadata: {},
            },
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
