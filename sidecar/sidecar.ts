import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { mkdirSync } from "node:fs";
import type { Server as HttpServer } from "node:http";
import { createServer } from "node:net";
import { join } from "node:path";
import { Server, ServerCredentials, type ServiceError, credentials as grpcCredentials, experimental, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MeshClient } from "../sdk/ts/src/client/mesh-client.js";
import { MeshIdentity, splitPem } from "../sdk/ts/src/client/mesh-identity.js";
import { type Clock, systemClock } from "../sdk/ts/src/core/clock.js";
import { Backoff } from "../sdk/ts/src/core/backoff.js";
import { MeshError } from "../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { formatSpiffeId } from "../sdk/ts/src/core/spiffe-id.js";
import type { IdentityMaterial } from "../sdk/ts/src/core/tls/certificate-source.js";
import { PeerVerifier } from "../sdk/ts/src/core/tls/peer-verifier.js";
import { RevokedSerials } from "../sdk/ts/src/core/tls/revoked-serials.js";
import { SignerKeys } from "../sdk/ts/src/core/tls/signer-keys.js";
import { type KeyAgreementOptions, acceptKeyAgreement } from "../sdk/ts/src/core/frame-auth.js";
import { livenessTiming, hungRestartAfterMs } from "../sdk/ts/src/core/liveness.js";
import { type AttachHello, SidecarServiceService, type SidecarServiceServer } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { Command, ConnectResponse, Revocations } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RestartPolicy_Mode } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { FileAuditLog } from "../sdk/ts/src/core/audit-log.js";
import { AllowPolicy, parseAllowRule } from "./allow-rules.js";
import type { LocalAgentSpec, SidecarConfig } from "./config.js";
import { AgentClientPool, AttachHub, CallCancellation, TunnelServer } from "../sdk/ts/src/core/dataplane/index.js";
import { verifyCommand } from "./command-verifier.js";
import { SidecarHealth, inboundHealthServices, localHealthServices } from "./health.js";
import { createInboundHandler } from "./inbound.js";
import { RefusalTally } from "./refusal-tally.js";
import { loadStoredIdentity, storeIdentity, storedIdentityFiles } from "./stored-identity.js";
import { createLocalCallHandler } from "./local-calls.js";
import { type HealthCondition, type LocalAgent, newLocalAgent, whenIdle } from "./local-agents.js";
import { OutlierDetector, classifyOutcome } from "./outlier-detector.js";
import { Outbound, toOutboundCall } from "./outbound.js";
import { EndpointCache } from "./routing/endpoint-cache.js";
import { Supervisor } from "./supervisor/supervisor.js";
import { startHttpEndpoints } from "../sdk/ts/src/core/http-endpoints.js";
import { SidecarMetrics, frameAuthFailureReason } from "./observability/sidecar-metrics.js";
import { type CallTracer, tracerFromEnvironment } from "./observability/call-tracer.js";
import type { ExitEvent, StateEvent } from "./supervisor/supervisor-events.js";

/** An outlier's first ejection, in heartbeat intervals (the same bound as a hung agent's restart). */
const ejectionIntervals = 10;

/**
 * The sidecar: one per host. It holds the identity (the key never leaves it),
 * supervises agent processes, keeps one Connect stream for all of them, and
 * carries their calls in (mTLS tunnel → local agent) and out (local agent →
 * chosen instance's sidecar).
 */
export class Sidecar {
  readonly agents = new Map<string, LocalAgent>();
  readonly cache: EndpointCache;
  private client!: MeshClient;
  private identity: MeshIdentity | undefined;
  private supervisor!: Supervisor;
  private readonly attach: AttachHub;
  private readonly outliers: OutlierDetector;
  private readonly agentClients = new AgentClientPool();
  private tunnelServer!: TunnelServer;
  private localCalls!: TunnelServer;
  private inboundServer!: Server;
  private localServer!: Server;
  private outbound!: Outbound;
  private audit!: FileAuditLog;
  private stopWatch: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private readonly commandNonces: MemoryNonceCache;
  private keyAgreement: KeyAgreementOptions | undefined;
  private readonly watchBackoff = new Backoff({ initialMs: 100, maxMs: 5000, multiplier: 2 });
  private watchRetryTimer: NodeJS.Timeout | undefined;
  private readonly health = new SidecarHealth();
  /** Data-plane metrics, served on the HTTP port; frame authentication failures go to `metrics.recordFrameAuthFailure`. */
  readonly metrics = new SidecarMetrics();
  private httpServer: HttpServer | undefined;
  private tracer: CallTracer | undefined;
  private started = false;
  /** Where other sidecars dial the inbound port (--advertise-address, or the bound address with 0.0.0.0 as 127.0.0.1). */
  inboundAddress = "";
  /** What the inbound port is bound to, the real port when --inbound-port is 0. */
  inboundBindAddress = "";
  localAddress = "";
  httpAddress = "";
  rejectedCalls = 0;
  private readonly refusals: RefusalTally;
  /** The mesh's revoked certificates, from Connect: their holders' tunnels and frames are refused. */
  private readonly revoked: RevokedSerials;

  private constructor(
    readonly config: SidecarConfig,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.cache = new EndpointCache(clock);
    this.refusals = new RefusalTally(log.child({ component: "inbound" }), clock);
    this.commandNonces = new MemoryNonceCache({ clock });
    this.revoked = new RevokedSerials(clock);
    this.attach = new AttachHub({
      logger: log.child({ component: "attach" }),
      admit: (hello) => this.admitAttach(hello),
      liveness: (instanceId) => {
        const handle = this.agents.get(instanceId)?.handle;
        return handle === undefined ? undefined : livenessTiming(handle.heartbeatIntervalMs);
      },
    });
    this.outliers = new OutlierDetector({
      timers: { setTimeout: (callback, delayMs) => setTimeout(callback, delayMs).unref(), clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout) },
      baseEjectionMs: (instanceId) => (this.agents.get(instanceId)?.handle?.heartbeatIntervalMs ?? 1000) * ejectionIntervals,
      mayEject: (instanceId) => this.hasOtherRoutableInstance(instanceId),
      onEject: (instanceId, reason) => this.setCondition(instanceId, "outlier", reason),
      onReturn: (instanceId) => this.setCondition(instanceId, "outlier", undefined),
    });
  }

  get spiffeId(): string {
    return formatSpiffeId({ trustDomain: this.config.trustDomain, kind: "sidecar", name: this.config.host });
  }

  static async start(config: SidecarConfig, log: Logger, clock: Clock = systemClock): Promise<Sidecar> {
    const sidecar = new Sidecar(config, log.child({ component: "sidecar", sidecarId: config.host }), clock);
    await sidecar.begin();
    return sidecar;
  }

  private async begin(): Promise<void> {
    mkdirSync(this.config.dataDir, { recursive: true, mode: 0o700 });
    this.audit = await FileAuditLog.open({ path: join(this.config.dataDir, "audit.log"), clock: this.clock });
    const servers = this.config.servers;
    if (servers.length === 0) throw new MeshError("invalidArgument", "--server: at least one address required");
    if (!this.config.insecureDev) this.identity = await this.joinMesh(servers);

    this.tracer = await tracerFromEnvironment(process.env, `agentmesh-sidecar/${this.config.host}`);
    if (this.tracer) this.log.info("tracing on: spans go over OTLP");
    await this.startInbound();
    await this.startLocal();
    await this.startHttp();
    this.supervisor = new Supervisor({
      logger: this.log.child({ component: "supervisor" }),
      clock: this.clock,
      random: Math.random,
      drain: async (instanceId) => {
        const agent = this.agents.get(instanceId);
        if (agent) await whenIdle(agent);
      },
    });
    this.supervisor.on("state", (event) => this.onProcessState(event));
    this.supervisor.on("exit", (event) => this.onProcessExit(event));
    this.attach.on("attached", (instanceId: string) => this.onAttached(instanceId));
    this.attach.on("detached", (instanceId: string) => this.onDetached(instanceId));
    this.attach.on("hung", (instanceId: string, silentMs: number) => this.onAttachHung(instanceId, silentMs));
    this.attach.on("responsive", (instanceId: string) => this.onAttachResponsive(instanceId));

    this.client = new MeshClient({
      // Several replicas: the client moves to the next address when it loses the one it uses.
      address: servers,
      sidecarId: this.config.host,
      host: this.config.host,
      credentials: this.identity?.channelCredentials(),
      signer: this.identity,
      inboundEndpoint: this.inboundAddress,
      capacity: this.config.capacity,
      onCommand: (response) => this.onCommand(response),
      onRevocations: (revocations) => this.onRevocations(revocations),
      renewals: this.identity?.source,
      dataPlaneRefusals: () => this.refusals.totalsByReason(),
      onRotated: (reason) => this.log.debug({ reason }, "control plane streams moved to a new connection"),
      onEvent: (event) => {
        if (event.type === "disconnected") this.log.warn({ code: event.code, details: event.details, retryInMs: event.retryInMs }, "control plane stream lost");
        if (event.type === "connected") {
          this.log.info({ unknown: event.unknownInstanceIds.length, server: this.client.address }, "connected to control plane");
          // The control plane answers again (here or on another replica): a Watch waiting out its backoff resumes now.
          this.resumeWatchNow();
        }
        if (event.type === "streamError") this.log.warn(event, "control plane reported a problem");
      },
    });
    this.outbound = new Outbound({
      cache: this.cache,
      credentials: this.identity?.channelCredentials("sidecar") ?? grpcCredentials.createInsecure(),
      signer: this.identity,
      clock: this.clock,
      log: this.log.child({ component: "outbound" }),
      caller: this.identity?.spiffeId ?? this.config.host,
      renewals: this.identity?.source,
      keyAgreement: this.keyAgreement,
      signedCapabilities: new Set(this.config.signedCapabilities),
      metrics: this.metrics,
      tracer: this.tracer,
    });
    this.watch();
    await this.client.waitConnected();
    for (const spec of this.config.agents) await this.startAgent(spec);
    this.health.set("SERVING");
    this.started = true;
    this.log.info(
      { inboundBound: this.inboundBindAddress, inboundAdvertised: this.inboundAddress, local: this.localAddress, http: this.httpAddress, agents: this.config.agents.length, mtls: Boolean(this.identity) },
      "sidecar started",
    );
  }

  private async joinMesh(servers: readonly string[]): Promise<MeshIdentity> {
    if (this.config.certFile && this.config.keyFile && this.config.caCertFile) {
      return MeshIdentity.fromFiles({ certFile: this.config.certFile, keyFile: this.config.keyFile, caFile: this.config.caCertFile });
    }
    if (!this.config.caCertFile) {
      throw new MeshError("invalidArgument", "--join-token and --ca-cert are required (or --cert, --key and --ca-cert, or --insecure-dev)");
    }
    const trustBundlePem = await readFile(this.config.caCertFile, "utf8");
    const stored = await loadStoredIdentity(this.config.dataDir, { spiffeId: this.spiffeId, trustBundlePem: splitPem(trustBundlePem), nowMs: this.clock.nowMs() });
    const joinOptions = {
      address: servers,
      trustBundlePem,
      spiffeId: this.spiffeId,
      joinToken: this.config.joinToken ?? "",
      onRenewError: (error: unknown, retryInMs: number) => this.log.error({ err: error, retryInMs }, "certificate renewal failed"),
      onRenewed: (identity: IdentityMaterial) => {
        this.log.info({ serial: identity.serial, expiresAtMs: identity.expiresAtMs }, "certificate renewed");
        storeIdentity(this.config.dataDir, identity).catch((error: unknown) => this.log.error({ err: error, dataDir: this.config.dataDir }, "cannot store the renewed certificate"));
      },
    };
    let noStoredIdentity = `${this.config.dataDir} (--data-dir) holds no certificate of ${this.spiffeId} to rejoin with`;
    if (stored.kind === "usable") {
      // A join token joins once; the certificate it bought stays the sidecar's identity across restarts.
      this.log.info({ serial: stored.material.serial, expiresAtMs: stored.material.expiresAtMs, dataDir: this.config.dataDir }, "rejoining with the certificate stored in the data dir");
      try {
        return await this.keepIdentity(await MeshIdentity.join({ ...joinOptions, resume: stored.material }));
      } catch (error) {
        // Revoked, or of a CA the server no longer uses: a token may still join.
        if ((error as ServiceError).code !== status.UNAUTHENTICATED) throw error;
        noStoredIdentity = `the server refused the certificate in ${join(this.config.dataDir, storedIdentityFiles.cert)} (${(error as ServiceError).details})`;
      }
    } else if (stored.kind === "unusable") {
      noStoredIdentity = stored.problem;
    }
    if (stored.kind !== "none") this.log.warn({ problem: noStoredIdentity }, "stored certificate not used");
    if (!this.config.joinToken) {
      throw new MeshError("invalidArgument", `${noStoredIdentity}: join with --join-token (from '${tokenCommand(this.config.host)}') and --ca-cert, or pass --cert, --key and --ca-cert`);
    }
    try {
      return await this.keepIdentity(await MeshIdentity.join(joinOptions));
    } catch (error) {
      if ((error as ServiceError).code === status.UNAUTHENTICATED && /join token invalid or expired/.test(String((error as ServiceError).details))) {
        // The server answers a spent, expired and unknown token alike (docs/protocol.md): name the likely case and the way out.
        throw new MeshError("unauthenticated", `--join-token was refused (already used, or expired) and ${noStoredIdentity}: create a new token with '${tokenCommand(this.config.host)}'`);
      }
      throw error;
    }
  }

  /** Stores the certificate just obtained, so the next start rejoins with it. */
  private async keepIdentity(identity: MeshIdentity): Promise<MeshIdentity> {
    const current = identity.source.current;
    if (current) await storeIdentity(this.config.dataDir, current);
    return identity;
  }

  private async startInbound(): Promise<void> {
    const isRevoked = (serial: string): boolean => this.revoked.has(serial);
    const verifier = this.identity ? new PeerVerifier(this.config.trustDomain, this.identity.source.trustBundle, isRevoked) : undefined;
    // One signed key agreement per tunnel stream, then a MAC per frame (docs/signing.md §8).
    this.keyAgreement =
      this.identity && verifier
        ? {
            selfId: this.identity.spiffeId,
            signer: this.identity,
            verifier,
            signerKeys: new SignerKeys({ verifier, isRevoked }),
            clock: this.clock,
            nonceCache: new MemoryNonceCache({ clock: this.clock }),
            isRevoked,
          }
        : undefined;
    const handler = createInboundHandler({
      selfSpiffeId: this.identity?.spiffeId,
      verifier,
      nonceCache: new MemoryNonceCache({ clock: this.clock }),
      policy: new AllowPolicy(this.config.allowRules.map(parseAllowRule), this.config.defaultDeny),
      clock: this.clock,
      audit: this.audit,
      log: this.log.child({ component: "inbound" }),
      agents: this.agents,
      attach: this.attach,
      agentClients: this.agentClients,
      onRejected: () => {
        this.rejectedCalls += 1;
      },
      onOutcome: (instanceId, error, deadlineMs) => this.outliers.record(instanceId, classifyOutcome(error, deadlineMs, this.clock.nowMs())),
      refusals: this.refusals,
      metrics: this.metrics,
      tracer: this.tracer,
    });
    const keyAgreement = this.keyAgreement;
    this.tunnelServer = new TunnelServer({
      handler,
      logger: this.log.child({ component: "tunnel" }),
      keyAgreement: keyAgreement
        ? (share, authContext) =>
            acceptKeyAgreement(keyAgreement, share, authContext?.sslPeerCertificate).catch((error: unknown) => {
              this.metrics.recordFrameAuthFailure((error instanceof MeshError && frameAuthFailureReason(error.message)) || "handshake");
              throw error;
            })
        : undefined,
    });
    this.inboundServer = new Server({ "grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 5_000, "grpc.keepalive_permit_without_calls": 1 });
    this.tunnelServer.addTo(this.inboundServer);
    this.health.addTo(this.inboundServer, inboundHealthServices);
    const identity = this.identity;
    // Peers must present a mesh certificate at the handshake: no bootstrap RPC lives here.
    const credentials = identity ? experimental.createCertificateProviderServerCredentials(identity.source, identity.source, true) : ServerCredentials.createInsecure();
    const host = identity ? this.config.inboundHost : "127.0.0.1";
    const port = await bind(this.inboundServer, `${host}:${this.config.inboundPort}`, credentials);
    const advertisedHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
    this.inboundBindAddress = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    this.inboundAddress = this.config.advertiseAddress ?? `${advertisedHost}:${port}`;
  }

  private async startLocal(): Promise<void> {
    this.localCalls = new TunnelServer({ handler: createLocalCallHandler(() => this.outbound, this.clock), logger: this.log.child({ component: "local-calls" }) });
    this.localServer = new Server();
    const implementation: SidecarServiceServer = {
      invoke: (call, callback) => {
        const deadline = call.getDeadline();
        const callDeadlineMs = deadline instanceof Date ? deadline.getTime() : Number.isFinite(deadline) ? Number(deadline) : 0;
        const controller = new CallCancellation();
        let answered = false;
        // grpc-js also emits "cancelled" after a call completes; aborting then would only build an unused DOMException.
        call.on("cancelled", () => {
          if (!answered) controller.abort();
        });
        Promise.resolve()
          .then(() => this.outbound.invoke(toOutboundCall(call.request, this.clock, callDeadlineMs, controller.signal)))
          .then(
          (response) => {
            answered = true;
            callback(null, response);
          },
          (error: unknown) => {
            answered = true;
            callback(asServiceError(error, this.log));
          },
        );
      },
      invokeStream: (call) => {
        const controller = new AbortController();
        call.on("cancelled", () => controller.abort());
        const request = call.request;
        const outboundCall = toOutboundCall({ ...request, idempotent: false }, this.clock, 0, controller.signal);
        void (async () => {
          try {
            for await (const chunk of this.outbound.invokeStream(outboundCall)) call.write({ payload: chunk });
            call.end();
          } catch (error) {
            call.emit("error", asServiceError(error, this.log));
          }
        })();
      },
      discover: (call, callback) => {
        try {
          const picks = this.cache.candidates(call.request.capability, call.request.versionRange, call.request.labelSelector);
          callback(null, { instances: picks.map((pick) => pick.instance) });
        } catch (error) {
          callback(asServiceError(error, this.log));
        }
      },
      attach: this.attach.attach,
      call: (call) => this.localCalls.accept(call as never),
    };
    this.localServer.addService(SidecarServiceService, implementation);
    this.health.addTo(this.localServer, localHealthServices);
    const port = await bind(this.localServer, `127.0.0.1:${this.config.localPort}`, ServerCredentials.createInsecure());
    this.localAddress = `127.0.0.1:${port}`;
  }

  /** /metrics, /healthz (the process answers) and /readyz (started, routing table synced, not shutting down). */
  private async startHttp(): Promise<void> {
    const http = await startHttpEndpoints({
      host: this.config.httpHost,
      port: this.config.httpPort,
      metrics: this.metrics.registry,
      isLive: () => true,
      isReady: () => this.started && !this.closing && this.cache.isSynced,
    });
    this.httpServer = http.server;
    this.httpAddress = `${this.config.httpHost}:${http.port}`;
  }

  /** Keeps the endpoint cache fed from the registry's Watch, resuming after breaks. */
  private watch(): void {
    this.stopWatch = this.client.watch((event) => {
      this.watchBackoff.reset();
      this.cache.apply(event);
    }, {
      sinceRevision: this.cache.isSynced ? this.cache.lastRevision : 0,
      epoch: this.cache.epoch,
      onError: (error: ServiceError) => {
        // A restarted server does not know our revision: start over from a snapshot.
        if (error.code === status.INVALID_ARGUMENT) this.cache.reset();
        this.resumeWatch(error.details);
      },
      onEnd: () => this.resumeWatch("stream ended by the server"),
    });
  }

  private resumeWatch(reason: string): void {
    if (this.closing) return;
    const retryInMs = this.watchBackoff.nextDelayMs();
    this.log.warn({ reason, retryInMs, revision: this.cache.lastRevision }, "registry watch lost; resuming");
    clearTimeout(this.watchRetryTimer);
    this.watchRetryTimer = setTimeout(() => {
      this.watchRetryTimer = undefined;
      if (!this.closing) this.watch();
    }, retryInMs).unref();
  }

  private resumeWatchNow(): void {
    if (this.watchRetryTimer === undefined || this.closing) return;
    clearTimeout(this.watchRetryTimer);
    this.watchRetryTimer = undefined;
    this.watch();
  }

  /** Starts and supervises one agent process and registers it (STARTING until ready). */
  async startAgent(spec: LocalAgentSpec): Promise<string> {
    const instanceId = spec.instanceId ?? `${spec.manifest.name}-${randomBytes(4).toString("hex")}`;
    if (this.agents.has(instanceId)) throw new MeshError("alreadyExists", "instance already runs here");
    const agentAddr = `127.0.0.1:${await freePort()}`;
    const agent = newLocalAgent({ instanceId, manifest: spec.manifest, deployment: spec.deployment, agentAddr, supervised: true }, this.clock);
    this.agents.set(instanceId, agent);
    try {
      agent.handle = await this.client.register(spec.manifest, {
        instanceId,
        endpoint: this.inboundAddress,
        deployment: spec.deployment,
        reportedState: HealthState.HEALTH_STATE_STARTING,
      });
      this.supervisor.start({
        instanceId,
        agentName: spec.manifest.name,
        command: spec.command,
        args: spec.args,
        env: { ...spec.env, AGENTMESH_INSTANCE_ID: instanceId },
        cwd: spec.cwd,
        restartPolicy: spec.restartPolicy,
        memoryLimitBytes: spec.memoryLimitBytes,
        readinessTimeoutMs: spec.readinessTimeoutMs,
        gracefulStopMs: spec.gracefulStopMs,
        agentAddr,
        sidecarAddr: this.localAddress,
        // Plain agents: grpc.health.v1 checks go on after READY (SDK agents are pinged on Attach instead).
        liveness: livenessTiming(agent.handle.heartbeatIntervalMs),
        hungRestartAfterMs: hungRestartAfterMs(agent.handle.heartbeatIntervalMs, spec.manifest.healthPolicy?.hungRestartAfterMs ?? 0),
      });
    } catch (error) {
      this.agents.delete(instanceId);
      if (agent.handle) await this.client.deregister(agent.handle, "start failed").catch(() => undefined);
      throw error;
    }
    this.audited("agent.start", instanceId, { agentName: spec.manifest.name, deployment: spec.deployment });
    return instanceId;
  }

  /**
   * Graceful stop: DRAINING (out of routing everywhere) → in-flight calls finish →
   * SIGTERM → grace → SIGKILL → deregister.
   */
  async stopAgent(instanceId: string, graceMs: number, reason = "stop requested"): Promise<void> {
    const agent = this.agents.get(instanceId);
    if (!agent) throw new MeshError("notFound", "instance not on this sidecar");
    await this.drainAgent(instanceId, reason);
    if (agent.supervised) await this.supervisor.stop(instanceId, { graceMs, drainTimeoutMs: this.config.drainTimeoutMs });
    this.supervisor.remove(instanceId);
    if (agent.handle) {
      this.client.reportState(agent.handle, HealthState.HEALTH_STATE_STOPPED, reason);
      this.client.forget(agent.handle);
      await this.client.deregister(agent.handle, reason).catch((error: unknown) => this.log.warn({ err: error, instanceId }, "deregister failed"));
    }
    this.agents.delete(instanceId);
    this.outliers.forget(instanceId);
    this.audited("agent.stop", instanceId, { reason });
  }

  /** Takes an instance out of routing and waits (bounded) for its in-flight calls. */
  async drainAgent(instanceId: string, reason = "drain requested"): Promise<void> {
    const agent = this.agents.get(instanceId);
    if (!agent) throw new MeshError("notFound", "instance not on this sidecar");
    if (!agent.draining) {
      agent.draining = true;
      if (agent.handle) {
        agent.handle.reportedState = HealthState.HEALTH_STATE_DRAINING;
        this.client.reportState(agent.handle, HealthState.HEALTH_STATE_DRAINING, reason);
      }
      this.audited("agent.drain", instanceId, { reason });
    }
    await Promise.race([whenIdle(agent), delay(this.config.drainTimeoutMs)]);
  }

  async restartAgent(instanceId: string): Promise<void> {
    const agent = this.agents.get(instanceId);
    if (!agent?.supervised) throw new MeshError("notFound", "no supervised instance with this id");
    this.audited("agent.restart", instanceId, {});
    await this.supervisor.restart(instanceId, { drainTimeoutMs: this.config.drainTimeoutMs });
  }

  /** Drains and stops every agent, deregisters, then closes everything. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.health.set("NOT_SERVING");
      this.log.info({ agents: this.agents.size }, "sidecar shutting down");
      await Promise.allSettled([...this.agents.keys()].map((instanceId) => this.stopAgent(instanceId, 2000, "sidecar shutting down")));
      this.stopWatch?.();
      await Promise.all([this.tunnelServer.drain(), this.localCalls.drain()]).catch(() => undefined);
      this.outbound.close();
      this.refusals.close();
      this.attach.close();
      this.outliers.close();
      this.agentClients.close();
      await this.supervisor.close();
      this.client.close();
      this.identity?.close();
      this.inboundServer.forceShutdown();
      this.localServer.forceShutdown();
      await closeHttp(this.httpServer);
      await this.tracer?.close().catch((error: unknown) => this.log.warn({ err: error }, "flushing spans failed"));
      await this.audit.close();
      this.log.info("sidecar stopped");
    })();
    return this.closing;
  }

  private onProcessState(event: StateEvent): void {
    const agent = this.agents.get(event.instanceId);
    const handle = agent?.handle;
    if (!agent || !handle) return;
    switch (event.state) {
      case "ready":
        if (agent.draining) return;
        handle.paused = false;
        if (event.previous === "unresponsive") {
          this.setCondition(event.instanceId, "unresponsive", undefined);
          return;
        }
        if (agent.conditions.size > 0) return;
        handle.reportedState = HealthState.HEALTH_STATE_READY;
        this.client.beat(handle);
        return;
      case "unresponsive":
        this.setCondition(event.instanceId, "unresponsive", event.reason);
        return;
      case "backoff":
      case "starting":
        // A new process starts with a clean slate: whatever kept the old one out of routing died with it.
        agent.conditions.clear();
        this.outliers.forget(event.instanceId);
        if (event.previous === "ready" || event.previous === "starting" || event.previous === "unresponsive") {
          // The process died: say so at once, long before a heartbeat would be missed.
          handle.reportedState = HealthState.HEALTH_STATE_STARTING;
          this.client.reportState(handle, HealthState.HEALTH_STATE_UNHEALTHY, event.reason, event.exitCode ?? 0);
        }
        return;
      case "failed":
        handle.paused = true;
        this.client.reportState(handle, HealthState.HEALTH_STATE_FAILED, event.reason, event.exitCode ?? 0);
        this.audited("agent.failed", event.instanceId, { reason: event.reason, restarts: event.restarts });
        return;
      default:
        return;
    }
  }

  /** An exit nobody asked for (a crash, or our own kill for memory, readiness or a hang): warn-logged by the supervisor, audited here. */
  private onProcessExit(event: ExitEvent): void {
    if (!event.unexpected) return;
    this.audited(
      "agent.crashed",
      event.instanceId,
      { agentName: event.agentName, pid: event.pid, exitCode: event.exitCode, signal: event.signal, reason: event.reason, uptimeMs: event.uptimeMs },
      "failure",
    );
  }

  /** An attached SDK agent stopped answering pings: supervised ones go through the supervisor (it owns the restart bound). */
  private onAttachHung(instanceId: string, silentMs: number): void {
    const agent = this.agents.get(instanceId);
    if (!agent) return;
    const reason = `agent stopped answering pings for ${Math.round(silentMs)} ms`;
    if (agent.supervised) this.supervisor.markUnresponsive(instanceId, reason, { restart: true });
    else this.setCondition(instanceId, "unresponsive", reason);
  }

  private onAttachResponsive(instanceId: string): void {
    const agent = this.agents.get(instanceId);
    if (!agent) return;
    if (agent.supervised) this.supervisor.markResponsive(instanceId, "agent answers pings again");
    else this.setCondition(instanceId, "unresponsive", undefined);
  }

  /**
   * Sets or clears one reason to keep a live agent out of routing. The first reason reports
   * UNHEALTHY at once (and takes it out of this sidecar's own routing without waiting for the
   * Watch); clearing the last reports READY, if its process is up. Heartbeats carry the same
   * state meanwhile, so a lost event cannot leave it routable.
   */
  private setCondition(instanceId: string, condition: HealthCondition, reason: string | undefined): void {
    const agent = this.agents.get(instanceId);
    const handle = agent?.handle;
    if (!agent || !handle) return;
    const wasRoutable = agent.conditions.size === 0;
    if (reason === undefined) agent.conditions.delete(condition);
    else agent.conditions.set(condition, reason);
    const routable = agent.conditions.size === 0;
    if (agent.draining || routable === wasRoutable) return;
    const fields = { instanceId, agentName: agent.manifest.name, condition };
    if (!routable) {
      this.log.warn({ ...fields, reason }, "agent out of routing");
      handle.reportedState = HealthState.HEALTH_STATE_UNHEALTHY;
      this.cache.markUnroutable(instanceId);
      this.client.reportState(handle, HealthState.HEALTH_STATE_UNHEALTHY, reason ?? condition);
      return;
    }
    const up = agent.supervised ? this.supervisor.get(instanceId)?.state === "ready" : this.attach.isAttached(instanceId);
    if (!up) return;
    this.log.info(fields, "agent back in routing");
    handle.reportedState = HealthState.HEALTH_STATE_READY;
    this.client.beat(handle);
  }

  /** Outlier ejection never takes out the last routable instance of an agent: callers would get UNAVAILABLE instead of slow answers. */
  private hasOtherRoutableInstance(instanceId: string): boolean {
    const manifest = this.agents.get(instanceId)?.manifest;
    const capability = manifest?.capabilities[0];
    if (!manifest || !capability) return false;
    return this.cache
      .candidates(capability.name, "", undefined, new Set([instanceId]))
      .some((candidate) => candidate.instance.manifest?.name === manifest.name);
  }

  private onAttached(instanceId: string): void {
    const agent = this.agents.get(instanceId);
    if (!agent) return;
    if (agent.supervised) {
      this.supervisor.markReady(instanceId);
      // A stream that comes back answers: whatever found the old one hung no longer holds.
      this.supervisor.markResponsive(instanceId, "agent attached again");
      return;
    }
    if (agent.conditions.has("unresponsive")) {
      this.setCondition(instanceId, "unresponsive", undefined);
      return;
    }
    if (agent.handle && agent.conditions.size === 0) {
      agent.handle.reportedState = HealthState.HEALTH_STATE_READY;
      this.client.beat(agent.handle);
    }
  }

  private onDetached(instanceId: string): void {
    const agent = this.agents.get(instanceId);
    if (!agent?.handle || agent.draining) return;
    // An SDK agent's stream broke: it is gone (or going) — out of routing now.
    agent.handle.reportedState = HealthState.HEALTH_STATE_STARTING;
    this.client.reportState(agent.handle, HealthState.HEALTH_STATE_UNHEALTHY, "agent stream closed");
  }

  /** An SDK agent started outside the sidecar attaches with its manifest: register it as unmanaged. */
  private async admitAttach(hello: AttachHello): Promise<void> {
    if (this.agents.has(hello.instanceId)) return;
    if (!hello.manifest) throw new MeshError("notFound", "unknown instance: attach with a manifest to register");
    const agent = newLocalAgent({ instanceId: hello.instanceId, manifest: hello.manifest, deployment: "", agentAddr: "", supervised: false }, this.clock);
    this.agents.set(hello.instanceId, agent);
    try {
      agent.handle = await this.client.register(hello.manifest, { instanceId: hello.instanceId, endpoint: this.inboundAddress, reportedState: HealthState.HEALTH_STATE_STARTING });
    } catch (error) {
      this.agents.delete(hello.instanceId);
      throw error instanceof MeshError ? error : new MeshError("unavailable", "registration failed");
    }
  }

  /** New revocations end the tunnels of their holders at once, both ways; later handshakes and frames of theirs are refused. */
  private onRevocations(revocations: Revocations): void {
    const added = this.revoked.apply(revocations);
    if (added.length === 0) return;
    const serials = new Set(added);
    const isNew = (serial: string): boolean => serials.has(serial);
    const inboundClosed = this.tunnelServer.closePeers(isNew, "peer certificate revoked");
    const outboundDropped = this.outbound.dropPeers(isNew, "peer certificate revoked");
    this.log.warn({ serials: added, revokedTotal: this.revoked.size, inboundClosed, outboundDropped }, "certificates revoked: their tunnels closed");
  }

  private onCommand(response: ConnectResponse): void {
    if (response.msg?.$case !== "command") return;
    const received = response.msg.value;
    const identity = this.identity;
    const verified = identity
      ? verifyCommand(received, { source: identity.source, selfSpiffeId: identity.spiffeId, trustDomain: this.config.trustDomain, clock: this.clock, nonceCache: this.commandNonces })
      : Promise.resolve(received);
    verified.then(
      (command) => this.runCommand(command),
      (error: unknown) => {
        const reason = error instanceof MeshError ? error.message : "command verification failed";
        this.log.warn({ commandId: received.commandId, reason }, "refused unverified command");
        this.audit
          .append({ actor: "control-plane", action: "command.rejected", target: received.commandId, outcome: "denied", requestId: "", details: { reason } })
          .catch((failure: unknown) => this.log.error({ err: failure }, "audit append failed"));
        this.client.sendCommandResult({ commandId: received.commandId, ok: false, message: reason, instanceId: "" });
      },
    );
  }

  private runCommand(command: Command): void {
    this.execute(command).then(
      (instanceId) => this.client.sendCommandResult({ commandId: command.commandId, ok: true, message: "", instanceId }),
      (error: unknown) => {
        const message = error instanceof MeshError ? error.message : "command failed";
        if (!(error instanceof MeshError)) this.log.error({ err: error, commandId: command.commandId }, "command failed");
        this.client.sendCommandResult({ commandId: command.commandId, ok: false, message, instanceId: "" });
      },
    );
  }

  private async execute(command: Command): Promise<string> {
    const action = command.action;
    if (!action) throw new MeshError("invalidArgument", "command without action");
    switch (action.$case) {
      case "start":
        return this.startAgent(specFromStart(action.value));
      case "stop":
        await this.stopAgent(action.value.instanceId, action.value.graceMs || 5000);
        return action.value.instanceId;
      case "drain":
        await this.drainAgent(action.value.instanceId);
        return action.value.instanceId;
      case "restart":
        await this.restartAgent(action.value.instanceId);
        return action.value.instanceId;
    }
  }

  private audited(action: string, target: string, details: Record<string, unknown>, outcome: "success" | "failure" = "success"): void {
    this.audit
      .append({ actor: this.identity?.spiffeId ?? this.config.host, action, target, outcome, requestId: "", details })
      .catch((error: unknown) => this.log.error({ err: error }, "audit append failed"));
  }
}

export function specFromStart(start: NonNullable<Extract<Command["action"], { $case: "start" }>>["value"]): LocalAgentSpec {
  const manifest = start.manifest;
  const process = start.process;
  if (!manifest || !process || process.command === "") throw new MeshError("invalidArgument", "start: manifest and process.command required");
  const policy = start.restartPolicy;
  const modes: Record<number, "always" | "on-failure" | "never"> = {
    [RestartPolicy_Mode.MODE_ALWAYS]: "always",
    [RestartPolicy_Mode.MODE_ON_FAILURE]: "on-failure",
    [RestartPolicy_Mode.MODE_NEVER]: "never",
  };
  return {
    manifest,
    command: process.command,
    args: process.args,
    env: process.env,
    cwd: process.cwd || undefined,
    restartPolicy: {
      mode: modes[policy?.mode ?? RestartPolicy_Mode.MODE_ALWAYS] ?? "always",
      maxRestarts: policy?.maxRestarts || 5,
      windowMs: policy?.windowMs || 60_000,
      initialBackoffMs: policy?.initialBackoffMs || 100,
      maxBackoffMs: policy?.maxBackoffMs || 10_000,
    },
    memoryLimitBytes: Number(manifest.resources?.memoryLimitBytes ?? 0) || undefined,
    readinessTimeoutMs: manifest.healthPolicy?.readinessTimeoutMs || 30_000,
    gracefulStopMs: 5000,
    deployment: start.deployment,
    instanceId: start.instanceId,
  };
}

function bind(server: Server, address: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, credentials, (error, port) => (error ? reject(error) : resolve(port))));
}

/** A free loopback port for an agent's AGENTMESH_AGENT_ADDR. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

function closeHttp(server: HttpServer | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function asServiceError(error: unknown, log: Logger): Partial<ServiceError> {
  const code = (error as { code?: unknown }).code;
  if (error instanceof MeshError || (typeof code === "number" && error instanceof Error)) {
    return { code: code as number, details: (error as Error).message, message: (error as Error).message };
  }
  const requestId = randomBytes(6).toString("hex");
  log.error({ err: error, requestId }, "local call failed");
  return { code: status.INTERNAL, details: `internal error, request ${requestId}` };
}

/** The ctl command that makes a join token for this host. */
function tokenCommand(host: string): string {
  return `agentmesh ctl join-token --host ${host} --agents <names>`;
}
