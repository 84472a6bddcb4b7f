import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { ChangeLogCertificateStore } from "../identity/adapters/change-log-certificate-store.js";
import { ChangeLogJoinTokenStore } from "../identity/adapters/change-log-join-token-store.js";
import { ChangeLogRevocationStore } from "../identity/adapters/change-log-revocation-store.js";
import type { CertificateStore, JoinTokenStore, RevocationStore } from "../identity/ports.js";
import { ChangeLogDeploymentStore } from "../orchestrator/adapters/change-log-deployment-store.js";
import type { DeploymentStore } from "../orchestrator/ports.js";
import {
  type ChangeLog,
  type ChangeLogObserver,
  type Coordination,
  InProcessCoordination,
  PostgresAuditLog,
  PostgresChangeLog,
  PostgresDatabase,
  RedisCoordination,
  SqliteChangeLog,
  relayCommits,
} from "../state/index.js";

export type StoreKind = "embedded" | "postgres";

export interface StateStoreOptions {
  store: StoreKind;
  dataDir: string;
  postgresUrl?: string;
  postgresSchema?: string;
  redisUrl?: string;
  /** fsync each commit (SQLite synchronous=FULL); PostgreSQL follows its own synchronous_commit. */
  fsync: boolean;
  /** Keep at least this many revisions of history for Watch resumes; older ones are compacted. */
  retainRevisions: number;
  compactIntervalMs: number;
  /** How often a PostgreSQL store is probed for readiness. */
  probeIntervalMs: number;
  clock: Clock;
  log: Logger;
  observer?: ChangeLogObserver;
  /** The store became reachable or unreachable (PostgreSQL only; the embedded store is always reachable). */
  onHealthChange?: (healthy: boolean) => void;
}

/** The server's durable state: one change log and the stores of every service built on it (ADR 0004). */
export interface StateStore {
  kind: StoreKind;
  log: ChangeLog;
  coordination: Coordination;
  /** `coordination` is shared with other replicas (Redis), not in-process. */
  sharedCoordination: boolean;
  deployments: DeploymentStore;
  joinTokens: JoinTokenStore;
  certificates: CertificateStore;
  revocations: RevocationStore;
  /** The audit log in the store (PostgreSQL: one hash chain for every replica); absent for the embedded store, whose audit log is a file. */
  audit?: PostgresAuditLog;
  /** Reachable now (the last probe answered). */
  readonly healthy: boolean;
  /** Human-readable location for the startup line (never a password). */
  describe: string;
  close(): Promise<void>;
}

/**
 * Opens the state store: SQLite in `<data-dir>/state.db` (embedded, the default:
 * durable with no database server), or PostgreSQL (+ Redis for wake-ups and shared
 * coordination) for replicas. Fails with a MeshError naming what is wrong.
 */
export async function openStateStore(options: StateStoreOptions): Promise<StateStore> {
  const log = options.log.child({ component: "state-store" });
  if (options.store === "embedded") {
    if (options.postgresUrl || options.redisUrl) throw new MeshError("invalidArgument", "--postgres-url and --redis-url need --store postgres");
    const changeLog = await SqliteChangeLog.open({ dataDir: options.dataDir, synchronous: options.fsync ? "full" : "normal", observer: options.observer, logger: log });
    const coordination = new InProcessCoordination(options.clock);
    return assemble(options, log, changeLog, coordination, `sqlite ${options.dataDir}/state.db`, async () => undefined, () => true);
  }
  if (!options.postgresUrl) throw new MeshError("invalidArgument", "--store postgres needs --postgres-url");
  const database = await PostgresDatabase.open({ url: options.postgresUrl, schema: options.postgresSchema, logger: log });
  const changeLog = new PostgresChangeLog(database, { observer: options.observer });
  let coordination: Coordination;
  try {
    coordination = options.redisUrl ? await RedisCoordination.open({ url: options.redisUrl, clock: options.clock, logger: log }) : new InProcessCoordination(options.clock);
  } catch (error) {
    await changeLog.close();
    await database.close();
    throw error;
  }
  let healthy = true;
  const probe = async (): Promise<boolean> => {
    try {
      await database.pool.query("SELECT 1");
      return true;
    } catch {
      return false;
    }
  };
  const timer = setInterval(() => {
    void probe().then((ok) => {
      if (ok === healthy) return;
      healthy = ok;
      if (ok) log.warn("postgres reachable again: serving");
      else log.error("postgres unreachable: reporting NOT_SERVING and refusing writes until it returns");
      options.onHealthChange?.(ok);
    });
  }, options.probeIntervalMs);
  timer.unref();
  const stopRelay = options.redisUrl ? relayCommits(changeLog, coordination.wakeUps) : () => undefined;
  const audit = new PostgresAuditLog(database, { clock: options.clock, logger: log });
  return assemble(
    options,
    log,
    changeLog,
    coordination,
    `postgres ${redactUrl(options.postgresUrl)}${options.redisUrl ? ` + redis ${redactUrl(options.redisUrl)}` : ""}`,
    async () => {
      clearInterval(timer);
      stopRelay();
      await audit.close();
      await coordination.close();
      await database.close();
    },
    () => healthy,
    audit,
  );
}

async function assemble(
  options: StateStoreOptions,
  log: Logger,
  changeLog: ChangeLog,
  coordination: Coordination,
  describe: string,
  closeBackend: () => Promise<void>,
  isHealthy: () => boolean,
  audit?: PostgresAuditLog,
): Promise<StateStore> {
  // History is kept for Watch resumes and followers; compaction bounds it.
  const compactTimer = setInterval(() => {
    void (async () => {
      const current = await changeLog.currentRevision();
      if (current > options.retainRevisions) await changeLog.compact(current - options.retainRevisions);
    })().catch((error: unknown) => log.warn({ err: error }, "state store compaction failed; retrying at the next interval"));
  }, options.compactIntervalMs);
  compactTimer.unref();
  let closed: Promise<void> | undefined;
  return {
    kind: options.store,
    log: changeLog,
    coordination,
    sharedCoordination: !(coordination instanceof InProcessCoordination),
    deployments: new ChangeLogDeploymentStore(changeLog),
    joinTokens: new ChangeLogJoinTokenStore(changeLog),
    certificates: new ChangeLogCertificateStore(changeLog),
    revocations: new ChangeLogRevocationStore(changeLog),
    audit,
    get healthy() {
      return isHealthy();
    },
    describe,
    close: () => {
      closed ??= (async () => {
        clearInterval(compactTimer);
        await changeLog.close();
        await closeBackend();
      })();
      return closed;
    },
  };
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparseable url)";
  }
}
