import {
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientReadableStream,
  Metadata,
  type ServiceError,
  connectivityState,
  credentials as grpcCredentials,
  status,
} from "@grpc/grpc-js";
import { Backoff, defaultReconnectBackoff } from "../core/backoff.js";
import { parseLabelSelector } from "../core/label-selector.js";
import { parseSpiffeId } from "../core/spiffe-id.js";
import {
  type ConnectRequest,
  type ConnectResponse,
  type Revocations,
  type DataPlaneRefusals,
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
  /**
   * Control-plane address, `host:port`, or the addresses of several replicas: the
   * client uses one at a time, in order, and moves to the next when it cannot open
   * its Connect stream there or loses it (after each full round, the backoff).
   */
  address: string | readonly string[];
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
  /** The mesh's revoked certificates: the whole list after a Welcome (when any), then each new revocation (docs/signing.md §8.6). */
  onRevocations?: (revocations: Revocations) => void;
  /** Our certificate source: on renewal the client moves to a connection showing the new certificate. */
  renewals?: { onChange(listener: () => void): () => void };
  /** Totals of calls the data plane refused at admission, by reason, reported on the Connect stream. */
  dataPlaneRefusals?: () => ReadonlyMap<string, number>;
  /** Called when the client moved to a new connection without a break (GOAWAY, renewal). */
  onRotated?: (reason: string) => void;
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

/** One connection to the control plane: both services' clients on one channel of its own. */
interface ControlChannel {
  readonly id: number;
  readonly registry: RegistryServiceClient;
  readonly orchestrator: OrchestratorServiceClient;
  /** Unary calls and streams still running on it. */
  users: number;
  retired: boolean;
  closed: boolean;
}

/** One Connect stream and its own heartbeat sequence. */
interface ConnectStream {
  readonly call: ClientDuplexStream<ConnectRequest, ConnectResponse>;
  readonly channel: ControlChannel;
  sequence: number;
  welcomed: boolean;
  ended: boolean;
  /** Refusal totals already sent on this stream. */
  readonly reportedRefusals: Map<string, number>;
}

interface WatchOptions {
  sinceRevision?: number;
  /** The epoch sinceRevision came from (a Watch or Discover answer); required with it. */
  epoch?: string;
  capability?: string;
  onError?: (error: ServiceError) => void;
  onEnd?: () => void;
}

/** One Watch call; a watch has one, plus a second while it moves to a new connection. */
interface WatchCall {
  readonly call: ClientReadableStream<WatchResponse>;
  readonly channel: ControlChannel;
  /** Replaced or stopped: its events and its end are not ours any more. */
  dropped: boolean;
}

interface WatchState {
  readonly onEvent: (event: WatchResponse) => void;
  readonly options: WatchOptions;
  /** Highest revision handed to onEvent: a new call resumes from it. */
  lastRevision: number;
  /** The registry history lastRevision belongs to. */
  epoch: string;
  primary: WatchCall | undefined;
  pending: WatchCall | undefined;
  /** After a move: events up to this revision were delivered by the old call already. */
  skipThrough: number;
  stopped: boolean;
}

// How long a replaced Connect stream may take to end after we half-closed it.
const replacedStreamGraceMs = 10_000;

/**
 * The TypeScript SDK's control-plane client: registers agents, keeps ONE Connect
 * stream for all of them with heartbeats batched per interval, reconnects with
 * backoff (re-registering what the server forgot), and offers discovery.
 *
 * Connections are replaced make-before-break (docs/adr/0006-tunnel-rotation.md):
 * when the server retires the connection (GOAWAY, `--max-connection-age`) or our
 * certificate is renewed, a new connection opens, the Connect stream says Hello
 * on it and takes the instances over, each Watch resumes on it from its last
 * revision, new unary calls go there, and the old streams end once replaced. No
 * instance changes state, no Watch event is missed or repeated.
 */
export class MeshClient {
  private readonly agents = new Map<string, AgentHandle>();
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly channelOptions: Record<string, string | number>;
  private readonly channelCredentials: ChannelCredentials;
  private channel: ControlChannel;
  private readonly channels = new Set<ControlChannel>();
  private channelIds = 0;
  private stream: ConnectStream | undefined;
  /** The Connect stream opening on a new connection while `stream` still serves. */
  private nextStream: ConnectStream | undefined;
  private readonly watches = new Set<WatchState>();
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private rotationTimer: NodeJS.Timeout | undefined;
  private rotationReason = "";
  private readonly backoff = new Backoff();
  /**
   * Between rounds over several replicas: capped at 1 s, not 5 s. A dead replica
   * refuses at once, so a round costs little, and a replica that comes back (or a
   * whole control plane restarting) is found within a second of listening.
   */
  private readonly failoverBackoff = new Backoff({ ...defaultReconnectBackoff, maxMs: 1000 });
  private readonly rotationBackoff = new Backoff();
  private connectedWaiters: Array<() => void> = [];
  private connected = false;
  /** "connected" is said once at first, then once after each "disconnected"; never for a move. */
  private connectedEventDue = true;
  private rotateOnWelcome = false;
  private readonly audience: string;
  private readonly stopRenewals: (() => void) | undefined;
  private rotationCount = 0;
  private readonly addresses: readonly string[];
  private addressIndex = 0;
  /** Connect streams lost (or never welcomed) since the last welcome, in this round over the addresses. */
  private failuresInRound = 0;

  constructor(private readonly options: MeshClientOptions) {
    this.channelCredentials = options.credentials ?? grpcCredentials.createInsecure();
    this.channelOptions = {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      // Servers are verified by SPIFFE ID, not host name; a fixed TLS server name
      // also keeps Node from warning about IP addresses as SNI.
      ...(options.credentials ? { "grpc.ssl_target_name_override": "agentmesh-server" } : {}),
      ...options.channelOptions,
    };
    this.audience = options.signer ? `spiffe://${parseSpiffeId(options.signer.spiffeId).trustDomain}/server` : "";
    this.addresses = typeof options.address === "string" ? [options.address] : [...options.address];
    if (this.addresses.length === 0) throw new Error("MeshClient: at least one control-plane address required");
    this.channel = this.openChannel();
    this.stopRenewals = options.renewals?.onChange(() => this.requestRotation("certificate renewed"));
    // Refusal totals travel in status messages, checked once a second.
    if (options.dataPlaneRefusals) this.ensureTimer(1000);
  }

  /** The control-plane address in use now. */
  get address(): string {
    return this.addresses[this.addressIndex] as string;
  }

  /** RegistryService on the current connection. */
  get registry(): RegistryServiceClient {
    return this.channel.registry;
  }

  /** OrchestratorService on the current connection. */
  get orchestrator(): OrchestratorServiceClient {
    return this.channel.orchestrator;
  }

  /** Times the client moved to a new connection without a break. */
  get rotations(): number {
    return this.rotationCount;
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
      this.sendHeartbeat([this.beatOf(handle, true)]);
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
    const response = await this.unary<RegisterBatchRequest, RegisterBatchResponse>((channel, call, metadata, callback) => channel.registry.registerBatch(call, metadata, callback))({
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
      this.sendHeartbeat(handles.map((handle) => this.beatOf(handle, true)));
    } else {
      this.openStream();
    }
    return { handles, failures };
  }

  async deregister(handle: AgentHandle, reason = "deregistered by client"): Promise<void> {
    this.agents.delete(handle.instanceId);
    await this.unary<{ instanceId: string; reason: string }, unknown>((channel, request, metadata, callback) => channel.registry.deregister(request, metadata, callback))({
      instanceId: handle.instanceId,
      reason,
    });
  }

  async discover(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance[]> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await this.unary<Parameters<RegistryServiceClient["discover"]>[0], DiscoverResponse>((channel, request, metadata, callback) =>
      channel.registry.discover(request, metadata, callback),
    )({ capability, versionRange, labelSelector: selector, limit: 0, includeUnhealthy: false });
    return response.instances;
  }

  async resolve(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await this.unary<Parameters<OrchestratorServiceClient["resolve"]>[0], { instance?: AgentInstance }>((channel, request, metadata, callback) =>
      channel.orchestrator.resolve(request, metadata, callback),
    )({ capability, versionRange, labelSelector: selector, excludeInstanceIds: [] });
    if (!response.instance) throw new Error("resolve returned no instance");
    return response.instance;
  }

  /**
   * Streams registry changes; returns a function that stops the stream. The watch
   * follows the client onto new connections by itself (resuming from its last
   * revision, without repeats); `onError` and `onEnd` report only a real break.
   */
  watch(onEvent: (event: WatchResponse) => void, options: WatchOptions = {}): () => void {
    const watch: WatchState = {
      onEvent,
      options,
      lastRevision: options.sinceRevision ?? 0,
      epoch: options.epoch ?? "",
      primary: undefined,
      pending: undefined,
      skipThrough: 0,
      stopped: false,
    };
    watch.primary = this.openWatchCall(watch, options.sinceRevision ?? 0);
    this.watches.add(watch);
    return () => this.stopWatch(watch);
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
    if (beats.length > 0) this.sendHeartbeat(beats);
  }

  /** Sends one heartbeat for one instance now (for example the moment it becomes ready). */
  beat(handle: AgentHandle): void {
    if (!this.connected || handle.paused) return;
    this.sendHeartbeat([this.beatOf(handle, true)]);
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
    this.stream?.call.cancel();
  }

  /**
   * Moves to a new connection, make-before-break. Happens by itself on GOAWAY and
   * on certificate renewal; harmless at any time.
   */
  rotate(reason = "requested"): void {
    this.requestRotation(reason);
  }

  close(): void {
    this.closed = true;
    this.stopRenewals?.();
    for (const timer of this.timers.values()) clearInterval(timer);
    this.timers.clear();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.rotationTimer);
    for (const watch of [...this.watches]) this.stopWatch(watch);
    this.nextStream?.call.cancel();
    this.nextStream = undefined;
    this.stream?.call.end();
    this.stream = undefined;
    for (const channel of this.channels) this.closeChannel(channel);
  }

  private async registerRaw(manifest: AgentManifest, registerOptions: RegisterOptions): Promise<AgentInstance> {
    const response = await this.unary<RegisterRequest, { instance?: AgentInstance }>((channel, call, metadata, callback) => channel.registry.register(call, metadata, callback))(
      this.registerRequest(manifest, registerOptions),
    );
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

  // --- connections -------------------------------------------------------------

  private openChannel(): ControlChannel {
    // A channel of its own (local subchannel pool): grpc-js would otherwise hand an
    // equal channel the connection being replaced, with the certificate being replaced.
    const options = { ...this.channelOptions, "grpc.use_local_subchannel_pool": 1 };
    const registry = new RegistryServiceClient(this.address, this.channelCredentials, options);
    const orchestrator = new OrchestratorServiceClient(this.address, this.channelCredentials, { ...options, channelOverride: registry.getChannel() });
    this.channelIds += 1;
    const channel: ControlChannel = { id: this.channelIds, registry, orchestrator, users: 0, retired: false, closed: false };
    this.channels.add(channel);
    this.watchConnectivity(channel);
    return channel;
  }

  /**
   * The channel leaves READY while streams are open on it: the server is retiring
   * the connection (GOAWAY) or going away. Either way the streams move to a new
   * connection now, not when grpc-js' next keepalive ping on the closing session
   * fails and takes every stream on it down (grpc-node#3068).
   */
  private watchConnectivity(channel: ControlChannel): void {
    const grpcChannel = channel.registry.getChannel();
    const watch = (state: connectivityState): void => {
      try {
        grpcChannel.watchConnectivityState(state, Number.POSITIVE_INFINITY, () => {
          if (channel.closed) return;
          const now = grpcChannel.getConnectivityState(false);
          if (state === connectivityState.READY && now !== connectivityState.READY && channel === this.channel && this.hasStreams()) {
            this.requestRotation("connection retiring");
          }
          watch(now);
        });
      } catch {
        // Closed meanwhile: nothing to watch.
      }
    };
    watch(grpcChannel.getConnectivityState(false));
  }

  private hasStreams(): boolean {
    return this.stream !== undefined || this.watches.size > 0;
  }

  private requestRotation(reason: string): void {
    if (this.closed) return;
    this.rotationReason = reason;
    // One renewal changes the trust bundle and the certificate: one move, on the next tick.
    if (this.rotationTimer !== undefined) return;
    this.rotationTimer = setTimeout(() => {
      this.rotationTimer = undefined;
      this.startRotation();
    }, 0);
  }

  private startRotation(): void {
    if (this.closed) return;
    const previous = this.channel;
    this.channel = this.openChannel();
    this.retire(previous);
    // A move already under way (its stream still opening) starts over on the newest connection.
    if (this.nextStream) this.abandonNextStream();
    if (this.stream?.welcomed) this.nextStream = this.openConnectStream();
    // A stream still saying Hello on the old connection moves once it is welcomed.
    else if (this.stream) this.rotateOnWelcome = true;
    for (const watch of this.watches) this.moveWatch(watch);
    this.rotationCount += 1;
  }

  private retire(channel: ControlChannel): void {
    channel.retired = true;
    this.maybeCloseChannel(channel);
  }

  private maybeCloseChannel(channel: ControlChannel): void {
    if (channel.retired && channel.users === 0) this.closeChannel(channel);
  }

  private closeChannel(channel: ControlChannel): void {
    if (channel.closed) return;
    channel.closed = true;
    this.channels.delete(channel);
    channel.registry.close();
  }

  /** A unary call on the current connection; it finishes there even if the client moves meanwhile. */
  private unary<Request, Response>(invoke: (channel: ControlChannel, request: Request, metadata: Metadata, callback: (error: ServiceError | null, response: Response) => void) => unknown) {
    return (request: Request): Promise<Response> => {
      const channel = this.channel;
      channel.users += 1;
      return new Promise<Response>((resolve, reject) => {
        invoke(channel, request, new Metadata(), (error, response) => (error ? reject(error) : resolve(response)));
      }).finally(() => {
        channel.users -= 1;
        this.maybeCloseChannel(channel);
      });
    };
  }

  // --- Connect -----------------------------------------------------------------

  private openStream(): void {
    if (this.stream || this.closed) return;
    this.stream = this.openConnectStream();
  }

  private openConnectStream(): ConnectStream {
    const channel = this.channel;
    const call = channel.orchestrator.connect(new Metadata());
    channel.users += 1;
    const stream: ConnectStream = { call, channel, sequence: 0, welcomed: false, ended: false, reportedRefusals: new Map() };
    call.on("data", (response: ConnectResponse) => this.onResponse(stream, response));
    call.on("error", (error: ServiceError) => this.onStreamEnd(stream, error.code, error.details));
    call.on("end", () => this.onStreamEnd(stream, status.OK, "stream ended"));
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
    call.write({ msg: { $case: "hello", value: hello } });
    return stream;
  }

  private onResponse(stream: ConnectStream, response: ConnectResponse): void {
    const message = response.msg;
    if (!message) return;
    switch (message.$case) {
      case "welcome": {
        stream.welcomed = true;
        if (stream === this.nextStream) this.promoteNextStream();
        if (stream !== this.stream) return;
        this.connected = true;
        this.backoff.reset();
        this.failoverBackoff.reset();
        this.failuresInRound = 0;
        const unknown = message.value.unknownInstanceIds;
        // A move to a new connection is not a reconnect: nothing was lost, nobody needs to hear.
        if (this.connectedEventDue) this.options.onEvent?.({ type: "connected", unknownInstanceIds: unknown });
        this.connectedEventDue = false;
        if (this.rotateOnWelcome) {
          this.rotateOnWelcome = false;
          if (stream.channel !== this.channel && !this.nextStream) this.nextStream = this.openConnectStream();
        }
        this.reregister(unknown);
        // Announce everything: agents registered while the stream was opening were not in Hello.
        const unknownIds = new Set(unknown);
        const beats = [...this.agents.values()].filter((handle) => !handle.paused && !unknownIds.has(handle.instanceId));
        if (beats.length > 0) this.sendHeartbeat(beats.map((handle) => this.beatOf(handle, true)));
        this.reportStatus();
        for (const resolve of this.connectedWaiters.splice(0)) resolve();
        return;
      }
      case "error":
        this.options.onEvent?.({ type: "streamError", ...message.value });
        return;
      case "shutdown":
        this.options.onEvent?.({ type: "shutdown", reason: message.value.reason });
        return;
      // Commands still arriving on a replaced stream are carried out like any other.
      case "command":
        this.options.onCommand?.(response);
        return;
      case "revocations":
        this.options.onRevocations?.(message.value);
        return;
    }
  }

  /** The new stream was welcomed: it speaks for our instances now; the old one half-closes. */
  private promoteNextStream(): void {
    const previous = this.stream;
    const next = this.nextStream;
    if (!next) return;
    this.stream = next;
    this.nextStream = undefined;
    this.rotationBackoff.reset();
    if (previous) this.endReplaced(previous);
    this.options.onRotated?.(this.rotationReason);
  }

  private endReplaced(stream: ConnectStream): void {
    if (stream.ended) return;
    stream.call.end();
    // The server ends its side when it sees ours; a server that never does still lets the connection go.
    setTimeout(() => {
      if (!stream.ended) stream.call.cancel();
    }, replacedStreamGraceMs).unref();
  }

  private abandonNextStream(): void {
    const next = this.nextStream;
    this.nextStream = undefined;
    next?.call.cancel();
  }

  private onStreamEnd(stream: ConnectStream, code: number, details: string): void {
    if (stream.ended) return;
    stream.ended = true;
    stream.channel.users -= 1;
    this.maybeCloseChannel(stream.channel);
    if (stream === this.nextStream) {
      // The new connection did not work out; the current stream carries on, and we try again.
      this.nextStream = undefined;
      if (!this.closed && this.stream && !this.stream.ended) this.retryRotation();
      return;
    }
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.connected = false;
    if (this.nextStream) {
      // The old connection went while its successor was opening (not welcomed yet, or it
      // would have taken over): carry on with that one; heartbeats resume at its welcome.
      this.stream = this.nextStream;
      this.nextStream = undefined;
      return;
    }
    if (this.closed) return;
    const retryInMs = this.addresses.length > 1 ? this.failOver() : this.backoff.nextDelayMs();
    this.connectedEventDue = true;
    this.options.onEvent?.({ type: "disconnected", code, details, retryInMs });
    this.reconnectTimer = setTimeout(() => this.openStream(), retryInMs);
  }

  /**
   * Several replicas: the stream is lost (or never opened) here, so the next attempt
   * goes to the next address, on a connection of its own (a fresh channel, not one
   * waiting out grpc-js' reconnect backoff to a dead address). The addresses are tried
   * one after another at once; only after a full round that all failed comes the
   * backoff delay. Answers the delay.
   */
  private failOver(): number {
    const previous = this.channel;
    this.addressIndex = (this.addressIndex + 1) % this.addresses.length;
    this.channel = this.openChannel();
    this.retire(previous);
    this.failuresInRound += 1;
    if (this.failuresInRound < this.addresses.length) return 0;
    this.failuresInRound = 0;
    return this.failoverBackoff.nextDelayMs();
  }

  private retryRotation(): void {
    clearTimeout(this.rotationTimer);
    this.rotationTimer = setTimeout(() => {
      this.rotationTimer = undefined;
      this.startRotation();
    }, this.rotationBackoff.nextDelayMs());
  }

  // --- Watch -------------------------------------------------------------------

  private openWatchCall(watch: WatchState, sinceRevision: number): WatchCall {
    const channel = this.channel;
    const call = channel.registry.watch({ sinceRevision, capability: watch.options.capability ?? "", epoch: sinceRevision > 0 ? watch.epoch : "" });
    channel.users += 1;
    const watchCall: WatchCall = { call, channel, dropped: false };
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      channel.users -= 1;
      this.maybeCloseChannel(channel);
    };
    // Headers come as soon as the server subscribed: from then on the new call has everything.
    call.on("metadata", () => {
      if (watch.pending === watchCall) this.promoteWatch(watch);
    });
    call.on("data", (event: WatchResponse) => {
      if (watch.pending === watchCall) this.promoteWatch(watch);
      if (watch.primary === watchCall) this.deliver(watch, event);
    });
    call.on("error", (error: ServiceError) => {
      finish();
      this.onWatchCallEnd(watch, watchCall, error);
    });
    call.on("status", (result: { code: number }) => {
      finish();
      // The server ended the stream cleanly (it is shutting down): the caller may want to resume elsewhere.
      if (result.code === status.OK) this.onWatchCallEnd(watch, watchCall, undefined);
    });
    return watchCall;
  }

  private moveWatch(watch: WatchState): void {
    if (watch.stopped) return;
    this.dropWatchCall(watch.pending);
    watch.pending = this.openWatchCall(watch, watch.lastRevision);
  }

  private promoteWatch(watch: WatchState): void {
    const pending = watch.pending;
    if (!pending) return;
    this.dropWatchCall(watch.primary);
    watch.primary = pending;
    watch.pending = undefined;
    // The new call replays from the revision it was opened with; what the old call delivered since is not repeated.
    watch.skipThrough = watch.lastRevision;
  }

  private deliver(watch: WatchState, event: WatchResponse): void {
    if (event.epoch !== "" && event.epoch !== watch.epoch) {
      // A new history (the server restarted): its snapshot follows, revisions start again.
      watch.epoch = event.epoch;
      watch.skipThrough = 0;
      watch.lastRevision = event.revision;
    }
    if (watch.skipThrough > 0) {
      if (event.revision <= watch.skipThrough) return;
      watch.skipThrough = 0;
    }
    if (event.revision > watch.lastRevision) watch.lastRevision = event.revision;
    watch.onEvent(event);
  }

  private onWatchCallEnd(watch: WatchState, watchCall: WatchCall, error: ServiceError | undefined): void {
    if (watchCall.dropped || watch.stopped) return;
    watchCall.dropped = true;
    if (watch.pending === watchCall) {
      // The new connection did not work out; the current call carries on.
      watch.pending = undefined;
      return;
    }
    if (watch.primary !== watchCall) return;
    watch.primary = undefined;
    if (watch.pending) {
      // The old connection went while the new call was opening: it has everything from lastRevision on.
      this.promoteWatch(watch);
      return;
    }
    this.watches.delete(watch);
    if (error === undefined) watch.options.onEnd?.();
    else if (error.code !== status.CANCELLED) watch.options.onError?.(error);
  }

  private dropWatchCall(watchCall: WatchCall | undefined): void {
    if (!watchCall || watchCall.dropped) return;
    watchCall.dropped = true;
    watchCall.call.cancel();
  }

  private stopWatch(watch: WatchState): void {
    watch.stopped = true;
    this.watches.delete(watch);
    this.dropWatchCall(watch.primary);
    this.dropWatchCall(watch.pending);
  }

  // --- heartbeats ----------------------------------------------------------------

  /** The server lost these instances (it restarted): register them again, in one batch, under the same ids. */
  private reregister(instanceIds: string[]): void {
    const handles = instanceIds.map((instanceId) => this.agents.get(instanceId)).filter((handle): handle is AgentHandle => handle !== undefined);
    if (handles.length === 0) return;
    this.unary<RegisterBatchRequest, RegisterBatchResponse>((channel, call, metadata, callback) => channel.registry.registerBatch(call, metadata, callback))({
      registrations: handles.map((handle) => this.registerRequest(handle.manifest, { ...handle.registerOptions, instanceId: handle.instanceId })),
    }).then(
      (response) => {
        const registered = handles.filter((handle, index) => {
          const result = response.results[index];
          if (result?.code === status.OK) return true;
          this.options.onEvent?.({ type: "streamError", code: result?.code ?? status.UNKNOWN, message: result?.message ?? "re-register failed", instanceId: handle.instanceId });
          return false;
        });
        if (registered.length > 0) this.sendHeartbeat(registered.map((handle) => this.beatOf(handle, true)));
      },
      (error: ServiceError) =>
        this.options.onEvent?.({ type: "streamError", code: error.code ?? status.UNKNOWN, message: error.details ?? "re-register failed", instanceId: "" }),
    );
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
    this.sendHeartbeat(beats);
    this.reportStatus();
  }

  /** One Heartbeat message on the current stream; each stream numbers its own. */
  private sendHeartbeat(instances: InstanceHeartbeat[]): void {
    const stream = this.stream;
    if (!stream || instances.length === 0) return;
    stream.sequence += 1;
    stream.call.write({ msg: { $case: "heartbeat", value: { sequence: stream.sequence, instances } } });
  }

  /** The refusal totals that changed since this stream last heard them (all of them on a new stream). */
  private reportStatus(): void {
    const stream = this.stream;
    const totals = this.options.dataPlaneRefusals?.();
    if (!stream?.welcomed || !totals) return;
    const changed: DataPlaneRefusals[] = [];
    for (const [reason, total] of totals) if (stream.reportedRefusals.get(reason) !== total) changed.push({ reason, total });
    if (changed.length === 0) return;
    stream.call.write({ msg: { $case: "status", value: { refusals: changed } } });
    for (const { reason, total } of changed) stream.reportedRefusals.set(reason, total);
  }

  private beatOf(handle: AgentHandle, announce: boolean): InstanceHeartbeat {
    return { instanceId: handle.instanceId, load: handle.load, reportedState: handle.reportedState, announce };
  }

  private send(request: ConnectRequest): void {
    this.stream?.call.write(request);
  }
}

