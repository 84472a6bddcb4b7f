// The mistakes a new operator makes, with the real binary: each prints exactly one
// line on stderr naming the problem and the fix, and exits with the documented code
// (README "Exit codes": 1 = the command failed, 2 = the command line is wrong).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type CommandResult, type ServerProcess, cliPath, run, startServerProcess, tempDir } from "../helpers/processes.js";

let servers: ServerProcess[] = [];
let blockers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await server.stop("SIGKILL");
  for (const blocker of blockers.splice(0)) await new Promise((resolve) => blocker.close(resolve));
});

/** A home of its own, so the per-user credentials default never touches the real one. */
function isolatedHome(): NodeJS.ProcessEnv {
  return { HOME: tempDir("agentmesh-home-"), XDG_CONFIG_HOME: "", AGENTMESH_CREDENTIALS_DIR: "", AGENTMESH_LOG_LEVEL: "", AGENTMESH_SERVER: "" };
}

const agentmesh = (args: string[], env: NodeJS.ProcessEnv = isolatedHome()) => run(process.execPath, [cliPath, ...args], 30_000, { env: cleanEnv(env) });

/** Empty strings stand for "unset" (commander would read an empty AGENTMESH_* as a value). */
function cleanEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [key, value] of Object.entries(merged)) if (value === "" && key.startsWith("AGENTMESH_")) delete merged[key];
  return merged;
}

function expectOneLine(result: CommandResult, line: string, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code, stderr: `error: ${line}\n` });
}

/** A port something else holds for the duration of the test. */
async function occupiedPort(): Promise<number> {
  const blocker = createServer();
  blockers.push(blocker);
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const address = blocker.address();
  return typeof address === "object" && address ? address.port : 0;
}

/** A port nobody listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const address = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return typeof address === "object" && address ? address.port : 0;
}

async function mtlsServer(extraArgs: string[] = []): Promise<ServerProcess> {
  const server = await startServerProcess(extraArgs);
  servers.push(server);
  return server;
}

/** init-admin for `server` into a fresh credentials dir. */
async function adminFor(server: ServerProcess): Promise<string> {
  const credentialsDir = join(tempDir(), "admin");
  const result = await agentmesh(["ctl", "init-admin", "--data-dir", server.dataDir, "--out", credentialsDir]);
  expect(result.code).toBe(0);
  return credentialsDir;
}

describe("server and sidecar startup mistakes", () => {
  const logLevelLine = "option '--log-level <level>' argument 'chatty' is invalid. Allowed choices are trace, debug, info, warn, error, fatal, silent.";

  it.each([["server"], ["sidecar"]])("%s --log-level chatty is a usage error", async (command) => {
    const result = await agentmesh([command, "--log-level", "chatty"]);
    expectOneLine(result, logLevelLine, 2);
    expect(result.stdout).toBe("");
  });

  it("AGENTMESH_LOG_LEVEL=chatty names the variable", async () => {
    const result = await agentmesh(["server"], { ...isolatedHome(), AGENTMESH_LOG_LEVEL: "chatty" });
    expectOneLine(result, "option '--log-level <level>' value 'chatty' from env 'AGENTMESH_LOG_LEVEL' is invalid. Allowed choices are trace, debug, info, warn, error, fatal, silent.", 2);
  });

  it("server --alerts-config missing.yaml: one line on stderr, the same problem in the JSON log, no stack", async () => {
    const dataDir = tempDir();
    const result = await agentmesh(["server", "--port", "0", "--http-port", "0", "--data-dir", dataDir, "--alerts-config", "missing.yaml"]);
    expectOneLine(result, "cannot read --alerts-config missing.yaml: no such file or directory", 1);
    const logged = result.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(logged).toEqual([expect.objectContaining({ level: 50, msg: "cannot start server", problem: "cannot read --alerts-config missing.yaml: no such file or directory" })]);
    expect(result.stdout).not.toContain("stack");
  });

  it("--log-level debug adds the stack trace of the cause", async () => {
    const result = await agentmesh(["server", "--port", "0", "--http-port", "0", "--data-dir", tempDir(), "--alerts-config", "missing.yaml", "--log-level", "debug"]);
    expect(result.code).toBe(1);
    const [first, second, third] = result.stderr.split("\n");
    expect(first).toBe("error: cannot read --alerts-config missing.yaml: no such file or directory");
    expect(second).toMatch(/^Error: ENOENT: no such file or directory, open 'missing.yaml'$/);
    expect(third).toMatch(/^ {4}at /);
  });

  it("server --alerts-config with a bad rule names the file and the rule", async () => {
    const file = join(tempDir(), "alerts.yaml");
    writeFileSync(file, "rules:\n  - name: AgentDown\n    for: 1.5\n");
    const result = await agentmesh(["server", "--port", "0", "--http-port", "0", "--data-dir", tempDir(), "--alerts-config", file]);
    expectOneLine(result, `--alerts-config ${file}: alerts.rules[0].for: needs a unit, like 1.5s or 1.5ms`, 1);
  });

  it("a gRPC port already in use", async () => {
    const port = await occupiedPort();
    const result = await agentmesh(["server", "--port", String(port), "--http-port", "0", "--data-dir", tempDir()]);
    expectOneLine(result, `cannot listen on 127.0.0.1:${port} (--port): address already in use; stop the process using it or choose another --port`, 1);
  });

  it("an HTTP port already in use", async () => {
    const port = await occupiedPort();
    const result = await agentmesh(["server", "--port", "0", "--http-port", String(port), "--data-dir", tempDir()]);
    expectOneLine(result, `cannot listen on 127.0.0.1:${port} (--http-port): address already in use; stop the process using it or choose another --http-port`, 1);
  });

  it("a sidecar's ports already in use", async () => {
    const port = await occupiedPort();
    const local = await agentmesh(["sidecar", "--insecure-dev", "--server", `127.0.0.1:${await closedPort()}`, "--inbound-port", "0", "--local-port", String(port), "--http-port", "0", "--data-dir", tempDir()]);
    expectOneLine(local, `cannot listen on 127.0.0.1:${port} (--local-port): address already in use; stop the process using it or choose another --local-port`, 1);
    const inbound = await agentmesh(["sidecar", "--insecure-dev", "--server", `127.0.0.1:${await closedPort()}`, "--inbound-port", String(port), "--local-port", "0", "--http-port", "0", "--data-dir", tempDir()]);
    expectOneLine(inbound, `cannot listen on 127.0.0.1:${port} (--inbound-port): address already in use; stop the process using it or choose another --inbound-port`, 1);
  });

  // As root (CI), permission bits do not stop a write: a regular file where a directory
  // must be does, for root as for anyone.
  it("a data dir that cannot be written: under a regular file, or a regular file itself", async () => {
    const dir = tempDir();
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "");
    const under = await agentmesh(["server", "--port", "0", "--http-port", "0", "--data-dir", join(file, "data")]);
    expectOneLine(under, `cannot use --data-dir ${join(file, "data")}: ${file} is a file, not a directory; choose a writable --data-dir`, 1);
    const itself = await agentmesh(["server", "--port", "0", "--http-port", "0", "--data-dir", file]);
    expectOneLine(itself, `cannot use --data-dir ${file}: it is a file, not a directory; choose a writable --data-dir`, 1);
    const sidecar = await agentmesh(["sidecar", "--insecure-dev", "--inbound-port", "0", "--local-port", "0", "--http-port", "0", "--data-dir", join(file, "sidecar")]);
    expectOneLine(sidecar, `cannot use --data-dir ${join(file, "sidecar")}: ${file} is a file, not a directory; choose a writable --data-dir`, 1);
  });

  it("plaintext on a non-loopback address is a usage error", async () => {
    const result = await agentmesh(["server", "--insecure-dev", "--host", "0.0.0.0", "--port", "0", "--http-port", "0", "--data-dir", tempDir()]);
    expectOneLine(result, "--insecure-dev serves plaintext and only binds 127.0.0.1; remove --host or the dev flag", 2);
  });

  it("a sidecar whose server is not running", async () => {
    const port = await closedPort();
    const ca = join(tempDir(), "ca.pem");
    writeFileSync(ca, "");
    const result = await agentmesh(["sidecar", "--server", `127.0.0.1:${port}`, "--join-token", "x", "--ca-cert", ca, "--inbound-port", "0", "--local-port", "0", "--http-port", "0", "--data-dir", tempDir()]);
    expectOneLine(result, `no agentmesh server at 127.0.0.1:${port} (connection refused): start one with 'agentmesh server', or point --server at it`, 1);
  });
});

describe("usage errors exit 2 in one line", () => {
  it.each<[string[], string]>([
    [["ctl", "agentz"], "unknown command 'agentz' (Did you mean one of agent, agents?)"],
    [["ctl", "agents", "--bogus"], "unknown option '--bogus'"],
    [["ctl", "agent"], "missing required argument 'instance-id'"],
    [["ctl", "-o", "yaml", "agents"], "option '-o, --output <format>' argument 'yaml' is invalid. Allowed choices are table, json."],
    [["ctl", "rollout", "status", "echo", "--timeout", "10"], "option '--timeout <duration>' argument '10' is invalid. \"10\" needs a unit, like 10s or 10ms"],
    [["ctl", "--server", "127.0.0.1:99999", "agents"], "option '--server <address>' argument '127.0.0.1:99999' is invalid. --server 127.0.0.1:99999: the port must be 1-65535"],
    [["server", "--port", "http"], "option '--port <port>' argument 'http' is invalid. --port must be an integer 0-65535"],
    [["ctl", "agents", "--state", "bogus"], "option '--state <state>' argument 'bogus' is invalid. not a state; use one of STARTING, READY, DEGRADED, UNHEALTHY, DRAINING, STOPPED, FAILED"],
  ])("agentmesh %j", async (args, line) => {
    const result = await agentmesh(args);
    expectOneLine(result, line, 2);
  });

  it("a command group without its subcommand prints its help and exits 2; --help exits 0", async () => {
    const group = await agentmesh(["ctl", "certs"]);
    expect(group.code).toBe(2);
    expect(group.stderr).toContain("Usage: agentmesh ctl certs");
    const help = await agentmesh(["ctl", "--help"]);
    expect({ code: help.code, stderr: help.stderr }).toEqual({ code: 0, stderr: "" });
  });
});

describe("ctl against the wrong server", () => {
  it("a server that is not running, in plaintext and with mTLS", async () => {
    const port = await closedPort();
    const plaintext = await agentmesh(["ctl", "--plaintext", "--server", `127.0.0.1:${port}`, "agents"]);
    expectOneLine(plaintext, `no agentmesh server at 127.0.0.1:${port} (connection refused): start one with 'agentmesh server', or point --server at it`, 1);
  });

  it("plaintext ctl against an mTLS server, and mTLS ctl against a plaintext one", async () => {
    const secure = await mtlsServer();
    const insecure = await mtlsServer(["--insecure-dev"]);
    const credentialsDir = await adminFor(secure);
    const plaintext = await agentmesh(["ctl", "--plaintext", "--server", secure.address, "agents"]);
    expectOneLine(plaintext, `the server at ${secure.address} requires mTLS: drop --plaintext (ctl then uses the admin credentials from 'agentmesh ctl init-admin')`, 1);
    const tls = await agentmesh(["ctl", "--credentials-dir", credentialsDir, "--server", insecure.address, "agents"]);
    expectOneLine(tls, `the server at ${insecure.address} speaks plaintext (it runs with --insecure-dev): add --plaintext`, 1);
  }, 60_000);

  it("credentials of another mesh name the credentials used", async () => {
    const secure = await mtlsServer();
    const otherDataDir = tempDir();
    const otherCredentials = join(tempDir(), "other");
    expect((await agentmesh(["ctl", "init-admin", "--data-dir", otherDataDir, "--create-ca", "--out", otherCredentials])).code).toBe(0);
    const result = await agentmesh(["ctl", "--credentials-dir", otherCredentials, "--server", secure.address, "agents"]);
    expectOneLine(
      result,
      `the server at ${secure.address} presents a certificate the CA of ${otherCredentials} (--credentials-dir) did not sign: run 'agentmesh ctl init-admin' against this server's --data-dir`,
      1,
    );
  }, 60_000);

  it("--server without a port dials 7420, not 443", async () => {
    // 127.0.0.2 is loopback too, so port 7420 there is free even while a server runs on 127.0.0.1:7420.
    const server = await mtlsServer(["--host", "127.0.0.2", "--port", "7420"]);
    expect(server.address).toBe("127.0.0.2:7420");
    const credentialsDir = await adminFor(server);
    const result = await agentmesh(["ctl", "--credentials-dir", credentialsDir, "--server", "127.0.0.2", "agents"]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
    expect(result.stdout).toMatch(/^NAME\s+VERSION\s+INSTANCE/);
  });
});

describe("ctl init-admin and where ctl finds credentials", () => {
  it("refuses a data dir without a CA instead of creating one, unless --create-ca", async () => {
    const wrong = join(tempDir(), "typo");
    const refused = await agentmesh(["ctl", "init-admin", "--data-dir", wrong]);
    expectOneLine(refused, `no CA in ${wrong} (--data-dir): give the running server's --data-dir, or add --create-ca to create a new CA there`, 1);
    expect(existsSync(wrong)).toBe(false);
    const out = join(tempDir(), "admin");
    const created = await agentmesh(["ctl", "init-admin", "--data-dir", wrong, "--create-ca", "--out", out]);
    expect({ code: created.code, stderr: created.stderr }).toEqual({ code: 0, stderr: "" });
    expect(existsSync(join(wrong, "ca-cert.pem")) && existsSync(join(out, "admin-cert.pem"))).toBe(true);
  });

  it("writes to the per-user default and ctl finds them there from any directory; says where they were looked for when missing", async () => {
    const server = await mtlsServer();
    const home = isolatedHome();
    const defaultDir = join(String(home.HOME), ".config", "agentmesh", "admin");
    const missing = await agentmesh(["ctl", "--server", server.address, "agents"], home);
    expectOneLine(
      missing,
      `no admin credentials in ${defaultDir} (the per-user default): run 'agentmesh ctl init-admin' on the server host, pass --credentials-dir, or --plaintext for an --insecure-dev server`,
      1,
    );
    const initialized = await agentmesh(["ctl", "init-admin", "--data-dir", server.dataDir], home);
    expect(initialized.code).toBe(0);
    expect(initialized.stdout.split("\n")[2]).toBe(`wrote ${defaultDir}/{admin-cert.pem,admin-key.pem,ca.pem}; ctl finds them there`);
    const elsewhere = tempDir();
    const listed = await run(process.execPath, [cliPath, "ctl", "--server", server.address, "agents"], 30_000, { env: cleanEnv(home), cwd: elsewhere });
    expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: "" });
  }, 60_000);

  it("XDG_CONFIG_HOME moves the default; AGENTMESH_CREDENTIALS_DIR overrides it and is named on failure", async () => {
    const server = await mtlsServer();
    const configHome = tempDir("agentmesh-xdg-");
    const env = { ...isolatedHome(), XDG_CONFIG_HOME: configHome };
    const initialized = await agentmesh(["ctl", "init-admin", "--data-dir", server.dataDir], env);
    expect(initialized.stdout).toContain(`wrote ${join(configHome, "agentmesh", "admin")}/{`);
    expect((await agentmesh(["ctl", "--server", server.address, "agents"], env)).code).toBe(0);

    const chosen = join(tempDir(), "chosen");
    mkdirSync(chosen);
    const viaEnv = await agentmesh(["ctl", "--server", server.address, "agents"], { ...env, AGENTMESH_CREDENTIALS_DIR: chosen });
    expectOneLine(
      viaEnv,
      `no admin credentials in ${chosen} (AGENTMESH_CREDENTIALS_DIR): run 'agentmesh ctl init-admin' on the server host, pass --credentials-dir, or --plaintext for an --insecure-dev server`,
      1,
    );
    const written = await agentmesh(["ctl", "init-admin", "--data-dir", server.dataDir], { ...env, AGENTMESH_CREDENTIALS_DIR: chosen });
    expect(written.stdout).toContain(`wrote ${chosen}/{admin-cert.pem,admin-key.pem,ca.pem}; ctl finds them there`);
    expect(readFileSync(join(chosen, "ca.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
    expect((await agentmesh(["ctl", "--server", server.address, "agents"], { ...env, AGENTMESH_CREDENTIALS_DIR: chosen })).code).toBe(0);
  }, 60_000);
});

describe("exit code 1 from a server's answer", () => {
  it("a refused call names its status", async () => {
    const server = await mtlsServer(["--insecure-dev"]);
    const result = await agentmesh(["ctl", "--plaintext", "--server", server.address, "agent", "no-such-instance"]);
    expectOneLine(result, "instance not found (NOT_FOUND)", 1);
  });
});
