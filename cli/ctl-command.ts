import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { healthStateName } from "../services/registry/domain/health-state.js";
import type { Command } from "commander";
import { parseLabelSelector } from "../sdk/ts/src/core/label-selector.js";
import { IdentityServiceClient } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { OrchestratorServiceClient } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import {
  ListAgentsRequest,
  RegistryServiceClient,
  WatchResponse,
  WatchResponse_EventType,
} from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { AgentInstance, HealthState, healthStateFromJSON } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type ConnectionOptions, addConnectionOptions, channelCredentials, describeRpcError } from "./ctl-connection.js";
import { formatAge, renderTable } from "./table.js";

export interface CtlClients {
  registry: RegistryServiceClient;
  orchestrator: OrchestratorServiceClient;
  identity: IdentityServiceClient;
  options: ConnectionOptions;
  close(): void;
}

export async function ctlClients(options: ConnectionOptions): Promise<CtlClients> {
  const { credentials } = await channelCredentials(options);
  // The server is verified by SPIFFE ID; a fixed TLS name avoids IP addresses as SNI.
  const channelOptions = options.plaintext ? {} : { "grpc.ssl_target_name_override": "agentmesh-server" };
  const registry = new RegistryServiceClient(options.server, credentials, channelOptions);
  const orchestrator = new OrchestratorServiceClient(options.server, credentials, channelOptions);
  const identity = new IdentityServiceClient(options.server, credentials, channelOptions);
  return {
    registry,
    orchestrator,
    identity,
    options,
    close: () => {
      registry.close();
      orchestrator.close();
      identity.close();
    },
  };
}

/** Promise form of a unary call with a deadline, so ctl never hangs on a dead server. */
export function call<Response>(
  invoke: (metadata: Metadata, options: { deadline: Date }, callback: (error: ServiceError | null, response: Response) => void) => unknown,
  timeoutMs = 10_000,
): Promise<Response> {
  return new Promise((resolve, reject) =>
    invoke(new Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

const stateName = healthStateName;

export function print(options: ConnectionOptions, json: unknown, table: () => string): void {
  process.stdout.write(`${options.output === "json" ? JSON.stringify(json, null, 2) : table()}\n`);
}

/** Runs a ctl action: connects, reports RPC failures as one line and exit code 1. */
export function ctlAction<Args extends unknown[]>(command: Command, action: (clients: CtlClients, ...args: Args) => Promise<void>) {
  return async (...args: Args) => {
    const options = command.optsWithGlobals() as ConnectionOptions;
    if (options.output !== "table" && options.output !== "json") {
      process.stderr.write("error: --output must be table or json\n");
      process.exitCode = 2;
      return;
    }
    let clients: CtlClients | undefined;
    try {
      clients = await ctlClients(options);
      await action(clients, ...args);
    } catch (error) {
      process.stderr.write(`${describeRpcError(error)}\n`);
      process.exitCode = 1;
    } finally {
      clients?.close();
    }
  };
}

function agentRows(instances: AgentInstance[], nowMs: number): string[][] {
  return instances.map((instance) => [
    instance.manifest?.name ?? "",
    instance.manifest?.version ?? "",
    instance.instanceId,
    stateName(instance.state),
    (instance.manifest?.capabilities ?? []).map((capability) => `${capability.name}@${capability.version}`).join(","),
    formatAge(instance.registeredAtMs, nowMs),
  ]);
}

const agentHeaders = ["name", "version", "instance", "state", "capabilities", "age"];

export function addCtlCommand(program: Command): Command {
  const ctl = addConnectionOptions(program.command("ctl").description("operate a running mesh"));

  const agents = ctl
    .command("agents")
    .description("list registered agent instances")
    .option("--name <name>", "only this agent name")
    .option("-l, --selector <selector>", "label selector, e.g. env=prod,tier in (a|b)")
    .option("--state <state>", "only this state, e.g. READY");
  agents.action(
    ctlAction(agents, async ({ registry, options }) => {
      const flags = agents.opts() as { name?: string; selector?: string; state?: string };
      const states = flags.state ? [healthStateFromJSON(`HEALTH_STATE_${flags.state.toUpperCase()}`)] : [];
      if (states.includes(HealthState.UNRECOGNIZED)) throw new Error(`unknown state ${flags.state}`);
      const instances: AgentInstance[] = [];
      let pageToken = "";
      do {
        const request = ListAgentsRequest.fromPartial({
          name: flags.name ?? "",
          labelSelector: flags.selector ? parseLabelSelector(flags.selector) : undefined,
          states,
          pageSize: 1000,
          pageToken,
        });
        const page = await call<{ instances: AgentInstance[]; nextPageToken: string }>((metadata, callOptions, callback) =>
          registry.listAgents(request, metadata, callOptions, callback),
        );
        instances.push(...page.instances);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      print(options, instances.map((instance) => AgentInstance.toJSON(instance)), () => renderTable(agentHeaders, agentRows(instances, Date.now())));
    }),
  );

  const agent = ctl.command("agent <instance-id>").description("describe one agent instance");
  agent.action(
    ctlAction(agent, async ({ registry, options }, instanceId: string) => {
      const response = await call<{ instance?: AgentInstance }>((metadata, callOptions, callback) =>
        registry.getAgent({ instanceId }, metadata, callOptions, callback),
      );
      const instance = response.instance as AgentInstance;
      print(options, AgentInstance.toJSON(instance), () => describeInstance(instance));
    }),
  );

  const discover = ctl
    .command("discover <capability> [range]")
    .description("healthy instances offering a capability in a semver range, newest first")
    .option("-l, --selector <selector>", "label selector");
  discover.action(
    ctlAction(discover, async ({ registry, options }, capability: string, range: string | undefined) => {
      const flags = discover.opts() as { selector?: string };
      const response = await call<{ instances: AgentInstance[] }>((metadata, callOptions, callback) =>
        registry.discover(
          { capability, versionRange: range ?? "", labelSelector: flags.selector ? parseLabelSelector(flags.selector) : undefined, limit: 0, includeUnhealthy: false },
          metadata,
          callOptions,
          callback,
        ),
      );
      print(options, response.instances.map((instance) => AgentInstance.toJSON(instance)), () =>
        renderTable(agentHeaders, agentRows(response.instances, Date.now())),
      );
    }),
  );

  const watch = ctl.command("watch").description("stream registry changes until interrupted").option("--capability <name>", "only this capability");
  watch.action(
    ctlAction(watch, async ({ registry, options }) => {
      const flags = watch.opts() as { capability?: string };
      const stream = registry.watch({ sinceRevision: 0, capability: flags.capability ?? "" });
      process.once("SIGINT", () => stream.cancel());
      await new Promise<void>((resolve, reject) => {
        stream.on("data", (event: WatchResponse) => {
          if (options.output === "json") {
            process.stdout.write(`${JSON.stringify(WatchResponse.toJSON(event))}\n`);
            return;
          }
          const type = WatchResponse_EventType[event.type].replace("EVENT_TYPE_", "");
          if (event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED) {
            process.stdout.write(`--- synced at revision ${event.revision}\n`);
            return;
          }
          const instance = event.instance;
          process.stdout.write(
            `${event.revision}\t${type}\t${instance?.manifest?.name ?? ""}\t${instance?.instanceId ?? ""}\t${stateName(instance?.state ?? 0)}\t${instance?.stateReason ?? ""}\n`,
          );
        });
        stream.on("error", (error: ServiceError) => (error.code === status.CANCELLED ? resolve() : reject(error)));
        stream.on("end", () => resolve());
      });
    }),
  );
  return ctl;
}

function describeInstance(instance: AgentInstance): string {
  const manifest = instance.manifest;
  const lines = [
    `Instance:        ${instance.instanceId}`,
    `Agent:           ${manifest?.name ?? ""} ${manifest?.version ?? ""}`,
    `State:           ${stateName(instance.state)} (${instance.stateReason})`,
    `Owner:           ${instance.spiffeId}`,
    `Host:            ${instance.host}`,
    `Endpoint:        ${instance.endpoint || "-"}`,
    `Deployment:      ${instance.deployment || "- (unmanaged)"}`,
    `Registered:      ${new Date(instance.registeredAtMs).toISOString()}`,
    `Last heartbeat:  ${instance.lastHeartbeatAtMs ? new Date(instance.lastHeartbeatAtMs).toISOString() : "never"}`,
    `Load:            in-flight ${instance.load?.inFlight ?? 0}, queue ${instance.load?.queueDepth ?? 0}, p50 ${instance.load?.p50Ms ?? 0} ms, errors ${instance.load?.errorRate ?? 0}`,
    "Capabilities:",
    ...(manifest?.capabilities ?? []).map((capability) => `  ${capability.name}@${capability.version}`),
    `Labels:          ${Object.entries(manifest?.labels ?? {}).map(([key, value]) => `${key}=${value}`).join(",") || "-"}`,
  ];
  return lines.join("\n");
}
