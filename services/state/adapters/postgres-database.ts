import { randomUUID } from "node:crypto";
import pg from "pg";
import type { Logger } from "pino";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { type Migration, migrations as allMigrations } from "./postgres-migrations.js";

// The PostgreSQL side shared by the change log and the audit sink: one pool, one
// schema, migrations applied at open.
//
// Migrations run in one transaction under pg_advisory_xact_lock, so replicas that
// start together apply each version exactly once: the first takes the lock, the
// others wait, then find the versions recorded and skip them. A transaction-scoped
// lock, not pg_advisory_lock: behind PgBouncer in transaction mode consecutive
// statements of a "session" may run on different server connections, so a session
// lock can be taken on one and "released" on another (or never).
//
// Queries are unnamed (no prepared statement names) for the same reason: PgBouncer
// in transaction mode cannot keep per-connection prepared statements.

export interface PostgresDatabaseOptions {
  url: string;
  /** Schema holding the tables; created when missing. Lower-case identifier. */
  schema?: string;
  poolSize?: number;
  /** Client-side bound on one query, so a hung server fails calls instead of holding them. */
  queryTimeoutMs?: number;
  connectionTimeoutMs?: number;
  logger?: Logger;
  /** Epoch for a newly created store; defaults to a random UUID. */
  newEpoch?: () => string;
  /** For tests of upgrades; defaults to every migration this build knows. */
  migrations?: Migration[];
}

const schemaPattern = /^[a-z_][a-z0-9_]{0,62}$/;
const int8Oid = 20;

/** int8 as a JS number: revisions and seqs stay far below 2^53, and a value above it is an error, not a rounding. */
const types = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === int8Oid && format !== "binary") {
      return (text: string) => {
        const value = Number(text);
        if (!Number.isSafeInteger(value)) throw new Error(`int8 ${text} is beyond 2^53`);
        return value;
      };
    }
    return pg.types.getTypeParser(oid, format as "text");
  },
};

export class PostgresDatabase {
  private closed = false;

  private constructor(
    readonly pool: pg.Pool,
    /** Quoted schema name, for SQL text. */
    readonly schema: string,
    readonly epoch: string,
    private readonly logger: Logger | undefined,
  ) {}

  static async open(options: PostgresDatabaseOptions): Promise<PostgresDatabase> {
    const schemaName = options.schema ?? "agentmesh";
    if (!schemaPattern.test(schemaName)) throw new MeshError("invalidArgument", "postgres schema must be a lower-case identifier");
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
      query_timeout: options.queryTimeoutMs ?? 10_000,
      idleTimeoutMillis: 30_000,
      application_name: "agentmesh",
      types,
    });
    // An idle client whose server went away emits here; without a listener it would crash the process.
    pool.on("error", (error) => options.logger?.warn({ component: "state-store", err: error }, "idle postgres connection failed"));
    try {
      const epoch = await migrate(pool, schemaName, options.migrations ?? allMigrations, options.newEpoch ?? randomUUID);
      return new PostgresDatabase(pool, `"${schemaName}"`, epoch, options.logger);
    } catch (error) {
      await pool.end();
      if (error instanceof MeshError) throw error;
      options.logger?.error({ component: "state-store", err: error }, "postgres state store could not open");
      throw new MeshError("unavailable", "state store unavailable");
    }
  }

  /** Runs work in a transaction on one pooled connection; rolls back on any error. */
  async transaction<T>(work: (client: pg.PoolClient) => Promise<T>, begin = "BEGIN"): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query(begin);
      const result = await work(client);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error));
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      // A connection that failed mid-transaction may be in any state: drop it rather than reuse it.
      client.release(broken !== undefined && !(broken instanceof MeshError) ? broken : undefined);
    }
  }

  /** Database failures become one safe error; the cause goes to the log. */
  async guard<T>(operation: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (error instanceof MeshError) throw error;
      this.logger?.error({ component: "state-store", operation, err: error }, "postgres state store operation failed");
      throw new MeshError("unavailable", "state store unavailable");
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

async function migrate(pool: pg.Pool, schemaName: string, migrations: Migration[], newEpoch: () => string): Promise<string> {
  const s = `"${schemaName}"`;
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [`agentmesh:migrate:${schemaName}`]);
    // CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database; a pre-made schema must not.
    const exists = await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schemaName]);
    if (exists.rowCount === 0) await client.query(`CREATE SCHEMA ${s}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${s}.schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const applied = new Set((await client.query<{ version: number }>(`SELECT version FROM ${s}.schema_migrations`)).rows.map((row) => row.version));
    const newest = Math.max(0, ...applied);
    const known = Math.max(0, ...migrations.map((migration) => migration.version));
    if (newest > known) throw new MeshError("failedPrecondition", `state database schema version ${newest} is newer than this build (${known}); upgrade agentmesh`);
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await client.query(migration.sql(s));
      await client.query(`INSERT INTO ${s}.schema_migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
    }
    await client.query(`INSERT INTO ${s}.state_meta (id, epoch, revision, compacted_revision) VALUES (1, $1, 0, 0) ON CONFLICT (id) DO NOTHING`, [newEpoch()]);
    const row = await client.query<{ epoch: string }>(`SELECT epoch FROM ${s}.state_meta WHERE id = 1`);
    await client.query("COMMIT");
    const epoch = row.rows[0]?.epoch;
    if (!epoch) throw new Error("state_meta row missing");
    return epoch;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
