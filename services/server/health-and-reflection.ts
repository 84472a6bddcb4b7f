import { join } from "node:path";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { type Server, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, status } from "@grpc/grpc-js";
import { service as healthService, protoPath as healthProtoPath } from "grpc-health-check";
import { packageRoot } from "./paths.js";
import { fixMapEntryNames } from "./reflection-descriptor-fix.js";

export const meshServiceNames = [
  "agentmesh.v1.RegistryService",
  "agentmesh.v1.OrchestratorService",
  "agentmesh.v1.IdentityService",
] as const;

export type ServingStatus = "SERVING" | "NOT_SERVING";
type WatchedStatus = ServingStatus | "SERVICE_UNKNOWN";

/**
 * grpc.health.v1 with one status per service; "" is the whole server. The set of
 * services is fixed at construction, which keeps what a caller can make it hold or
 * echo bounded: grpc-health-check's own implementation answers an unknown name by
 * echoing it whole (a 100 kB name, 100 kB back) and keeps a watcher entry for every
 * name ever watched.
 */
export class MeshHealth {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<(status: WatchedStatus) => void>>();

  constructor(serviceNames: readonly string[]) {
    for (const name of ["", ...serviceNames]) {
      this.statuses.set(name, "NOT_SERVING");
      this.watchers.set(name, new Set());
    }
  }

  setStatus(serviceName: string, servingStatus: ServingStatus): void {
    if (!this.statuses.has(serviceName)) throw new Error(`health: unknown service ${serviceName}`);
    if (this.statuses.get(serviceName) === servingStatus) return;
    this.statuses.set(serviceName, servingStatus);
    for (const watcher of this.watchers.get(serviceName) ?? []) watcher(servingStatus);
  }

  /** Every service's status at once: readiness changes the whole server. */
  setAll(servingStatus: ServingStatus): void {
    for (const name of this.statuses.keys()) this.setStatus(name, servingStatus);
  }

  addToServer(server: Server): void {
    server.addService(healthService, {
      check: (call: ServerUnaryCall<{ service: string }, unknown>, callback: sendUnaryData<{ status: WatchedStatus }>) => {
        const current = this.statuses.get(call.request.service);
        if (current) callback(null, { status: current });
        else callback({ code: status.NOT_FOUND, details: `unknown service ${quoted(call.request.service)}` });
      },
      watch: (call: ServerWritableStream<{ service: string }, { status: WatchedStatus }>) => {
        const listeners = this.watchers.get(call.request.service);
        // The protocol keeps a watch on an unknown service open; ours never become known, so it needs no listener.
        if (!listeners) {
          call.write({ status: "SERVICE_UNKNOWN" });
          return;
        }
        const listener = (servingStatus: WatchedStatus) => call.write({ status: servingStatus });
        listeners.add(listener);
        const forget = () => listeners.delete(listener);
        call.on("cancelled", forget);
        call.on("close", forget);
        call.on("error", forget);
        listener(this.statuses.get(call.request.service) ?? "SERVICE_UNKNOWN");
      },
      list: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<{ statuses: Record<string, { status: ServingStatus }> }>) => {
        callback(null, { statuses: Object.fromEntries([...this.statuses].map(([name, servingStatus]) => [name, { status: servingStatus }])) });
      },
    });
  }
}

/** At most 40 printable characters of caller input, quoted, for a message. */
function quoted(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, "?");
  return JSON.stringify(printable.length > 40 ? `${printable.slice(0, 40)}…` : printable);
}

/** Server reflection (v1 and v1alpha) over every proto the server speaks, health included. */
export function addReflection(server: Server, servedServices: readonly string[]): void {
  const protoDirectory = join(packageRoot(), "proto");
  const definition = loadSync(
    [
      "agentmesh/v1/types.proto",
      "agentmesh/v1/registry.proto",
      "agentmesh/v1/orchestrator.proto",
      "agentmesh/v1/identity.proto",
      "agentmesh/v1/agent.proto",
      healthProtoPath,
    ],
    { includeDirs: [protoDirectory], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  new ReflectionService(fixMapEntryNames(definition), { services: [...servedServices, "grpc.health.v1.Health"] }).addToServer(server);
}
