// Versioned schema of the PostgreSQL store. Append only: a released migration is
// never edited (replicas of the old version may be running it); a change is a new
// entry. `s` is the quoted schema name.

export interface Migration {
  version: number;
  name: string;
  sql: (s: string) => string;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: "change log",
    sql: (s) => `
      -- One row: the epoch, the revision counter (its row lock is the commit order) and
      -- the compaction watermark.
      CREATE TABLE ${s}.state_meta (
        id int PRIMARY KEY CHECK (id = 1),
        epoch text NOT NULL,
        revision bigint NOT NULL,
        compacted_revision bigint NOT NULL
      );
      -- "C" collation: byte order, so prefix ranges are index ranges and agree with SQLite.
      CREATE TABLE ${s}.state_keys (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL,
        mod_revision bigint NOT NULL,
        create_revision bigint NOT NULL
      );
      CREATE TABLE ${s}.state_changes (
        revision bigint NOT NULL,
        seq int NOT NULL,
        key text COLLATE "C" NOT NULL,
        value bytea,
        previous_revision bigint NOT NULL,
        PRIMARY KEY (revision, seq)
      );
      CREATE TABLE ${s}.state_fences (
        name text COLLATE "C" PRIMARY KEY,
        token bigint NOT NULL
      );`,
  },
  {
    version: 2,
    name: "audit log",
    sql: (s) => `
      -- One row per audit entry; line is the entry exactly as the file format writes it
      -- (canonical JSON), so verify recomputes hashes from what is stored.
      CREATE TABLE ${s}.audit_log (
        seq bigint PRIMARY KEY,
        line text NOT NULL,
        hash text NOT NULL
      );
      -- The chain head; appenders lock this row, which orders the chain across replicas.
      CREATE TABLE ${s}.audit_head (
        id int PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL
      );
      INSERT INTO ${s}.audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));
      -- Append only, enforced by the database and not only by this code.
      CREATE FUNCTION ${s}.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'audit_log is append-only';
        END;
      $$;
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON ${s}.audit_log
        FOR EACH ROW EXECUTE FUNCTION ${s}.audit_log_append_only();
      CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ${s}.audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION ${s}.audit_log_append_only();`,
  },
];
