import { join } from "node:path";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import type { Server } from "@grpc/grpc-js";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";
import { packageRoot } from "./paths.js";
import { fixMapEntryNames } from "./reflection-descriptor-fix.js";

export const meshServiceNames = [
  "agentmesh.v1.RegistryService",
  "agentmesh.v1.OrchestratorService",
  "agentmesh.v1.IdentityService",
] as const;

/** grpc.health.v1 with one status per service; "" is the whole server. Starts NOT_SERVING. */
export function createHealth(serviceNames: readonly string[]): HealthImplementation {
  const initial: Record<string, "NOT_SERVING"> = { "": "NOT_SERVING" };
  for (const name of serviceNames) initial[name] = "NOT_SERVING";
  return new HealthImplementation(initial);
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
