import { type ChannelCredentials, type ChannelOptions, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MeshError } from "../mesh-error.js";
import {
  AgentServiceClient,
  type AgentServiceInvokeStreamResponse,
  type Invocation,
} from "../../gen/agentmesh/v1/agent.js";
import type { CallOptions } from "./call-multiplexer.js";
import type { CallSignal } from "./call-signal.js";
import { type CallStatusError, errorFromStatus } from "./call-status.js";
import type { CallReply } from "./frames.js";
import { silentLogger } from "./silent-logger.js";

export interface AgentClientPoolOptions {
  /** Agents listen on localhost; plaintext by default. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  logger?: Logger;
}

// Statuses grpc-js makes up itself (connection refused, local deadline, local
// cancel) carry addresses and timings in their details: the caller gets a fixed
// message and the details go to the log. Statuses the agent chose pass through.
const localMessageByCode: Partial<Record<status, string>> = {
  [status.UNAVAILABLE]: "agent unavailable",
  [status.DEADLINE_EXCEEDED]: "deadline exceeded",
  [status.CANCELLED]: "call cancelled",
  [status.UNKNOWN]: "agent failed",
  [status.INTERNAL]: "agent failed",
};

/**
 * Dispatches invocations to agents without an SDK: unary AgentService.Invoke
 * (or InvokeStream) on the agent's own address, one cached channel per address.
 * HTTP/2 already multiplexes calls on that one loopback connection.
 */
export class AgentClientPool {
  private readonly clients = new Map<string, AgentServiceClient>();
  private readonly credentials: ChannelCredentials;
  private readonly logger: Logger;

  constructor(private readonly options: AgentClientPoolOptions = {}) {
    this.credentials = options.credentials ?? credentials.createInsecure();
    this.logger = (options.logger ?? silentLogger).child({ component: "agent-client" });
  }

  invoke(address: string, invocation: Invocation, options: CallOptions = {}): Promise<CallReply> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(cancelledBy(signal));
    return new Promise((resolve, reject) => {
      const call = this.client(address).invoke(
        { invocation },
        new Metadata(),
        { deadline: deadlineOf(options) },
        (error, response) => {
          signal?.removeEventListener("abort", onAbort);
          if (error !== null) reject(signal?.aborted ? cancelledBy(signal) : this.toCallError(error, address));
          else resolve({ payload: response.payload, contentType: response.contentType });
        },
      );
      const onAbort = (): void => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async *invokeStream(address: string, invocation: Invocation, options: CallOptions = {}): AsyncGenerator<Buffer> {
    const { signal } = options;
    if (signal?.aborted) throw cancelledBy(signal);
    const call = this.client(address).invokeStream({ invocation }, new Metadata(), { deadline: deadlineOf(options) });
    const onAbort = (): void => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      // The readable's own iterator pauses the HTTP/2 stream while our consumer is slow.
      for await (const message of call as AsyncIterable<AgentServiceInvokeStreamResponse>) yield message.payload;
    } catch (error) {
      throw signal?.aborted ? cancelledBy(signal) : this.toCallError(error as ServiceError, address);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      // A consumer that left early: stop the agent's work (no-op after a normal end).
      call.cancel();
    }
  }

  /** Closes the channel to an agent that is gone (stopped, restarted on a new port). */
  forget(address: string): void {
    this.clients.get(address)?.close();
    this.clients.delete(address);
  }

  close(): void {
    for (const address of [...this.clients.keys()]) this.forget(address);
  }

  private client(address: string): AgentServiceClient {
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new AgentServiceClient(address, this.credentials, this.options.channelOptions);
      this.clients.set(address, client);
    }
    return client;
  }

  private toCallError(error: ServiceError, address: string): MeshError | CallStatusError {
    const localMessage = localMessageByCode[error.code];
    if (localMessage === undefined) return errorFromStatus(error.code, error.details);
    this.logger.warn({ agentAddress: address, code: error.code, details: error.details }, "agent call failed");
    return errorFromStatus(error.code, localMessage);
  }
}

function deadlineOf(options: CallOptions): number {
  return options.deadlineMs !== undefined && options.deadlineMs > 0 ? options.deadlineMs : Number.POSITIVE_INFINITY;
}

function cancelledBy(signal: CallSignal): MeshError {
  return signal.reason instanceof MeshError ? signal.reason : new MeshError("cancelled", "call cancelled");
}
