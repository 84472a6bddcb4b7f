import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { healthStateName } from "../services/registry/domain/health-state.js";
import { type Command, InvalidArgumentError } from "commander";
import { IdentityServiceClient } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { OrchestratorServiceClient } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import {
  type LabelSelector,
  ListAgentsRequest,
  RegistryServiceClient,
  WatchResponse,
  WatchResponse_EventType,
} from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { AgentInstance, HealthState, healthStateFromJSON } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { CliError } from "./cli-error.js";
import { type Connection, type ConnectionOptions, addConnectionOptions, connectionFor, firstReachable, openConnection, probeTls } from "./ctl-connection.js";
import type { RpcTarget } from "./error-translation.js";
import { parseSelectorFlag } from "./options.js";
import { formatAge, renderTable } from "./table.js";

export interface CtlClients {
  registry: RegistryServiceClient;
  orchestrator: OrchestratorServiceClient;
  identity: IdentityServiceClient;
  options: ConnectionOptions;
  connection: Connection;
  close(): void;
}

/** Clients over `connection`; ctl commands get theirs from ctlAction. */
/** The server is verified by SPIFFE ID; a fixed TLS name avoids IP addresses as SNI. */
function channelOptionsFor(connection: Connection): Record<string, string> {
  return connection.plaintext ? {} : { "grpc.ssl_target_name_override": "agentmesh-server" };
}

export function clientsFor(connection: Connection, options: ConnectionOptions): CtlClients {
  const channelOptions = channelOptionsFor(connection);
  const registry = new RegistryServiceClient(connection.address, connection.credentials, channelOptions);
  const orchestrator = new OrchestratorServiceClient(connection.address, connection.credentials, channelOptions);
  const identity = new IdentityServiceClient(connection.address, connection.credentials, channelOptions);
  return {
    registry,
    orchestrator,
    identity,
    options,
    connection,
    close: () => {
      registry.close();
      orchestrator.close();
      identity.close();
      connection.identity?.close();
    },
  };
}

/** Clients for programs (benches, the demo) that have the options but no commander command. */
export async function ctlClients(options: ConnectionOptions): Promise<CtlClients> {
  return clientsFor(await connectionFor(options), options);
}

/** Deadline of one ctl call unless the command says otherwise. */
export const defaultCallTimeoutMs = 10_000;

/**
 * Promise form of a unary call with a deadline, so ctl never hangs on a dead server.
 * A failure carries the deadline it had (`timeoutMs`), for its one-line message.
 */
export function call<Response>(
  invoke: (metadata: Metadata, options: { deadline: Date }, callback: (error: ServiceError | null, response: Response) => void) => unknown,
  timeoutMs = defaultCallTimeoutMs,
): Promise<Response> {
  return new Promise((resolve, reject) =>
    invoke(new Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (error, response) => (error ? reject(Object.assign(error, { timeoutMs })) : resolve(response))),
  );
}

const stateName = healthStateName;

export function print(options: ConnectionOptions, json: unknown, table: () => string): void {
  process.stdout.write(`${options.output === "json" ? JSON.stringify(json, null, 2) : table()}\n`);
}

/**
 * Runs a ctl action against the server: connects, and turns any failure into a
 * CliError (cli-error.ts) that names the server and the credentials used.
 */
export function ctlAction<Args extends unknown[]>(command: Command, action: (clients: CtlClients, ...args: Args) => Promise<void>) {
  return async (...args: Args) => {
    const options = command.optsWithGlobals() as ConnectionOptions;
    const connection = await openConnection(command);
    // Several replicas (--server a,b): the first that answers.
    connection.address = await firstReachable(connection, channelOptionsFor(connection));
    const clients = clientsFor(connection, options);
    try {
      await action(clients, ...args);
    } catch (error) {
      throw CliError.from(error, { kind: "rpc", target: await rpcTarget(connection, error) });
    } finally {
      clients.close();
    }
  };
}

/** What a failure message needs to know about the connection; probes for TLS when a plaintext call could not connect. */
async function rpcTarget(connection: Connection, error: unknown): Promise<RpcTarget> {
  const failure = error as Partial<ServiceError> & { timeoutMs?: number };
  const couldNotConnect = failure.code === status.UNAVAILABLE && !/ECONNREFUSED|Name resolution failed/.test(failure.details ?? "");
  return {
    address: connection.address,
    plaintext: connection.plaintext,
    role: "ctl",
    credentials: connection.credentialsDescription,
    timeoutMs: failure.timeoutMs,
    serverSpeaksTls: connection.plaintext && couldNotConnect ? await probeTls(connection.address) : undefined,
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

const knownStates = Object.values(HealthState)
  .filter((state): state is HealthState => typeof state === "number" && state > 0)
  .map((state) => stateName(state))
  .join(", ");

/** `--state ready` → HEALTH_STATE_READY, refused at parse time (a usage error) when it names no state. */
function parseStateFlag(text: string): HealthState {
  const state = healthStateFromJSON(`HEALTH_STATE_${text.toUpperCase()}`);
  if (state === HealthState.UNRECOGNIZED || state === HealthState.HEALTH_STATE_UNSPECIFIED) throw new InvalidArgumentError(`not a state; use one of ${knownStates}`);
  return state;
}

const agentHeaders = ["name", "version", "instance", "state", "capabilities", "age"];

export function addCtlCommand(program: Command): Command {
  const ctl = addConnectionOptions(program.command("ctl").description("operate a running mesh"));

  const agents = ctl
    .command("agents")
    .description("list registered agent instances")
    .option("--name <name>", "only this agent name")
    .option("-l, --selector <selector>", "label selector, e.g. env=prod,tier in (a|b)", parseSelectorFlag)
    .option("--state <state>", "only this state, e.g. READY", parseStateFlag);
  agents.action(
    ctlAction(agents, async ({ registry, options }) => {
      const flags = agents.opts() as { name?: string; selector?: LabelSelector; state?: HealthState };
      const states = flags.state === undefined ? [] : [flags.state];
      const instances: AgentInstance[] = [];
      let pageToken = "";
      do {
        const request = ListAgentsRequest.fromPartial({
          name: flags.name ?? "",
          labelSelector: flags.selector,
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
    .option("-l, --selector <selector>", "label selector", parseSelectorFlag);
  discover.action(
    ctlAction(discover, async ({ registry, options }, capability: string, range: string | undefined) => {
      const flags = discover.opts() as { selector?: LabelSelector };
      const response = await call<{ instances: AgentInstance[] }>((metadata, callOptions, callback) =>
        registry.discover(
          { capability, versionRange: range ?? "", labelSelector: flags.selector, limit: 0, includeUnhealthy: false },
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
      const stream = registry.watch({ sinceRevision: 0, capability: flags.capability ?? "", epoch: "" });
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
