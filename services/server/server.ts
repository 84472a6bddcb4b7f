import type { Server as HttpServer } from "node:http";
import { isIP } from "node:net";
import { hostname } from "node:os";
import { type Server, ServerCredentials, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Clock, type RandomSource, systemClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { defaultSignatureWindowMs } from "../../sdk/ts/src/core/signing.js";
import { IdentityServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { OrchestratorServiceService, type RevokedCertificate, Rollout } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegistryServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { identityHandlers } from "../identity/grpc-handlers.js";
import { type Security, createSecurity } from "../identity/security.js";
import { ConnectHub, type ConnectHubHooks } from "../orchestrator/connect-hub.js";
import { FailureDetector } from "../orchestrator/failure-detector.js";
import { parse as parseYaml } from "yaml";
import { type Alerting, type AlertsConfig, createAlerting, parseAlertsConfig, parseAlertsConfigText } from "../alerts/index.js";
import { DashboardTokenVerifier, createDashboard, dashboardNeedsAuthentication } from "../dashboard/index.js";
import { CommandSigner } from "../orchestrator/command-signer.js";
import { orchestratorHandlers } from "../orchestrator/grpc-handlers.js";
import { ServerInvoker } from "../orchestrator/invoker.js";
import { RefusalReports } from "../orchestrator/refusal-reports.js";
import { Lifecycle } from "../orchestrator/lifecycle.js";
import { lifecycleHandlers } from "../orchestrator/lifecycle-handlers.js";
import { ChangeLogSidecarDirectory } from "../orchestrator/adapters/change-log-sidecar-directory.js";
import { HubSidecarDirectory } from "../orchestrator/adapters/hub-sidecar-directory.js";
import type { DeploymentStore } from "../orchestrator/ports.js";
import type { AgentInstance } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { Resolver } from "../orchestrator/resolver.js";
import { MemoryChangeFeed } from "../registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../registry/adapters/memory-instance-store.js";
import { ReplicatedInstanceStore } from "../registry/adapters/replicated-instance-store.js";
import { healthStateName } from "../registry/domain/health-state.js";
import { registryHandlers } from "../registry/grpc-handlers.js";
import type { ChangeFeed, InstanceStore } from "../registry/ports.js";
import { Registry } from "../registry/registry.js";
import type { AuditEvent } from "../../sdk/ts/src/core/audit-log.js";
import { currentCall, devAuthenticator } from "./call-context.js";
import { type ServerConfig, defaultServerConfig, validateServerConfig } from "./config.js";
import { MeshHealth, addReflection } from "./health-and-reflection.js";
import { startHttpEndpoints } from "./http-endpoints.js";
import { ServerMetrics } from "./metrics.js";
import { GuardedServer, createRequestGuard } from "./request-guard.js";
import type { RpcPlumbing, StreamRegistry } from "./rpc-wrapper.js";
import { type StateStore, openStateStore } from "./state-store.js";
import { ChangeFollower, LeaderElector, decodeJson, stateKeys } from "../state/index.js";
import { randomUUID } from "node:crypto";
import { ChangeLogDeploymentStore } from "../orchestrator/adapters/change-log-deployment-store.js";
import type { RevocationRecord } from "../identity/ports.js";
import { installTlsHooks } from "./tls-hooks.js";

export interface ServerDependencies {
  log: Logger;
  clock?: Clock;
  random?: RandomSource;
  store?: InstanceStore;
  feed?: ChangeFeed;
  deployments?: DeploymentStore;
  /**
   * With --store postgres and --redis-url, replicas elect one leader and the others
   * follow. A leader that loses its lease must stop acting at once: this is
   * called (after close()) so the process can exit and be restarted as a follower.
   */
  onLeadershipLost?: () => void;
}

export interface ServerContext {
  config: ServerConfig;
  registry: Registry;
  hub: ConnectHub;
  resolver: Resolver;
  metrics: ServerMetrics;
  security: Security;
  lifecycle: Lifecycle;
  alerting: Alerting;
  log: Logger;
  clock: Clock;
  plumbing: RpcPlumbing;
}

export interface RunningServer extends ServerContext {
  grpcPort: number;
  httpPort: number;
  /** `host:port` of the gRPC listener. */
  address: string;
  detector: FailureDetector;
  /** Stops accepting, tells sidecars, ends streams, and waits for in-flight calls (bounded). */
  close(): Promise<void>;
}

/** Wires the control plane together and starts listening. */
export async function startServer(overrides: Partial<ServerConfig>, dependencies: ServerDependencies): Promise<RunningServer> {
  const config: ServerConfig = { ...defaultServerConfig, ...overrides };
  validateServerConfig(config);
  const log = dependencies.log.child({ component: "server", serverId: config.serverId });
  const clock = dependencies.clock ?? systemClock;
  let registryRef: Registry | undefined;
  let securityRef: Security | undefined;
  const metrics = new ServerMetrics(
    () => registryRef,
    () => securityRef?.audit.stats,
  );
  // Ready = started, not closing, the audit log writable (audited actions are refused
  // otherwise) and the state store reachable (writes are refused with UNAVAILABLE otherwise).
  const readiness = { started: false, closing: false, auditWritable: true, storeHealthy: true, apply: () => undefined as void };
  const isReady = () => readiness.started && !readiness.closing && readiness.auditWritable && readiness.storeHealthy;
  const streams: StreamRegistry = new Map();
  let hubRef: ConnectHub | undefined;
  let invokerRef: ServerInvoker | undefined;
  const stateListeners: Array<(instance: AgentInstance) => void> = [];
  const removeListeners: Array<(instance: AgentInstance) => void> = [];

  const state: StateStore = await openStateStore({
    store: config.store,
    dataDir: config.dataDir,
    postgresUrl: config.postgresUrl,
    postgresSchema: config.postgresSchema,
    redisUrl: config.redisUrl,
    fsync: config.auditFsync,
    retainRevisions: config.stateRetainRevisions,
    compactIntervalMs: 60_000,
    probeIntervalMs: 1_000,
    clock,
    log,
    onHealthChange: (healthy) => {
      readiness.storeHealthy = healthy;
      readiness.apply();
    },
  });
  let security: Security;
  try {
    security = await createSecurity({
    dataDir: config.dataDir,
    trustDomain: config.trustDomain,
    serverId: config.serverId,
    insecureDev: config.insecureDev,
    caCertFile: config.caCertFile,
    caKeyFile: config.caKeyFile,
    certTtlMs: config.certTtlMs,
    maxCertTtlMs: config.maxCertTtlMs,
    ...serverNames(config),
    identityRatePerSecond: config.identityRatePerSecond,
    identityBurst: config.identityBurst,
    identityMaxInFlight: config.identityMaxInFlight,
    identityMaxStreams: config.identityMaxStreams,
    auditFsync: config.auditFsync,
    auditSampleIntervalMs: config.auditSampleIntervalMs,
    auditDenialsPerIdentity: config.auditDenialsPerIdentity,
    auditRetryIntervalMs: config.auditRetryIntervalMs,
    clock,
    log,
    onLimitRejected: (limit) => metrics.limitRejections.inc({ limit }),
    onRefusal: (refusal, written) =>
      metrics.refusals.inc({ action: refusal.action, authenticated: String(refusal.authenticated), audit: written ? "entry" : "sampled" }),
    onAuditStateChange: (state) => {
      readiness.auditWritable = state.writable;
      metrics.auditWritable.set(state.writable ? 1 : 0);
      readiness.apply();
    },
    // A revoked certificate loses its open streams at once, not at its next call.
    onRevoked: (records) => {
      const serials = new Set(records.map((record) => record.serial));
      hubRef?.disconnectSerials(serials, "certificate revoked");
      hubRef?.announceRevocations(records.map(revokedCertificate));
      invokerRef?.dropPeers((serial) => serials.has(serial), "peer certificate revoked");
      for (const [stream, serial] of streams) if (serials.has(serial)) stream.emit("error", { code: status.UNAUTHENTICATED, details: "certificate revoked" });
    },
    stores: { certificates: state.certificates, revocations: state.revocations, joinTokens: state.joinTokens },
    // Replicas: one audit chain in PostgreSQL for all of them, instead of a file each.
    auditLog: state.audit,
    // Replicas share one replay cache (Redis): a signed request replayed to another replica is refused.
    nonceCache: state.sharedCoordination ? state.coordination.nonceCache({ windowMs: defaultSignatureWindowMs }) : undefined,
    // ... and one per-identity rate: calls spread over replicas count against one bucket.
    sharedRateLimit: state.sharedCoordination ? state.coordination.rateLimiter : undefined,
  });
  } catch (error) {
    await state.close();
    throw error;
  }
  securityRef = security;
  // Replicas on a shared store: a revocation made through another replica applies here
  // too, within a poll interval (or at once with Redis wake-ups), and cuts the streams.
  let revocationFollower: ChangeFollower | undefined;
  if (state.kind === "postgres") {
    const applyRevocations = (records: RevocationRecord[]) => {
      const fresh = records.filter((record) => !security.revocations.hasSerial(record.serial));
      if (fresh.length === 0) return;
      security.revocations.apply(fresh);
      log.warn({ serials: fresh.map((record) => record.serial) }, "revocations made through another replica applied");
      const serials = new Set(fresh.map((record) => record.serial));
      hubRef?.disconnectSerials(serials, "certificate revoked");
      hubRef?.announceRevocations(fresh.map(revokedCertificate));
      invokerRef?.dropPeers((serial) => serials.has(serial), "peer certificate revoked");
      for (const [stream, serial] of streams) if (serials.has(serial)) stream.emit("error", { code: status.UNAUTHENTICATED, details: "certificate revoked" });
    };
    revocationFollower = new ChangeFollower({
      log: state.log,
      prefix: stateKeys.revocations,
      wakeUps: state.coordination.wakeUps,
      pollIntervalMs: 1000,
      logger: log,
      onSnapshot: ({ items }) => applyRevocations(items.map((item) => decodeJson<RevocationRecord>(item.value))),
      onChanges: ({ changes }) => applyRevocations(changes.flatMap((change) => (change.value ? [decodeJson<RevocationRecord>(change.value)] : []))),
    });
    await revocationFollower.start();
  }
  // Registrations, deregistrations and commands come from deep below the RPC
  // handlers (and from the reconciler): audited here, batched by the log, with the
  // calling RPC's identity when there is one and `system` otherwise.
  const auditAction = (event: Omit<AuditEvent, "actor" | "requestId" | "outcome">) => {
    const call = currentCall();
    void security.backgroundAudit.append({ actor: call?.caller.spiffeId || "system", requestId: call?.requestId ?? "", outcome: "success", ...event });
  };

  // Registrations are kept in the state store (ADR 0008): a restart finds them at once,
  // and replicas on one PostgreSQL + Redis are active/active, every replica serving the
  // registry from its own projection of everyone's registrations.
  const replicaId = `${config.serverId}-${randomUUID().slice(0, 8)}`;
  const sharedInstances = dependencies.store
    ? undefined
    : new ReplicatedInstanceStore({
        log: state.log,
        leases: state.coordination.leases,
        wakeUps: state.coordination.wakeUps,
        replicaId,
        clock,
        logger: log.child({ component: "registry-replication" }),
        leaseTtlMs: config.leaderLeaseMs,
        takeoverGraceMs: config.adoptGraceMs,
        onEvent: (event) => metrics.registryReplication.inc({ event }),
      });
  const registry = new Registry(
    dependencies.store ?? sharedInstances ?? new MemoryInstanceStore(),
    dependencies.feed ?? new MemoryChangeFeed(),
    clock,
    log.child({ component: "registry" }),
    {
      onRegistered: (instance, replaced, remote) => {
        // Registered through another replica: audited there.
        if (!remote)
          auditAction({
          action: "agent.register",
          target: instance.instanceId,
          details: { agentName: instance.manifest?.name, version: instance.manifest?.version, host: instance.host, deployment: instance.deployment, replaced },
        });
        stateListeners.forEach((listener) => listener(instance));
      },
      onStateChange: ({ instance, previousState, remote }) => {
        if (!remote)
          metrics.stateTransitions.inc({ from: healthStateName(previousState).toLowerCase(), to: healthStateName(instance.state).toLowerCase() });
        stateListeners.forEach((listener) => listener(instance));
      },
      onRemoved: (instance, reason, remote) => {
        if (!remote)
          auditAction({ action: "agent.deregister", target: instance.instanceId, details: { agentName: instance.manifest?.name, host: instance.host, reason } });
        removeListeners.forEach((listener) => listener(instance));
      },
    },
    undefined,
    config.maxInstancesPerIdentity,
  );
  registryRef = registry;
  try {
    await sharedInstances?.start(registry);
  } catch (error) {
    await security.close();
    await state.close();
    throw error;
  }
  const authenticate = security.tls?.auth.authenticate ?? devAuthenticator(config.trustDomain);
  const plumbing: RpcPlumbing = {
    authenticate,
    log,
    metrics,
    streams,
    audit: security.audit,
    onRejected: (context, error) => {
      if (error.kind === "overLimit") metrics.limitRejections.inc({ limit: error.message.replace(/^limit exceeded: /, "").replace(/\W+/g, "_") });
      const authenticated = context.caller.spiffeId !== "";
      security.refusals.record({ actor: context.caller.spiffeId, authenticated, action: "call.denied", target: context.method, reason: error.message, requestId: context.requestId });
    },
  };
  const detector = new FailureDetector(
    registry,
    clock,
    { timeoutMultiplier: config.heartbeatTimeoutMultiplier, sweepIntervalMs: config.detectorSweepMs },
    (_instanceId, silentForMs) => {
      metrics.detections.inc({ reason: "heartbeat_timeout" });
      metrics.detectionDelay.observe({ reason: "heartbeat_timeout" }, silentForMs / 1000);
    },
  );
  const refusalReports = new RefusalReports();
  const hubHooks: ConnectHubHooks = {
    onRejected: (caller, requestId, reason) =>
      security.refusals.record({ actor: caller, authenticated: caller !== "", action: "connect.denied", target: "/agentmesh.v1.OrchestratorService/Connect", reason, requestId }),
    onHeartbeats: (count) => metrics.heartbeats.inc(count),
    onStreamLost: () => metrics.detections.inc({ reason: "stream_lost" }),
    onStreamCountChange: (open) => metrics.connectStreams.set(open),
    onDataPlaneRefusals: (sidecarId, refusals) => {
      for (const { reason, count } of refusalReports.record(sidecarId, refusals)) {
        metrics.dataPlaneRefusals.inc({ sidecar: sidecarId, reason }, count);
        alerting.engine.observe({ type: "dataplaneRefusals", sidecar: sidecarId, reason, count });
      }
    },
    onCommandResult: (sidecarId, result) => {
      metrics.commands.inc({ action: "any", outcome: result.ok ? "ok" : "failed" });
      if (!result.ok) log.warn({ sidecarId, commandId: result.commandId, instanceId: result.instanceId, problem: result.message }, "sidecar could not carry out a command");
    },
  };
  const hub = new ConnectHub(
    registry,
    log.child({ component: "connect" }),
    {
      reconnectGraceMs: config.reconnectGraceMs,
      heartbeatTimeoutMultiplier: config.heartbeatTimeoutMultiplier,
      serverId: config.serverId,
      maxInstancesPerStream: config.maxInstancesPerStream,
      revokedCertificates: () => security.revocations.list().map(revokedCertificate),
    },
    // Only the identity that registered an instance may heartbeat for it.
    (caller, owner) => {
      if (caller !== owner) throw new MeshError("denied", "instance owned by another identity");
    },
    hubHooks,
    (hello, caller) => security.opener.open(hello.envelope, caller, "/agentmesh.v1.OrchestratorService/Connect", "agentmesh.v1.Hello"),
  );
  hubRef = hub;
  const resolver = new Resolver(registry, dependencies.random);
  const alerting = createAlerting({
    config: alertsConfig(config),
    clock,
    registry: metrics.registry,
    logger: log.child({ component: "alerts" }),
  });
  // Several replicas on one PostgreSQL + Redis: one leader, fenced (ADR 0004).
  let onElected: (() => void) | undefined;
  const elector =
    state.kind === "postgres" && config.redisUrl
      ? new LeaderElector({
          lock: state.coordination.leaderLock,
          log: state.log,
          name: "agentmesh-control-plane",
          holder: `${config.serverId}-${randomUUID().slice(0, 8)}`,
          ttlMs: config.leaderLeaseMs,
          logger: log,
          onElected: (fence) => {
            log.info({ token: fence.token }, "elected leader: reconciling deployments");
            onElected?.();
          },
          onDemoted: () => {
            log.error("lost the leader lease: stopping so that this replica restarts as a follower");
            void close().finally(() => dependencies.onLeadershipLost?.());
          },
        })
      : undefined;
  // The reconciler reaches sidecars through this: over the change log when replicas
  // share PostgreSQL (a sidecar may hold its stream to any of them, ADR 0009), the
  // local hub alone otherwise (no store writes).
  const changeLogDirectory =
    state.kind === "postgres"
      ? new ChangeLogSidecarDirectory({
          hub,
          log: state.log,
          leases: state.coordination.leases,
          wakeUps: state.coordination.wakeUps,
          serverId: config.serverId,
          clock,
          logger: log.child({ component: "sidecar-directory" }),
          fence: () => elector?.fence,
          onEvent: (event) => metrics.sidecarDirectory.inc({ event }),
        })
      : undefined;
  const lifecycle: Lifecycle = new Lifecycle({
    registry,
    sidecars: changeLogDirectory ?? new HubSidecarDirectory(hub),
    // The leader's writes carry its fencing token: a paused old leader's are refused.
    store: dependencies.deployments ?? (elector ? new ChangeLogDeploymentStore(state.log, { fence: () => elector.fence }) : state.deployments),
    adoptGraceMs: config.adoptGraceMs,
    clock,
    log: log.child({ component: "lifecycle" }),
    audit: security.backgroundAudit,
    signer: security.tls ? new CommandSigner(security.tls.source, clock) : undefined,
    reconcileIntervalMs: config.reconcileIntervalMs,
    onDeploymentReady: (deployment, ready, minReady) => alerting.engine.observe({ type: "deploymentReady", deployment, ready, minReady }),
    onRollback: (deployment) => metrics.rollbacks.inc({ deployment }),
    onCommandSent: (action, command, sidecarId) => {
      metrics.commands.inc({ action, outcome: "sent" });
      const instanceId = command.action?.value.instanceId ?? "";
      auditAction({ action: `command.${action}`, target: instanceId, details: { commandId: command.commandId, sidecar: sidecarId } });
    },
    onInstanceLost: () => metrics.detections.inc({ reason: "instance_lost" }),
    reconcile: { lostInstanceTimeoutMs: config.lostInstanceTimeoutMs },
    // With replicas, only the leader reconciles; the others answer the lifecycle RPCs.
    isLeader: elector ? () => elector.state === "leader" : undefined,
    commandResultSlackMs: config.commandResultSlackMs,
  });
  stateListeners.push((instance) => {
    lifecycle.onStateChange(instance);
    alerting.engine.observe({
      type: "instanceState",
      instanceId: instance.instanceId,
      agentName: instance.manifest?.name ?? "",
      deployment: instance.deployment,
      state: instance.state,
      reason: instance.stateReason,
    });
  });
  removeListeners.push((instance) => {
    lifecycle.onRemoved(instance.instanceId);
    resolver.forget(instance.instanceId);
    alerting.engine.observe({ type: "instanceRemoved", instanceId: instance.instanceId });
  });
  const invoker = new ServerInvoker(resolver, security.tls?.source, config.trustDomain, clock, log.child({ component: "invoker" }), {
    signedCapabilities: new Set(config.signedCapabilities),
    isRevoked: (serial) => security.revocations.hasSerial(serial),
  });
  invokerRef = invoker;
  // The dashboard's whole view of the control plane: these few functions (issue 9 moves them with the wiring).
  const dashboard = createDashboard({
    sources: {
      watchInstances: (onChange) => registry.watch(0, "", onChange),
      listInstances: () => registry.all(),
      listDeployments: () => lifecycle.list(),
      rollout: (name) => {
        try {
          return lifecycle.rollout(name);
        } catch (error) {
          if (error instanceof MeshError && error.kind === "notFound") return undefined;
          throw error;
        }
      },
      alertsFiring: () => alerting.engine.firing(),
      auditTail: (limit) => security.audit.tail(limit),
      routing: (capability) => resolver.routingView(capability),
    },
    tokens: dashboardNeedsAuthentication(config.httpHost)
      ? new DashboardTokenVerifier({ trustDomain: config.trustDomain, verifier: security.verifier, revocations: security.revocations, clock })
      : undefined,
    // Refusals are sampled like every other unauthenticated refusal, so a flood of bad tokens cannot fill the disk.
    audit: (event) =>
      event.outcome === "denied"
        ? security.refusals.record({ actor: event.actor, authenticated: false, action: event.action, target: event.target, reason: String(event.details?.reason ?? "denied"), requestId: event.requestId })
        : security.audit.append(event).catch((failure: unknown) => log.error({ err: failure }, "audit append failed")),
    metrics: metrics.registry,
    clock,
    log,
  });
  const context: ServerContext = { config, registry, hub, resolver, metrics, security, lifecycle, alerting, log, clock, plumbing };

  const requestGuard = createRequestGuard({
    firstMessageTimeoutMs: config.firstMessageTimeoutMs,
    onRefused: (reason) => metrics.guardRefusals.inc({ reason }),
  });
  const server = new GuardedServer({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    "grpc.max_concurrent_streams": config.maxConcurrentStreams,
    // Clients renew at half-life but show a new certificate only on new connections,
    // and the interceptor checks the connection's certificate on every call (ADR 0001):
    // retire connections well before a certificate can expire. A retired connection
    // keeps its open streams (the grace is unlimited); agentmesh's own clients move
    // theirs to a new connection at once (ADR 0004).
    "grpc.max_connection_age_ms": config.maxConnectionAgeMs || Math.max(1000, Math.floor(config.certTtlMs / 4)),
    // No server-initiated keepalive pings: grpc-js keeps pinging a connection after
    // its max-age GOAWAY, Node refuses pings on a closing session, and grpc-js then
    // destroys the session with every stream still on it (grpc-node#3068) — that,
    // not the grace, is what cut Connect and Watch at every connection age. Dead
    // sidecars are found by their heartbeats; clients ping us (allowed below).
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 5_000,
    // The guard first: it sees every message before authentication and handlers do.
    interceptors: security.tls ? [requestGuard, security.tls.auth.interceptor] : [requestGuard],
  });
  server.addService(RegistryServiceService, registryHandlers(registry, plumbing, metrics, security.opener));
  server.addService(
    OrchestratorServiceService,
    orchestratorHandlers(hub, resolver, plumbing, metrics, lifecycleHandlers(lifecycle, invoker, plumbing, () => clock.nowMs())),
  );
  server.addService(IdentityServiceService, identityHandlers(security.authority, security.audit, plumbing));
  const servedServices = ["agentmesh.v1.RegistryService", "agentmesh.v1.OrchestratorService", "agentmesh.v1.IdentityService"];
  const health = new MeshHealth(servedServices);
  health.addToServer(server);
  readiness.apply = () => health.setAll(isReady() ? "SERVING" : "NOT_SERVING");
  addReflection(server, servedServices);

  let closing: Promise<void> | undefined;
  const http = await startHttpEndpoints({
    host: config.httpHost,
    port: config.httpPort,
    metrics: metrics.registry,
    isLive: () => true,
    isReady,
    routes: dashboard.handle,
  });

  const credentials = security.tls?.credentials ?? ServerCredentials.createInsecure();
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${config.host}:${config.port}`, credentials, (error, port) => (error ? reject(error) : resolve(port))),
  );
  if (!security.tls) {
    log.warn({ host: config.host, port: grpcPort }, "INSECURE DEV MODE: plaintext gRPC without authentication, loopback only");
  } else {
    installTlsHooks(server, {
      handshakeTimeoutMs: config.tlsHandshakeTimeoutMs,
      onHandshakeFailure: (reason, remoteAddress) => {
        metrics.tlsHandshakeFailures.inc({ reason });
        log.debug({ reason, remoteAddress }, "connection closed before TLS completed");
      },
    });
  }
  detector.start();
  await changeLogDirectory?.start();
  // Active/active (ADR 0008): every replica serves every RPC; one leader reconciles.
  // The others store what they are asked to (deployments, scale, delete) and follow
  // the leader's rollout progress; the leader follows their writes.
  let deploymentFollower: ChangeFollower | undefined;
  let rolloutFollower: ChangeFollower | undefined;
  if (elector) {
    const followPrefix = async (prefix: string, onChange: (items: Uint8Array[]) => void): Promise<ChangeFollower> => {
      const follower = new ChangeFollower({
        log: state.log,
        prefix,
        wakeUps: state.coordination.wakeUps,
        pollIntervalMs: 1000,
        logger: log,
        onSnapshot: ({ items }) => onChange(items.map((item) => item.value)),
        onChanges: ({ changes }) => onChange(changes.flatMap((change) => (change.value ? [change.value] : []))),
      });
      await follower.start();
      return follower;
    };
    deploymentFollower = await followPrefix(stateKeys.deployments, () => {
      if (elector.state === "leader") lifecycle.requestReconcile();
    });
    rolloutFollower = await followPrefix(stateKeys.rollouts, (values) => {
      if (elector.state !== "leader") lifecycle.adoptRollouts(values.map((value) => Rollout.decode(value)));
    });
    onElected = () => void lifecycle.start().catch((error: unknown) => log.error({ err: error }, "could not start reconciling"));
    await elector.start();
    if (elector.state !== "leader") log.info({ replica: replicaId }, "serving; another replica leads and reconciles, taking over when its lease lapses");
  } else {
    await lifecycle.start();
  }
  alerting.start();
  // Handshakes fail until the first certificate is loaded: SERVING only after it.
  await security.tls?.source.ready;
  readiness.started = true;
  readiness.auditWritable = security.audit.writable;
  readiness.apply();
  log.info(
    { grpcPort, httpPort: http.port, trustDomain: config.trustDomain, mtls: Boolean(security.tls), store: state.describe },
    "agentmesh server started",
  );

  const close = (): Promise<void> => {
    closing ??= shutdown();
    return closing;
  };
  const shutdown = async (): Promise<void> => {
    readiness.closing = true;
    readiness.apply();
    log.info("shutting down: telling sidecars and ending streams");
    hub.shutdown("server shutting down", 500);
    for (const stream of streams.keys()) stream.end();
    streams.clear();
    detector.stop();
    lifecycle.stop();
    dashboard.close();
    invoker.close();
    await shutdownGrpc(server, config.shutdownGraceMs);
    await changeLogDirectory?.close();
    // Released, not left to lapse: another replica takes over at once.
    await elector?.stop();
    await alerting.close(1000);
    await closeHttp(http.server);
    await revocationFollower?.close();
    await deploymentFollower?.close();
    await rolloutFollower?.close();
    await sharedInstances?.close();
    await security.close();
    await state.close();
    log.info("server stopped");
  };

  return { ...context, grpcPort, httpPort: http.port, address: `${config.host}:${grpcPort}`, detector, close };
}

/** Alert rules from --alerts-config, plus one receiver per --alert-webhook. */
function alertsConfig(config: ServerConfig): AlertsConfig {
  const text = config.alertsConfigText ?? "{}";
  const parsed = parseAlertsConfigText(text);
  if (config.alertWebhooks.length === 0) return parsed;
  const raw = (parseYaml(text) ?? {}) as Record<string, unknown>;
  const receivers = [...(Array.isArray(raw.receivers) ? raw.receivers : []), ...config.alertWebhooks.map((url, index) => ({ name: `webhook-${index + 1}`, url }))];
  return parseAlertsConfig({ ...raw, receivers });
}

/** What goes into the server certificate: loopback, the host name, the bind address and --server-name. */
function serverNames(config: ServerConfig): { serverDnsNames: string[]; serverIpAddresses: string[] } {
  const names = new Set(["localhost", hostname(), config.host, ...config.serverNames]);
  const ipAddresses = new Set(["127.0.0.1", "::1"]);
  const dnsNames = new Set<string>();
  for (const name of names) {
    if (name === "0.0.0.0" || name === "::" || name === "") continue;
    if (isIP(name)) ipAddresses.add(name);
    else dnsNames.add(name.toLowerCase());
  }
  return { serverDnsNames: [...dnsNames], serverIpAddresses: [...ipAddresses] };
}

function shutdownGrpc(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** A revocation as sidecars receive it on Connect: enough to refuse the certificate until it expires. */
function revokedCertificate(record: RevocationRecord): RevokedCertificate {
  return { serial: record.serial, spiffeId: record.spiffeId, notAfterMs: record.notAfterMs };
}
