import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from "prom-client";
import type { AuditStats } from "../../sdk/ts/src/core/audit-log.js";
import { healthStateName } from "../registry/domain/health-state.js";
import type { Registry } from "../registry/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

/** All server metrics, on a registry of their own so several servers can share a process (tests). */
export class ServerMetrics {
  readonly registry = new PromRegistry();
  readonly registrations: Counter<"outcome">;
  readonly deregistrations: Counter<"reason">;
  readonly heartbeats: Counter;
  readonly detections: Counter<"reason">;
  readonly stateTransitions: Counter<"from" | "to">;
  readonly connectStreams: Gauge;
  readonly watchStreams: Gauge;
  readonly rpcDuration: Histogram<"method" | "code">;
  readonly detectionDelay: Histogram<"reason">;
  readonly resolves: Counter<"outcome">;
  readonly limitRejections: Counter<"limit">;
  readonly commands: Counter<"action" | "outcome">;
  readonly rollbacks: Counter<"deployment">;
  readonly sidecarDirectory: Counter<"event">;
  readonly registryReplication: Counter<"event">;
  readonly refusals: Counter<"action" | "authenticated" | "audit">;
  readonly auditWritable: Gauge;
  readonly guardRefusals: Counter<"reason">;
  readonly tlsHandshakeFailures: Counter<"reason">;
  readonly dataPlaneRefusals: Counter<"sidecar" | "reason">;

  constructor(registryOf: () => Registry | undefined, auditStatsOf: () => AuditStats | undefined = () => undefined) {
    const registers = [this.registry];
    // prom-client names these process_* and nodejs_* already: agentmesh_process_cpu_seconds_total, not agentmesh_process_process_….
    collectDefaultMetrics({ register: this.registry, prefix: "agentmesh_" });
    this.registrations = new Counter({
      name: "agentmesh_registrations_total",
      help: "Register calls by outcome (ok, invalid, denied, error).",
      labelNames: ["outcome"],
      registers,
    });
    this.deregistrations = new Counter({
      name: "agentmesh_deregistrations_total",
      help: "Instances removed from the registry.",
      labelNames: ["reason"],
      registers,
    });
    this.heartbeats = new Counter({ name: "agentmesh_heartbeats_total", help: "Instance heartbeats received.", registers });
    this.detections = new Counter({
      name: "agentmesh_detections_total",
      help: "Instances found unhealthy, by how (heartbeat_timeout, stream_lost, reported).",
      labelNames: ["reason"],
      registers,
    });
    this.stateTransitions = new Counter({
      name: "agentmesh_state_transitions_total",
      help: "Health state changes of agent instances.",
      labelNames: ["from", "to"],
      registers,
    });
    this.connectStreams = new Gauge({ name: "agentmesh_connect_streams", help: "Open Connect streams.", registers });
    this.watchStreams = new Gauge({ name: "agentmesh_watch_streams", help: "Open Watch streams.", registers });
    this.rpcDuration = new Histogram({
      name: "agentmesh_rpc_duration_seconds",
      help: "Server-side duration of unary RPCs.",
      labelNames: ["method", "code"],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.detectionDelay = new Histogram({
      name: "agentmesh_detection_delay_seconds",
      help: "Time from the last heartbeat to an instance being marked unhealthy.",
      labelNames: ["reason"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 5, 10],
      registers,
    });
    this.resolves = new Counter({
      name: "agentmesh_resolves_total",
      help: "Resolve calls by outcome (picked, no_instance).",
      labelNames: ["outcome"],
      registers,
    });
    this.limitRejections = new Counter({
      name: "agentmesh_limit_rejections_total",
      help: "Calls refused with RESOURCE_EXHAUSTED, by the limit that refused them.",
      labelNames: ["limit"],
      registers,
    });
    this.dataPlaneRefusals = new Counter({
      name: "agentmesh_dataplane_refusals_total",
      help: "Calls a sidecar's inbound side refused at admission (signature, certificate, allow rules), as reported on Connect.",
      labelNames: ["sidecar", "reason"],
      registers,
    });
    this.commands = new Counter({
      name: "agentmesh_commands_total",
      help: "Lifecycle commands sent to sidecars (outcome sent) and their results (ok, failed).",
      labelNames: ["action", "outcome"],
      registers,
    });
    this.sidecarDirectory = new Counter({
      name: "agentmesh_sidecar_directory_events_total",
      help: "Sidecar sessions and commands shared between replicas through the state store (docs/adr/0009), by event.",
      labelNames: ["event"],
      registers,
    });
    this.registryReplication = new Counter({
      name: "agentmesh_registry_replication_events_total",
      help: "Registrations shared between replicas (docs/adr/0008), by event: write_conflict (redone after catching up), takeover (an instance taken over from a replica whose lease lapsed).",
      labelNames: ["event"],
      registers,
    });
    this.rollbacks = new Counter({
      name: "agentmesh_rollbacks_total",
      help: "Rolling updates rolled back automatically.",
      labelNames: ["deployment"],
      registers,
    });
    this.refusals = new Counter({
      name: "agentmesh_refusals_total",
      help: "Refused calls, connections and messages by audit action; audit=entry when written on its own, sampled when only counted in a summary entry.",
      labelNames: ["action", "authenticated", "audit"],
      registers,
    });
    this.auditWritable = new Gauge({
      name: "agentmesh_audit_writable",
      help: "1 while the audit log can be written; 0 while audited actions are refused.",
      registers,
    });
    this.auditWritable.set(1);
    this.guardRefusals = new Counter({
      name: "agentmesh_request_guard_refusals_total",
      help: "Calls ended before a handler: first message too late (first_message_timeout) or not decodable (undecodable).",
      labelNames: ["reason"],
      registers,
    });
    this.tlsHandshakeFailures = new Counter({
      name: "agentmesh_tls_handshake_failures_total",
      help: "Connections closed before TLS completed, by reason (timeout, or the TLS error code).",
      labelNames: ["reason"],
      registers,
    });
    const auditCounter = (name: string, help: string, pick: (stats: AuditStats) => number) => {
      let seen = 0;
      new Counter({
        name,
        help,
        registers,
        collect() {
          const stats = auditStatsOf();
          if (!stats) return;
          const value = pick(stats);
          if (value > seen) this.inc(value - seen);
          seen = value;
        },
      });
    };
    auditCounter("agentmesh_audit_writes_total", "Batches of audit entries written (one write each).", (stats) => stats.writes);
    auditCounter("agentmesh_audit_fsyncs_total", "fdatasync calls on the audit log (one per batch with --audit-fsync).", (stats) => stats.syncs);
    auditCounter("agentmesh_audit_dropped_entries_total", "Audit entries refused or lost because the log could not be written.", (stats) => stats.droppedEntries);
    new Gauge({
      name: "agentmesh_agents",
      help: "Registered agent instances by health state.",
      labelNames: ["state"],
      registers,
      collect() {
        const counts = registryOf()?.countByState() ?? new Map<HealthState, number>();
        for (const state of Object.values(HealthState)) {
          if (typeof state !== "number" || state <= 0) continue;
          this.set({ state: healthStateName(state).toLowerCase() }, counts.get(state) ?? 0);
        }
      },
    });
  }
}
