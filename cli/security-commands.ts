import { X509Certificate } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../sdk/ts/src/core/csr.js";
import { formatSpiffeId } from "../sdk/ts/src/core/spiffe-id.js";
import type { CreateJoinTokenResponse, ListAuditEventsResponse, RevokeCertificateResponse } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { verifyAuditLog } from "../sdk/ts/src/core/audit-log.js";
import { appendOfflineIssued } from "../services/identity/adapters/offline-issued-file.js";
import { caCertFileName, caKeyFileName, loadOrCreateCa, splitPemCertificates } from "../services/identity/domain/ca.js";
import { defaultServerConfig } from "../services/server/config.js";
import { CliError, inContext } from "./cli-error.js";
import { call, ctlAction, print } from "./ctl-command.js";
import { adminFiles, credentialsDirEnv, resolveCredentialsDir } from "./credentials.js";
import { durationOption, envOption, parseInteger } from "./options.js";

/** ctl commands for identity: init-admin, join-token, certs, audit. */
export function addSecurityCommands(ctl: Command): void {
  const initAdmin = ctl
    .command("init-admin")
    .description("on the server host: issue an admin certificate from the CA in the server's data dir, for ctl and grpcurl")
    .addOption(envOption("--data-dir <dir>", "AGENTMESH_DATA_DIR", "the server's data dir (holds the CA)", defaultServerConfig.dataDir))
    .addOption(envOption("--trust-domain <domain>", "AGENTMESH_TRUST_DOMAIN", "SPIFFE trust domain", defaultServerConfig.trustDomain))
    .option("--name <name>", "admin name in spiffe://<td>/admin/<name>", "operator")
    .option("--out <dir>", "where to write admin-cert.pem, admin-key.pem, ca.pem (default: where ctl looks, see --credentials-dir)")
    .addOption(durationOption("--ttl <duration>", "certificate lifetime", "24h"))
    .option("--create-ca", "create a new CA in --data-dir when it holds none (only servers started on that data dir will trust it)");
  initAdmin.action(async () => {
    const options = initAdmin.optsWithGlobals() as { dataDir: string; trustDomain: string; name: string; out?: string; ttl: number; credentialsDir?: string; createCa?: boolean };
    const dataDir = resolve(options.dataDir);
    const present = [caCertFileName, caKeyFileName].filter((file) => existsSync(join(dataDir, file)));
    // A mistyped --data-dir must not quietly create a CA no server uses (the credentials would be refused everywhere).
    if (present.length === 0 && !options.createCa) {
      throw CliError.failed(`no CA in ${dataDir} (--data-dir): give the running server's --data-dir, or add --create-ca to create a new CA there`);
    }
    if (present.length === 1) throw CliError.failed(`the CA in ${dataDir} is incomplete: ${present[0] === caCertFileName ? caKeyFileName : caCertFileName} is missing`);
    const ca = await inContext({ kind: "directory", flag: "--data-dir", path: dataDir }, () =>
      loadOrCreateCa({ dataDir, trustDomain: options.trustDomain, clock: systemClock }),
    );
    const spiffeId = formatSpiffeId({ trustDomain: options.trustDomain, kind: "admin", name: options.name });
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(spiffeId);
    const issued = await ca.issueCertificate({ csrPem, spiffeId, ttlMs: options.ttl });
    // No server signs this one: the record beside the CA is what lets `ctl certs revoke` find it.
    await inContext({ kind: "directory", flag: "--data-dir", path: dataDir }, () =>
      appendOfflineIssued(dataDir, { serial: issued.serial, spiffeId: issued.spiffeId, issuedAtMs: Date.now(), notAfterMs: issued.expiresAtMs }),
    );
    const lookup = resolveCredentialsDir(options.credentialsDir, initAdmin.getOptionValueSourceWithGlobals("credentialsDir"));
    const out = options.out === undefined ? lookup.dir : resolve(options.out);
    await inContext({ kind: "directory", flag: options.out === undefined ? "--credentials-dir" : "--out", path: out }, () => {
      mkdirSync(out, { recursive: true, mode: 0o700 });
      writeFileSync(join(out, adminFiles.key), privateKeyPem, { mode: 0o600 });
      chmodSync(join(out, adminFiles.key), 0o600);
      writeFileSync(join(out, adminFiles.cert), issued.chainPem.join(""));
      writeFileSync(join(out, adminFiles.ca), ca.trustBundle().join(""));
    });
    const found = out === lookup.dir ? "ctl finds them there" : `ctl finds them with --credentials-dir ${out} or ${credentialsDirEnv}=${out}`;
    process.stdout.write(
      `${spiffeId}\nserial ${issued.serial}, expires ${new Date(issued.expiresAtMs).toISOString()}\nwrote ${out}/{${adminFiles.cert},${adminFiles.key},${adminFiles.ca}}; ${found}\n`,
    );
  });

  const joinToken = ctl
    .command("join-token")
    .description("create a join token for a sidecar (admin)")
    .requiredOption("--host <host>", "the sidecar's host name: it becomes spiffe://<td>/sidecar/<host>")
    .requiredOption("--agents <names>", "comma-separated agent names it may register, or *")
    .option("--uses <n>", "how many joins it allows", parseInteger("--uses", 1, 100_000), 1)
    .addOption(durationOption("--ttl <duration>", "how long it is valid", "10m"));
  joinToken.action(
    ctlAction(joinToken, async ({ identity, options }) => {
      const flags = joinToken.opts() as { host: string; agents: string; uses: number; ttl: number };
      const response = await call<CreateJoinTokenResponse>((metadata, callOptions, callback) =>
        identity.createJoinToken(
          {
            host: flags.host,
            allowedAgentNames: flags.agents.split(",").map((name) => name.trim()).filter((name) => name !== ""),
            maxUses: flags.uses,
            ttlSeconds: Math.ceil(flags.ttl / 1000),
          },
          metadata,
          callOptions,
          callback,
        ),
      );
      print(options, response, () => `${response.token}\n# token id ${response.tokenId}, expires ${new Date(response.expiresAtMs).toISOString()}`);
    }),
  );

  const certs = ctl.command("certs").description("certificates");
  const revoke = certs.command("revoke <target>").description("revoke a certificate by serial (hex) or every certificate of a SPIFFE ID").option("--reason <text>", "why", "");
  revoke.action(
    ctlAction(revoke, async ({ identity, options }, target: string) => {
      const flags = revoke.opts() as { reason: string };
      const response = await call<RevokeCertificateResponse>((metadata, callOptions, callback) =>
        identity.revokeCertificate({ target, reason: flags.reason }, metadata, callOptions, callback),
      );
      // A revoke that matches nothing must not look like one that worked (nor exit 0 in a script).
      if (response.revoked === 0) {
        throw CliError.failed(`nothing revoked: ${target} has no valid certificate that is not revoked already`);
      }
      print(options, response, () => `revoked ${response.revoked} certificate(s)`);
    }),
  );

  const audit = ctl.command("audit").description("the tamper-evident audit log");
  const tail = audit.command("tail").description("the most recent audit entries").option("-n, --lines <n>", "how many", parseInteger("--lines", 1, 1000), 20);
  tail.action(
    ctlAction(tail, async ({ identity, options }) => {
      const flags = tail.opts() as { lines: number };
      const response = await call<ListAuditEventsResponse>((metadata, callOptions, callback) =>
        identity.listAuditEvents({ limit: flags.lines }, metadata, callOptions, callback),
      );
      print(options, response.entriesJson.map(parseAuditLine), () => response.entriesJson.join("\n"));
    }),
  );
  const verify = audit
    .command("verify")
    .description("check the hash chain of an audit log (a file and its signed head record, or the PostgreSQL table of --store postgres); exits 1 naming the first bad entry")
    .addOption(envOption("--data-dir <dir>", "AGENTMESH_DATA_DIR", "the server's data dir", defaultServerConfig.dataDir))
    .option("--file <path>", `audit log file (default <data-dir>/audit.log); with ctl's --ca-cert, the CA certificate(s) its head is signed with (default <data-dir>/${caCertFileName})`)
    .addOption(envOption("--postgres-url <url>", "AGENTMESH_POSTGRES_URL", "verify the audit log of servers run with --store postgres: the one chain of every replica, in this database (unless --file is given)"))
    .addOption(envOption("--postgres-schema <name>", "AGENTMESH_POSTGRES_SCHEMA", "schema holding agentmesh's tables", defaultServerConfig.postgresSchema));
  verify.action(async () => {
    const flags = verify.optsWithGlobals() as { dataDir: string; file?: string; caCert?: string; postgresUrl?: string; postgresSchema: string };
    if (flags.file === undefined && flags.postgresUrl !== undefined) {
      await verifyPostgresAudit(flags.postgresUrl, flags.postgresSchema);
      return;
    }
    const path = flags.file ?? join(flags.dataDir, "audit.log");
    // The server's own log is checked against its CA; another file (a sidecar's, unsigned) only with --ca-cert.
    const caPath = flags.caCert ?? (flags.file === undefined ? join(flags.dataDir, caCertFileName) : undefined);
    const fail = (line: number, reason: string) => {
      process.stdout.write(`FAILED${line > 0 ? ` at line ${line}` : ""}: ${reason}\n`);
      process.exitCode = 1;
    };
    let publicKeys: X509Certificate["publicKey"][] | undefined;
    try {
      if (caPath !== undefined && (flags.caCert !== undefined || existsSync(caPath))) {
        publicKeys = splitPemCertificates(readFileSync(caPath, "utf8")).map((pem) => new X509Certificate(pem).publicKey);
      }
    } catch (error) {
      fail(0, `cannot read ${caPath}: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const result = await verifyAuditLog(path, publicKeys ? { headKeys: { publicKeys } } : {}).catch((error: unknown) => ({
      ok: false as const,
      line: 0,
      reason: error instanceof Error ? error.message : String(error),
    }));
    if (!result.ok) {
      fail(result.line, result.reason);
      return;
    }
    const anchor = result.anchor ? `${result.anchor.signed ? "signed" : "unsigned"} head at seq ${result.anchor.seq}` : "empty log";
    const notes = [
      result.entriesPastAnchor > 0 ? `${result.entriesPastAnchor} entries after the head (written just before a stop)` : "",
      result.tornTailBytes > 0 ? `an incomplete last line of ${result.tornTailBytes} bytes (a torn write) ignored` : "",
    ].filter((note) => note !== "");
    process.stdout.write(`ok: ${result.entries} entries, chain intact, ${anchor}${notes.length > 0 ? `; ${notes.join("; ")}` : ""}\n`);
  });
}

/** `ctl audit verify --postgres-url`: the chain in the table, and its end against the head row (rows cut off the end are found). */
async function verifyPostgresAudit(url: string, schema: string): Promise<void> {
  // Loaded here: every other ctl command starts without the database drivers.
  const [{ PostgresAuditLog, PostgresDatabase }, { redactUrl }] = await Promise.all([import("../services/state/index.js"), import("../services/server/state-store.js")]);
  let database: Awaited<ReturnType<typeof PostgresDatabase.open>>;
  try {
    database = await PostgresDatabase.open({ url, schema, poolSize: 1 });
  } catch (error) {
    throw CliError.failed(`cannot open the audit log in ${redactUrl(url)} (schema ${schema}): ${error instanceof Error ? error.message : String(error)}`);
  }
  try {
    const result = await new PostgresAuditLog(database, { clock: systemClock }).verify();
    if (!result.ok) {
      process.stdout.write(`FAILED at entry ${result.line}: ${result.reason}\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(`ok: ${result.entries} entries, chain intact, ends at the head row (seq ${result.head.seq})\n`);
  } finally {
    await database.close();
  }
}

/** An entry as JSON, or what the server sent when it is not JSON: `tail` shows everything and never crashes. */
function parseAuditLine(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return { unparsable: line };
  }
}
