// The audit log and the operator identity with the real binaries: `agentmesh
// server` (mTLS by default), `ctl init-admin`, admin RPCs through ctl, `ctl audit
// verify` on the real log and on tampered copies, a restart that continues the
// chain, and grpcurl refused without a client certificate.
import { appendFileSync, copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import { type CommandResult, type ServerProcess, cliPath, run, startServerProcess, tempDir, toolPath } from "../helpers/processes.js";

let server: ServerProcess | undefined;
const identities: MeshIdentity[] = [];

afterEach(async () => {
  for (const identity of identities.splice(0)) identity.close();
  await server?.stop("SIGKILL");
  server = undefined;
});

const agentmesh = (...args: string[]) => run(process.execPath, [cliPath, ...args]);

function ctl(credentialsDir: string, ...args: string[]): Promise<CommandResult> {
  return agentmesh("ctl", "--server", (server as ServerProcess).address, "--credentials-dir", credentialsDir, ...args);
}

function expectOk(result: CommandResult): CommandResult {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
  return result;
}

const verify = (...args: string[]) => agentmesh("ctl", "audit", "verify", ...args);

/** The server writes audit entries asynchronously: wait until verify passes with at least `entries`. */
async function expectVerifies(dataDir: string, entries: number): Promise<number> {
  let last: CommandResult | undefined;
  await expect
    .poll(async () => {
      last = await verify("--data-dir", dataDir);
      const found = /^ok: (\d+) entries, chain intact/.exec(last.stdout);
      return last.code === 0 && found !== null && Number(found[1]) >= entries ? "verified" : `${last.code} ${last.stdout} ${last.stderr}`;
    }, { timeout: 10_000 })
    .toBe("verified");
  return Number(/^ok: (\d+)/.exec(last?.stdout ?? "")?.[1]);
}

function auditLines(path: string): string[] {
  return readFileSync(path, "utf8").split("\n").filter((line) => line !== "");
}

describe("audit log and operator identity with real processes", () => {
  it("ctl init-admin, admin RPCs, audit verify on the real and on tampered logs, and a restart that continues the chain", { timeout: 90_000 }, async () => {
    const dataDir = tempDir();
    server = await startServerProcess(["--data-dir", dataDir]);
    const credentialsDir = join(tempDir(), "admin");
    const initialized = expectOk(await agentmesh("ctl", "init-admin", "--data-dir", dataDir, "--out", credentialsDir));
    expect(initialized.stdout).toContain("spiffe://agentmesh.local/admin/operator");

    // Admin RPCs over mTLS with the written credentials.
    const token = expectOk(await ctl(credentialsDir, "join-token", "--host", "host-a", "--agents", "sql-agent", "--uses", "2")).stdout.split("\n")[0] ?? "";
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const joined = await MeshIdentity.join({
      address: server.address,
      trustBundlePem: readFileSync(join(credentialsDir, "ca.pem"), "utf8"),
      spiffeId: "spiffe://agentmesh.local/sidecar/host-a",
      joinToken: token,
    });
    identities.push(joined);
    const serial = joined.source.current?.serial ?? "";
    expect(expectOk(await ctl(credentialsDir, "certs", "revoke", serial, "--reason", "lost laptop")).stdout.trim()).toBe("revoked 1 certificate(s)");
    const tail = JSON.parse(expectOk(await ctl(credentialsDir, "audit", "tail", "-n", "10", "-o", "json")).stdout) as Array<{ action: string; actor: string }>;
    expect(tail.map((entry) => entry.action)).toEqual(expect.arrayContaining(["join_token.create", "join_token.use", "cert.issue", "cert.revoke"]));
    expect(tail.find((entry) => entry.action === "cert.revoke")?.actor).toBe("spiffe://agentmesh.local/admin/operator");

    const logPath = join(dataDir, "audit.log");
    const entries = await expectVerifies(dataDir, 4);
    const lines = auditLines(logPath);
    expect(lines.length).toBe(entries);

    // Tampered copies (with the head record beside them): each fails at the first line that no longer follows.
    const tamperedDir = tempDir();
    const caCert = ["--ca-cert", join(dataDir, "ca-cert.pem")];
    const cases: Array<[string, (original: string[]) => string[], RegExp]> = [
      ["edited", (original) => original.map((line, index) => (index === 2 ? line.replace(/"outcome":"success"/, '"outcome":"denied"').replace(/"action":"[^"]+"/, '"action":"nothing.happened"') : line)), /^FAILED at line 3: hash does not match contents/],
      ["deleted", (original) => original.filter((_, index) => index !== 1), /^FAILED at line 2: expected seq 2, found 3/],
      ["swapped", (original) => original.map((line, index) => (index === 1 ? (original[2] as string) : index === 2 ? (original[1] as string) : line)), /^FAILED at line 2: expected seq 2, found 3/],
      // A valid shorter chain: only the head record shows what is missing.
      ["cut off the end", (original) => original.slice(0, 3), new RegExp(`^FAILED at line 4: log ends at seq 3 but the head record says ${entries}: entries were cut off the end`)],
      ["truncated mid-line", (original) => [...original.slice(0, 3), (original[3] as string).slice(0, 20)], new RegExp(`^FAILED at line 4: log ends at seq 3 but the head record says ${entries}`)],
    ];
    for (const [name, tamper, expected] of cases) {
      const path = join(tamperedDir, `${name.replace(/\W+/g, "-")}.log`);
      const text = `${tamper(lines).join("\n")}\n`;
      writeFileSync(path, name === "truncated mid-line" ? text.slice(0, -1) : text);
      copyFileSync(`${logPath}.head`, `${path}.head`);
      const result = await verify("--file", path, ...caCert);
      expect({ name, code: result.code, stdout: result.stdout }).toMatchObject({ name, code: 1, stdout: expect.stringMatching(expected) });
    }
    // An untouched copy verifies; without the head record (or with another CA's key) it does not.
    const copy = join(tamperedDir, "copy.log");
    copyFileSync(logPath, copy);
    expect((await verify("--file", copy, ...caCert)).stdout).toMatch(/^FAILED: no head record/);
    copyFileSync(`${logPath}.head`, `${copy}.head`);
    expect(expectOk(await verify("--file", copy, ...caCert)).stdout).toBe(`ok: ${entries} entries, chain intact, signed head at seq ${entries}\n`);
    expect((await verify("--file", copy)).stdout).toMatch(/^FAILED: head record is signed: give the CA certificate/);
    const otherCaDir = tempDir();
    expectOk(await agentmesh("ctl", "init-admin", "--data-dir", otherCaDir, "--create-ca", "--out", tempDir()));
    expect((await verify("--file", copy, "--ca-cert", join(otherCaDir, "ca-cert.pem"))).stdout).toBe("FAILED: head record signature invalid\n");

    // Restart on the same data dir: same CA (the admin credentials still work) and the chain continues.
    expect(await server.stop("SIGTERM")).toBe(0);
    server = await startServerProcess(["--data-dir", dataDir]);
    expectOk(await ctl(credentialsDir, "join-token", "--host", "host-b", "--agents", "*"));
    const afterRestart = await expectVerifies(dataDir, entries + 1);
    const continued = auditLines(logPath).slice(entries).map((line) => JSON.parse(line) as { seq: number; prevHash: string; action: string });
    expect(continued[0]?.seq).toBe(entries + 1);
    expect(continued[0]?.prevHash).toBe((JSON.parse(lines[lines.length - 1] as string) as { hash: string }).hash);
    expect(continued.map((entry) => entry.action)).toContain("join_token.create");
    expect(afterRestart).toBeGreaterThan(entries);

    // A crash in the middle of a write leaves a torn last line: the server starts anyway
    // (it refused to before), cuts it off, records that, and `ctl audit tail` reads the log.
    expect(await server.stop("SIGKILL")).not.toBe(0);
    appendFileSync(logPath, '{"action":"agent.register","actor":"spiffe://agentmesh.local/sidecar/host-a","det');
    server = await startServerProcess(["--data-dir", dataDir]);
    const recovered = JSON.parse(expectOk(await ctl(credentialsDir, "audit", "tail", "-n", "3", "-o", "json")).stdout) as Array<{ action: string; details?: Record<string, unknown> }>;
    expect(recovered.at(-1)).toMatchObject({ action: "audit.recovered", details: { truncatedTailBytes: 81 } });
    await expectVerifies(dataDir, afterRestart + 1);
  });

  // Listing, describing, Discover, Invoke, Watch and health with the admin certificate: test/e2e/outside-clients.test.ts runs docs/grpcurl.md.
  it("grpcurl without a client certificate is refused", { timeout: 60_000 }, async () => {
    const dataDir = tempDir();
    server = await startServerProcess(["--data-dir", dataDir]);
    const credentialsDir = join(tempDir(), "admin");
    expectOk(await agentmesh("ctl", "init-admin", "--data-dir", dataDir, "--out", credentialsDir));

    // Same TLS trust, no client certificate: the call is refused, not served.
    const anonymous = await run(toolPath("grpcurl"), ["-cacert", join(credentialsDir, "ca.pem"), "-d", "{}", server.address, "agentmesh.v1.RegistryService/Discover"]);
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toContain("Unauthenticated");
  });
});
