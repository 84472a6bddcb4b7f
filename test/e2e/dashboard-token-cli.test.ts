// `agentmesh ctl dashboard-token` as an operator runs it: the real binary, its
// one-line messages and exit codes, and a token the server's verifier accepts.
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { DashboardTokenVerifier } from "../../services/dashboard/index.js";
import { type MeshCa, loadOrCreateCa, splitPemCertificates } from "../../services/identity/domain/ca.js";
import { cliPath, run, tempDir } from "../helpers/processes.js";

const workDir = tempDir("agentmesh-dashboard-cli-");
const dataDir = join(workDir, "server");
const credentialsDir = join(workDir, "admin");
let ca: MeshCa;

beforeAll(async () => {
  ca = await loadOrCreateCa({ dataDir, trustDomain: "agentmesh.local", clock: systemClock });
  const initAdmin = await run(process.execPath, [cliPath, "ctl", "init-admin", "--data-dir", dataDir, "--out", credentialsDir]);
  expect(initAdmin.stderr).toBe("");
  expect(initAdmin.code).toBe(0);
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

function ctl(...args: string[]) {
  return run(process.execPath, [cliPath, "ctl", "--credentials-dir", credentialsDir, ...args]);
}

describe("ctl dashboard-token", () => {
  it("prints the dashboard URL with the token in its fragment, for the --server host by default", async () => {
    const result = await ctl("--server", "agentmesh.example:7420", "dashboard-token");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^http:\/\/agentmesh\.example:7421\/dashboard\/#token=[A-Za-z0-9_-]+\n$/);
    expect(result.stderr).toMatch(/^# for spiffe:\/\/agentmesh\.local\/admin\/operator, until \S+Z; open the URL/);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("-o json gives a token the server accepts, for the admin, with the lifetime asked for", async () => {
    const result = await ctl("-o", "json", "dashboard-token", "--url", "http://127.0.0.1:9999/dashboard/", "--ttl", "5m");
    expect(result.code).toBe(0);
    const printed = JSON.parse(result.stdout) as { url: string; token: string; expiresAtMs: number; spiffeId: string };
    expect(printed.url).toBe(`http://127.0.0.1:9999/dashboard/#token=${printed.token}`);
    const verifier = new DashboardTokenVerifier({
      trustDomain: "agentmesh.local",
      verifier: new PeerVerifier("agentmesh.local", [...ca.trustBundle(), ...splitPemCertificates(ca.certificatePem)]),
      revocations: { isRevoked: () => false },
      clock: systemClock,
    });
    const session = await verifier.verify(printed.token);
    expect(session.spiffeId).toBe("spiffe://agentmesh.local/admin/operator");
    expect(session.expiresAtMs).toBe(printed.expiresAtMs);
    expect(printed.expiresAtMs - Date.now()).toBeGreaterThan(4 * 60_000);
    expect(printed.expiresAtMs - Date.now()).toBeLessThanOrEqual(5 * 60_000);
  });

  it.each([
    { args: ["--ttl", "13h"], message: "error: token lifetime must be 1s-12h" },
    { args: ["--ttl", "soon"], message: 'error: "soon" is not a duration: write a number and a unit (ms, s, m, h, d, w), such as 500ms, 30s, 1m30s, 1.5h, 7d' },
    { args: ["--url", "not a url"], message: 'error: --url: "not a url" is not an http(s) URL like http://host:7421/dashboard/' },
    { args: ["--url", "ftp://host/dashboard/"], message: 'error: --url: "ftp://host/dashboard/" is not an http(s) URL like http://host:7421/dashboard/' },
  ])("refuses $args as a usage error (exit 2, one line)", async ({ args, message }) => {
    const result = await ctl("dashboard-token", ...args);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(`${message}\n`);
    expect(result.code).toBe(2);
  });

  it("without credentials: one line naming what is missing, exit 1", async () => {
    const result = await run(process.execPath, [cliPath, "ctl", "--credentials-dir", join(workDir, "nowhere"), "dashboard-token"]);
    expect(result.stdout).toBe("");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/^error: no admin credentials in .*nowhere \(--credentials-dir\): run 'agentmesh ctl init-admin'/);
    expect(result.code).toBe(1);
  });
});
