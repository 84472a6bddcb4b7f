// Shared state plumbing: the revisioned change log every service's durable state
// lives in, the coordination between replicas, and the pieces that keep an
// in-memory projection in step. docs/adr/0004-state-as-a-revisioned-change-log.md.

export type { Change, ChangeListener, ChangeLog, ChangeLogObserver, ChangesResult, ChangesSinceOptions, FencingToken, KeyValue, ResyncReason, TxnOp, TxnOptions, TxnResult } from "./ports.js";
export type { Coordination, LeaderLease, LeaderLock, LivenessLease, LivenessLeases, RateLimit, SharedNonceCache, SharedRateLimiter, Unsubscribe, WakeUps } from "./coordination-ports.js";
export { stateKeys, maxKeyBytes, maxOpsPerTxn, maxValueBytes } from "./keys.js";
export { ChangeFollower, type ChangeFollowerOptions, type FollowerPosition } from "./change-follower.js";
export { LeaderElector, type LeaderElectorOptions, type LeadershipState } from "./leader-election.js";
export { relayCommits } from "./wake-up-relay.js";
export { decodeJson, encodeJson } from "./json-codec.js";

// Adapters, for the wiring.
export { MemoryChangeLog, type MemoryChangeLogOptions } from "./adapters/memory-change-log.js";
export { SqliteChangeLog, type SqliteChangeLogOptions, type SqliteSynchronous } from "./adapters/sqlite-change-log.js";
export { PostgresDatabase, type PostgresDatabaseOptions } from "./adapters/postgres-database.js";
export { PostgresChangeLog, type PostgresChangeLogOptions } from "./adapters/postgres-change-log.js";
export { PostgresAuditLog, type PostgresAuditLogOptions } from "./adapters/postgres-audit-log.js";
export { InProcessCoordination } from "./adapters/in-process-coordination.js";
export { RedisCoordination, type RedisCoordinationOptions } from "./adapters/redis-coordination.js";
export type { GroupCommitOptions } from "./group-commit.js";
