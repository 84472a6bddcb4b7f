import {
  type ChannelCredentials,
  type ClientDuplexStream,
  Metadata,
  type ServiceError,
  credentials as grpcCredentials,
  status,
} from "@grpc/grpc-js";
import { Backoff } from "../core/backoff.js";
import { parseLabelSelector } from "../core/label-selector.js";
import { parseSpiffeId } from "../core/spiffe-id.js";
import {
  type ConnectRequest,
  type ConnectResponse,
  Hello,
  type InstanceHeartbeat,
  OrchestratorServiceClient,
} from "../gen/agentmesh/v1/orchestrator.js";
import {
  type DiscoverResponse,
  type LabelSelector,
  type RegisterBatchRequest,
  type RegisterBatchResponse,
  RegisterRequest,
  RegistryServiceClient,
  type WatchResponse,
} from "../gen/agentmesh/v1/registry.js";
import type { EnvelopeSigner } from "./mesh-identity.js";
import { type AgentInstance, type AgentManifest, HealthState, type Load } from "../gen/agentmesh/v1/types.js";

/** Where the control plane is, how to reach it, and what this client announces. */
export interface MeshClientOptions {
  /** Control-plane address, `host:port`. */
  address: string;
  /** mTLS credentials; plaintext (dev mode servers only) when absent. */
  credentials?: ChannelCredentials;
  /** Signs Register and Hello (required by servers running mTLS). */
  signer?: EnvelopeSigner;
  /** Identifies this client's Connect stream (a sidecar uses its host name). */
  sidecarId: string;
  host?: string;
  /** Extra channel options, e.g. a shared subchannel pool key. */
  channelOptions?: Record<string, string | number>;
  /** Called on stream-level problems and reconnects; never throws. */
  onEvent?: (event: MeshClientEvent) => void;
  /** Where other sidecars reach this one (data plane), announced in Hello. */
  inboundEndpoint?: string;
  /** Managed agents this client accepts (0 = unmanaged only). */
  capacity?: number;
  /** Called with commands the server sends on Connect (lifecycle). */
  onCommand?: (response: ConnectResponse) => void;
}

/** What happened to the Connect stream, for logs and tests. */
export type MeshClientEvent =
  | { type: "connected"; unknownInstanceIds: string[] }
  | { type: "disconnected"; code: number; details: string; retryInMs: number }
  | { type: "streamError"; code: number; message: string; instanceId: string }
  | { type: "shutdown"; reason: string };

/** How {@link MeshClient.register} registers an instance. */
export interface RegisterOptions {
  instanceId?: string;
  endpoint?: string;
  /** Set by a sidecar starting a managed agent for a deployment. */
  deployment?: string;
  /** STARTING keeps the instance alive but out of routing until the agent is ready. */
  reportedState?: HealthState;
}

/** One registered agent instance kept alive by a MeshClient. */
export class AgentHandle {
  load: Load = { inFlight: 0, queueDepth: 0, cpuMillis: 0, rssBytes: 0, p50Ms: 0, errorRate: 0 };
  reportedState: HealthState = HealthState.HEALTH_STATE_READY;
  /** While paused the instance sends no heartbeats (the server will find it silent). */
  paused = false;

  constructor(
    readonly instance: AgentInstance,
    readonly manifest: AgentManifest,
    readonly registerOptions: RegisterOptions,
  ) {}

  get instanceId(): string {
    return this.instance.instanceId;
  }

  get heartbeatIntervalMs(): number {
    const interval = this.manifest.healthPolicy?.heartbeatIntervalMs ?? 0;
    return interval === 0 ? 1000 : interval;
  }
}

/**
 * The TypeScript SDK's control-plane client: registers agents, keeps ONE Connect
 * stream for all of them with heartbeats batched per interval, reconnects with
 * backoff (re-registering what the server forgot), and offers discovery.
 */
export class MeshClient {
  readonly registry: RegistryServiceClient;
  readonly orchestrator: OrchestratorServiceClient;
  private readonly agents = new Map<string, AgentHandle>();
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private stream: ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private sequence = 0;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff();
  private connectedWaiters: Array<() => void> = [];
  private connected = false;
  private readonly audience: string;

  constructor(private readonly options: MeshClientOptions) {
    const channelCredentials = options.credentials ?? grpcCredentials.createInsecure();
    const channelOptions = {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      // Servers are verified by SPIFFE ID, not host name; a fixed TLS server name
      // also keeps Node from warning about IP addresses as SNI.
      ...(options.credentials ? { "grpc.ssl_target_name_override": "agentmesh-server" } : {}),
      ...options.channelOptions,
    };
    this.registry = new RegistryServiceClient(options.address, channelCredentials, channelOptions);
    this.audience = options.signer ? `spiffe://${parseSpiffeId(options.signer.spiffeId).trustDomain}/server` : "";
    // Identical target and options: grpc-js's subchannel pool gives both one connection.
    this.orchestrator = new OrchestratorServiceClient(options.address, channelCredentials, channelOptions);
  }

  /** Registers an agent instance and starts heartbeating for it on the Connect stream. */
  async register(manifest: AgentManifest, registerOptions: RegisterOptions = {}): Promise<AgentHandle> {
    const instance = await this.registerRaw(manifest, registerOptions);
    const handle = new AgentHandle(instance, manifest, registerOptions);
    if (registerOptions.reportedState !== undefined) handle.reportedState = registerOptions.reportedState;
    this.agents.set(instance.instanceId, handle);
    this.ensureTimer(handle.heartbeatIntervalMs);
    if (this.stream && this.connected) {
      // Announce at once so the instance turns READY without waiting for the next tick.
      this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: [this.beatOf(handle, true)] } } });
    } else {
      this.openStream();
    }
    return handle;
  }

  /**
   * Registers many agents in one RegisterBatch call and announces them on the
   * Connect stream in one message. Each item succeeds or fails on its own.
   */
  async registerMany(items: Array<{ manifest: AgentManifest; options?: RegisterOptions }>): Promise<{ handles: AgentHandle[]; failures: Array<{ index: number; code: number; message: string }> }> {
    const response = await unaryCall<RegisterBatchRequest, RegisterBatchResponse>((call, metadata, callback) => this.registry.registerBatch(call, metadata, callback))({
      registrations: items.map((item) => this.registerRequest(item.manifest, item.options ?? {})),
    });
    const handles: AgentHandle[] = [];
    const failures: Array<{ index: number; code: number; message: string }> = [];
    response.results.forEach((result, index) => {
      const item = items[index];
      if (result.code !== status.OK || !result.instance || !item) {
        failures.push({ index, code: result.code, message: result.message });
        return;
      }
      const handle = new AgentHandle(result.instance, item.manifest, item.options ?? {});
      if (item.options?.reportedState !== undefined) handle.reportedState = item.options.reportedState;
      this.agents.set(handle.instanceId, handle);
      this.ensureTimer(handle.heartbeatIntervalMs);
      handles.push(handle);
    });
    if (this.stream && this.connected && handles.length > 0) {
      this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: handles.map((handle) => this.beatOf(handle, true)) } } });
    } else {
      this.openStream();
    }
    return { handles, failures };
  }

  async deregister(handle: AgentHandle, reason = "deregistered by client"): Promise<void> {
    this.agents.delete(handle.instanceId);
    await unaryCall<{ instanceId: string; reason: string }, unknown>((request, metadata, callback) =>
      this.registry.deregister(request, metadata, callback),
    )({ instanceId: handle.instanceId, reason });
  }

  async discover(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance[]> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await unaryCall<Parameters<RegistryServiceClient["discover"]>[0], DiscoverResponse>((request, metadata, callback) =>
      this.registry.discover(request, metadata, callback),
    )({ capability, versionRange, labelSelector: selector, limit: 0, includeUnhealthy: false });
    return response.instances;
  }

  async resolve(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await unaryCall<Parameters<OrchestratorServiceClient["resolve"]>[0], { instance?: AgentInstance }>(
      (request, metadata, callback) => this.orchestrator.resolve(request, metadata, callback),
    )({ capability, versionRange, labelSelector: selector, excludeInstanceIds: [] });
    if (!response.instance) throw new Error("resolve returned no instance");
    return response.instance;
  }

  /** Streams registry changes; returns a function that stops the stream. */
  watch(
    onEvent: (event: WatchResponse) => void,
    options: { sinceRevision?: number; capability?: string; onError?: (error: ServiceError) => void; onEnd?: () => void } = {},
  ): () => void {
    const call = this.registry.watch({ sinceRevision: options.sinceRevision ?? 0, capability: options.capability ?? "" });
    call.on("data", onEvent);
    call.on("error", (error: ServiceError) => {
      if (error.code !== status.CANCELLED) options.onError?.(error);
    });
    // The server ended the stream cleanly (it is shutting down): the caller may want to resume elsewhere.
    call.on("status", (result: { code: number }) => {
      if (result.code === status.OK) options.onEnd?.();
    });
    return () => call.cancel();
  }

  /** Resolves once the Connect stream is open and welcomed. */
  waitConnected(): Promise<void> {
    if (this.connected) return Promise.resolve();
    this.openStream();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  /** Sends one heartbeat round for every agent now (tests and shutdown use it). */
  heartbeatNow(): void {
    const beats = [...this.agents.values()].filter((handle) => !handle.paused).map((handle) => this.beatOf(handle, false));
    if (beats.length > 0) this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: beats } } });
  }

  /** Sends one heartbeat for one instance now (for example the moment it becomes ready). */
  beat(handle: AgentHandle): void {
    if (!this.connected || handle.paused) return;
    this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: [this.beatOf(handle, true)] } } });
  }

  /** Answers a lifecycle command the server sent on Connect. */
  sendCommandResult(result: { commandId: string; ok: boolean; message: string; instanceId: string }): void {
    this.send({ msg: { $case: "commandResult", value: result } });
  }

  /** Stops heartbeating for an instance without deregistering it. */
  forget(handle: AgentHandle): void {
    this.agents.delete(handle.instanceId);
  }

  /** Reports a state change of a local instance at once (crash, drain, stop). */
  reportState(handle: AgentHandle, state: HealthState, reason: string, exitCode = 0): void {
    this.send({ msg: { $case: "instanceEvent", value: { instanceId: handle.instanceId, state, reason, exitCode } } });
  }

  /** Drops the Connect stream without telling the server (simulates a network cut). */
  cutStream(): void {
    this.stream?.cancel();
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers.values()) clearInterval(timer);
    this.timers.clear();
    clearTimeout(this.reconnectTimer);
    this.stream?.end();
    this.stream = undefined;
    this.registry.close();
    this.orchestrator.close();
  }

  private async registerRaw(manifest: AgentManifest, registerOptions: RegisterOptions): Promise<AgentInstance> {
    const response = await unaryCall<RegisterRequest, { instance?: AgentInstance }>((call, metadata, callback) =>
      this.registry.register(call, metadata, callback),
    )(this.registerRequest(manifest, registerOptions));
    if (!response.instance) throw new Error("register returned no instance");
    return response.instance;
  }

  /** The RegisterRequest for one agent; signed (the server then reads only the envelope) when there is a signer. */
  private registerRequest(manifest: AgentManifest, registerOptions: RegisterOptions): RegisterRequest {
    const inner: RegisterRequest = {
      manifest,
      instanceId: registerOptions.instanceId ?? "",
      endpoint: registerOptions.endpoint ?? "",
      host: this.options.host ?? this.options.sidecarId,
      envelope: undefined,
      deployment: registerOptions.deployment ?? "",
    };
    const signer = this.options.signer;
    if (!signer) return inner;
    return {
      ...RegisterRequest.fromPartial({}),
      envelope: signer.sign(RegisterRequest.encode(inner).finish(), "/agentmesh.v1.RegistryService/Register", "agentmesh.v1.RegisterRequest", this.audience),
    };
  }

  private openStream(): void {
    if (this.stream || this.closed) return;
    const stream = this.orchestrator.connect(new Metadata());
    this.stream = stream;
    this.sequence = 0;
    stream.on("data", (response: ConnectResponse) => this.onResponse(response));
    stream.on("error", (error: ServiceError) => this.onStreamEnd(stream, error.code, error.details));
    stream.on("end", () => this.onStreamEnd(stream, status.OK, "stream ended"));
    const hello: Hello = {
      sidecarId: this.options.sidecarId,
      host: this.options.host ?? this.options.sidecarId,
      instanceIds: [...this.agents.keys()],
      inboundEndpoint: this.options.inboundEndpoint ?? "",
      capacity: this.options.capacity ?? 0,
      envelope: undefined,
    };
    const signer = this.options.signer;
    if (signer) {
      hello.envelope = signer.sign(Hello.encode(hello).finish(), "/agentmesh.v1.OrchestratorService/Connect", "agentmesh.v1.Hello", this.audience);
    }
    stream.write({ msg: { $case: "hello", value: hello } });
  }

  private onResponse(response: ConnectResponse): void {
    const message = response.msg;
    if (!message) return;
    switch (message.$case) {
      case "welcome": {
        this.connected = true;
        this.backoff.reset();
        const unknown = message.value.unknownInstanceIds;
        this.options.onEvent?.({ type: "connected", unknownInstanceIds: unknown });
        this.reregister(unknown);
        // Announce everything: agents registered while the stream was opening were not in Hello.
        const unknownIds = new Set(unknown);
        const beats = [...this.agents.values()].filter((handle) => !handle.paused && !unknownIds.has(handle.instanceId));
        if (beats.length > 0) {
          this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: beats.map((handle) => this.beatOf(handle, true)) } } });
        }
        for (const resolve of this.connectedWaiters.splice(0)) resolve();
        return;
      }
      case "error":
        this.options.onEvent?.({ type: "streamError", ...message.value });
        return;
      case "shutdown":
        this.options.onEvent?.({ type: "shutdown", reason: message.value.reason });
        return;
      case "command":
        this.options.onCommand?.(response);
        return;
    }
  }

  /** The server lost these instances (it restarted): register them again, in one batch, under the same ids. */
  private reregister(instanceIds: string[]): void {
    const handles = instanceIds.map((instanceId) => this.agents.get(instanceId)).filter((handle): handle is AgentHandle => handle !== undefined);
    if (handles.length === 0) return;
    unaryCall<RegisterBatchRequest, RegisterBatchResponse>((call, metadata, callback) => this.registry.registerBatch(call, metadata, callback))({
      registrations: handles.map((handle) => this.registerRequest(handle.manifest, { ...handle.registerOptions, instanceId: handle.instanceId })),
    }).then(
      (response) => {
        const registered = handles.filter((handle, index) => {
          const result = response.results[index];
          if (result?.code === status.OK) return true;
          this.options.onEvent?.({ type: "streamError", code: result?.code ?? status.UNKNOWN, message: result?.message ?? "re-register failed", instanceId: handle.instanceId });
          return false;
        });
        if (registered.length > 0) {
          this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: registered.map((handle) => this.beatOf(handle, true)) } } });
        }
      },
      (error: ServiceError) =>
        this.options.onEvent?.({ type: "streamError", code: error.code ?? status.UNKNOWN, message: error.details ?? "re-register failed", instanceId: "" }),
    );
  }

  private onStreamEnd(stream: ClientDuplexStream<ConnectRequest, ConnectResponse>, code: number, details: string): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.connected = false;
    if (this.closed) return;
    const retryInMs = this.backoff.nextDelayMs();
    this.options.onEvent?.({ type: "disconnected", code, details, retryInMs });
    this.reconnectTimer = setTimeout(() => this.openStream(), retryInMs);
  }

  private ensureTimer(intervalMs: number): void {
    if (this.timers.has(intervalMs)) return;
    const timer = setInterval(() => this.tick(intervalMs), intervalMs);
    this.timers.set(intervalMs, timer);
  }

  private tick(intervalMs: number): void {
    if (!this.connected) return;
    const beats: InstanceHeartbeat[] = [];
    for (const handle of this.agents.values()) {
      if (handle.paused || handle.heartbeatIntervalMs !== intervalMs) continue;
      beats.push(this.beatOf(handle, false));
    }
    if (beats.length > 0) this.send({ msg: { $case: "heartbeat", value: { sequence: this.nextSequence(), instances: beats } } });
  }

  private beatOf(handle: AgentHandle, announce: boolean): InstanceHeartbeat {
    return { instanceId: handle.instanceId, load: handle.load, reportedState: handle.reportedState, announce };
  }

  private nextSequence(): number {
    this.sequence += 1;
    return this.sequence;
  }

  private send(request: ConnectRequest): void {
    this.stream?.write(request);
  }
}

type UnaryInvoker<Request, Response> = (
  request: Request,
  metadata: Metadata,
  callback: (error: ServiceError | null, response: Response) => void,
) => unknown;

function unaryCall<Request, Response>(invoke: UnaryInvoker<Request, Response>) {
  return (request: Request): Promise<Response> =>
    new Promise((resolve, reject) => {
      invoke(request, new Metadata(), (error, response) => (error ? reject(error) : resolve(response)));
    });
}
