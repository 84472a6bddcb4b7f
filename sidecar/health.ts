import type { Server } from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";

/** What each port reports besides "" (the whole sidecar). */
export const inboundHealthServices = ["agentmesh.v1.PeerService"] as const;
export const localHealthServices = ["agentmesh.v1.SidecarService"] as const;

/**
 * grpc.health.v1 on the sidecar's own ports (inbound mTLS and local plaintext), so
 * grpc-health-probe, Kubernetes probes and load balancers can ask the sidecar itself,
 * not only its agents. NOT_SERVING until it has joined and listens, SERVING while it
 * runs, NOT_SERVING again from the first moment of shutdown (SIGTERM: draining), so
 * whoever asks stops sending it work before it is gone (docs/protocol.md).
 */
export class SidecarHealth {
  private readonly ports: Array<{ health: HealthImplementation; services: readonly string[] }> = [];

  /** Serves health on `server` for "" and `services`; call before the server binds. */
  addTo(server: Server, services: readonly string[]): void {
    const health = new HealthImplementation(Object.fromEntries(["", ...services].map((name) => [name, "NOT_SERVING" as const])));
    health.addToServer(server);
    this.ports.push({ health, services });
  }

  set(status: ServingStatus): void {
    for (const { health, services } of this.ports) {
      for (const name of ["", ...services]) health.setStatus(name, status);
    }
  }
}
