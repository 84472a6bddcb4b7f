// `ctl certs revoke` reaches every certificate the CA issued, admin certificates from
// `ctl init-admin` included (signed without the server): by SPIFFE ID or by serial, the
// revoked credentials are refused at once, and a revoke that matches nothing exits 1.
// Real server and ctl processes.
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type CommandResult, type ServerProcess, cliPath, run, startServerProcess, tempDir } from "../helpers/processes.js";

let server: ServerProcess;
let workDir: string;

beforeEach(async () => {
  server = await startServerProcess();
  workDir = tempDir();
});

afterEach(async () => {
  await server.stop("SIGKILL");
});

/** init-admin --name `name` into its own credentials dir; answers the dir and the serial it printed. */
async function initAdmin(name: string): Promise<{ dir: string; serial: string }> {
  const dir = join(workDir, name);
  const result = await run(process.execPath, [cliPath, "ctl", "init-admin", "--data-dir", server.dataDir, "--name", name, "--out", dir], 30_000);
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
  const serial = /^serial ([0-9a-f]+),/m.exec(result.stdout)?.[1];
  expect(serial).toBeDefined();
  return { dir, serial: serial as string };
}

const ctl = (credentialsDir: string, ...args: string[]): Promise<CommandResult> =>
  run(process.execPath, [cliPath, "ctl", "--server", server.address, "--credentials-dir", credentialsDir, ...args], 30_000);

describe("ctl certs revoke of admin certificates", () => {
  it("by SPIFFE ID and by serial: the revoked admin is refused, the others keep working; nothing to revoke exits 1", async () => {
    const operator = await initAdmin("operator");
    const second = await initAdmin("second");
    const third = await initAdmin("third");
    expect((await ctl(second.dir, "agents")).code).toBe(0);

    const bySpiffeId = await ctl(operator.dir, "certs", "revoke", "spiffe://agentmesh.local/admin/second");
    expect({ code: bySpiffeId.code, stdout: bySpiffeId.stdout }).toEqual({ code: 0, stdout: "revoked 1 certificate(s)\n" });
    const refused = await ctl(second.dir, "agents");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: client certificate revoked \(UNAUTHENTICATED\); credentials used: .*second.*\n$/);

    const bySerial = await ctl(operator.dir, "certs", "revoke", third.serial, "--reason", "left the team");
    expect({ code: bySerial.code, stdout: bySerial.stdout }).toEqual({ code: 0, stdout: "revoked 1 certificate(s)\n" });
    expect((await ctl(third.dir, "agents")).code).toBe(1);
    expect((await ctl(operator.dir, "agents")).code).toBe(0);

    const again = await ctl(operator.dir, "certs", "revoke", "spiffe://agentmesh.local/admin/second");
    expect({ code: again.code, stderr: again.stderr }).toEqual({
      code: 1,
      stderr: "error: nothing revoked: spiffe://agentmesh.local/admin/second has no valid certificate that is not revoked already\n",
    });
    const nobody = await ctl(operator.dir, "certs", "revoke", "spiffe://agentmesh.local/admin/nobody");
    expect(nobody.code).toBe(1);
    const unknownSerial = await ctl(operator.dir, "certs", "revoke", "7f00ff");
    expect({ code: unknownSerial.code, stderr: unknownSerial.stderr }).toEqual({ code: 1, stderr: "error: certificate not found (NOT_FOUND)\n" });
  }, 60_000);
});
