import { Client, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

export interface ReadinessProbeOptions {
  /** grpc.health.v1 service name; "" asks about the server as a whole. */
  service: string;
  /** Pause between failed checks. */
  intervalMs: number;
  /** Aborted when the child exits, readiness times out or the process is stopped. */
  signal: AbortSignal;
}

/** Decides when a freshly started agent can take traffic. */
export interface ReadinessProbe {
  /** Resolves true once the agent at `address` reports SERVING, false if aborted first. */
  waitUntilServing(address: string, options: ReadinessProbeOptions): Promise<boolean>;
}

// An agent binds its port a few ms after spawn; grpc-js would otherwise wait its default 1 s
// reconnect backoff after the first refused connection and blow the start-to-READY budget.
const probeChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 20,
  "grpc.max_reconnect_backoff_ms": 100,
  // A private pool so a probe never shares (or keeps alive) a subchannel of the data plane.
  "grpc.use_local_subchannel_pool": 1,
};

/** Per-call deadline: a hung agent must not stall polling past the readiness timeout for long. */
const checkDeadlineMs = 500;

interface HealthCheckResponse {
  status?: string;
}

/** Polls the agent's own grpc.health.v1.Health/Check until it answers SERVING. */
export function createGrpcHealthProbe(): ReadinessProbe {
  return {
    async waitUntilServing(address, options) {
      const client = new Client(address, credentials.createInsecure(), probeChannelOptions);
      try {
        while (!options.signal.aborted) {
          if ((await checkOnce(client, options.service)) === "SERVING") return true;
          await pause(options.intervalMs, options.signal);
        }
        return false;
      } finally {
        client.close();
      }
    },
  };
}

/** One grpc.health.v1 Check after READY: SERVING, an answer that is not SERVING, or none in time. */
export type HealthAnswer = "serving" | "not-serving" | "no-answer";

/** Checks one agent's health port; one channel for the life of a process. */
export interface HealthChecker {
  check(service: string, deadlineMs: number): Promise<HealthAnswer>;
  close(): void;
}

export type HealthCheckerFactory = (address: string) => HealthChecker;

export const createGrpcHealthChecker: HealthCheckerFactory = (address) => {
  const client = new Client(address, credentials.createInsecure(), probeChannelOptions);
  return {
    check: (service, deadlineMs) =>
      new Promise((resolve) => {
        call(client, service, deadlineMs, (error, response) => {
          if (error === null) resolve(response?.status === "SERVING" ? "serving" : "not-serving");
          // No connection, or no answer in time: the agent is not answering. Any other status
          // (NOT_FOUND for the service, UNIMPLEMENTED) is an answer, just not SERVING.
          else resolve(error.code === status.DEADLINE_EXCEEDED || error.code === status.UNAVAILABLE ? "no-answer" : "not-serving");
        });
      }),
    close: () => client.close(),
  };
};

function checkOnce(client: Client, service: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    // Not listening yet (UNAVAILABLE), NOT_FOUND for the service, deadline: all mean "not yet".
    call(client, service, checkDeadlineMs, (error, response) => resolve(error === null ? response?.status : undefined));
  });
}

function call(
  client: Client,
  service: string,
  deadlineMs: number,
  done: (error: ServiceError | null, response?: HealthCheckResponse) => void,
): void {
  const method = healthService.Check;
  if (method === undefined) throw new Error("grpc-health-check has no Check method");
  client.makeUnaryRequest<{ service: string }, HealthCheckResponse>(
    method.path,
    method.requestSerialize,
    method.responseDeserialize as (bytes: Buffer) => HealthCheckResponse,
    { service },
    { deadline: Date.now() + deadlineMs },
    (error: ServiceError | null, response?: HealthCheckResponse) => done(error, response),
  );
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
