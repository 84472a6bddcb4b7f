// A sidecar keeps the certificate its one-time join token bought in --data-dir: started
// again with the same flags it rejoins by renewing it (no token); without a usable
// certificate (none, or revoked), a spent token is one line naming the way out, exit 1
// (README "Exit codes"). On a terminal it prints a banner with the addresses it really
// bound. Real server and sidecar processes.
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MeshCluster, stopProcess, waitForLogAfter } from "../helpers/mesh-cluster.js";
import { type ManagedProcess, cliPath, repoRoot, run, startProcess, tempDir } from "../helpers/processes.js";

let cluster: MeshCluster;
let sidecars: ManagedProcess[] = [];

beforeEach(async () => {
  cluster = await MeshCluster.start();
});

afterEach(async () => {
  for (const sidecar of sidecars.splice(0)) await stopProcess(sidecar, "SIGKILL");
  await cluster.close();
});

function sidecarArgs(token: string): string[] {
  return [cliPath, "sidecar", "--server", cluster.address, "--host", "host-r", "--join-token", token, "--ca-cert", cluster.caCertFile];
}

function startSidecar(token: string, dataDir: string): ManagedProcess {
  const sidecar = startProcess(process.execPath, [
    ...sidecarArgs(token),
    "--inbound-host",
    "0.0.0.0",
    "--inbound-port",
    "0",
    "--local-port",
    "0",
    "--data-dir",
    dataDir,
  ]);
  sidecars.push(sidecar);
  return sidecar;
}

const storedSerial = (dataDir: string) => new X509Certificate(readFileSync(join(dataDir, "sidecar-cert.pem"))).serialNumber.toLowerCase();

describe("sidecar startup: identity from the data dir, bound addresses", () => {
  it("rejoins without a new token by renewing it; logs the address it bound", async () => {
    const token = await cluster.joinToken("host-r");
    const dataDir = tempDir();
    const first = startSidecar(token, dataDir);
    const listening = await first.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    // Bound to all interfaces on a port the OS chose: the log says so, and what peers dial.
    const port = Number(/^0\.0\.0\.0:(\d+)$/.exec(String(listening.inboundBound))?.[1]);
    expect(port).toBeGreaterThan(0);
    expect(listening.inboundAddress).toBe(`127.0.0.1:${port}`);
    expect(String(listening.localAddress)).toMatch(/^127\.0\.0\.1:[1-9]\d*$/);
    expect(first.lines.find((line) => line.msg === "sidecar started")).toMatchObject({ inboundBound: `0.0.0.0:${port}`, inboundAdvertised: `127.0.0.1:${port}` });
    expect(statSync(join(dataDir, "sidecar-key.pem")).mode & 0o777).toBe(0o600);
    const joinedSerial = storedSerial(dataDir);
    expect(await stopProcess(first)).toBe(0);

    // The same flags again: the token is spent, the stored certificate is renewed instead
    // ("sidecar listening" comes once the Connect stream is up, over the new certificate).
    const second = startSidecar(token, dataDir);
    await second.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(second.lines.find((line) => line.msg === "rejoining with the certificate stored in the data dir")).toMatchObject({ serial: joinedSerial });
    const renewedSerial = storedSerial(dataDir);
    expect(renewedSerial).not.toBe(joinedSerial);
    // The server saw a renewal by the sidecar itself, not a join.
    const audit = JSON.parse((await cluster.ctl("audit", "tail", "-o", "json")).stdout) as Array<{ action: string; actor: string; details?: { serial?: string } }>;
    expect(audit.find((entry) => entry.details?.serial === renewedSerial)).toMatchObject({ action: "cert.renew", actor: "spiffe://agentmesh.local/sidecar/host-r" });
  }, 60_000);

  it("a spent token and an empty data dir: one line, exit 1; no token and no certificate: one line, exit 1", async () => {
    const token = await cluster.joinToken("host-r");
    const dataDir = tempDir();
    const first = startSidecar(token, dataDir);
    await first.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(await stopProcess(first)).toBe(0);

    const emptyDir = tempDir();
    const reused = await run(process.execPath, [...sidecarArgs(token), "--inbound-port", "0", "--local-port", "0", "--data-dir", emptyDir], 30_000);
    expect({ code: reused.code, stderr: reused.stderr }).toEqual({
      code: 1,
      stderr:
        `error: --join-token was refused (already used, or expired) and ${emptyDir} (--data-dir) holds no certificate of spiffe://agentmesh.local/sidecar/host-r to rejoin with: ` +
        "create a new token with 'agentmesh ctl join-token --host host-r --agents <names>'\n",
    });
    expect(existsSync(join(emptyDir, "sidecar-cert.pem"))).toBe(false);

    const withoutToken = sidecarArgs(token).filter((arg) => arg !== "--join-token" && arg !== token);
    const missing = await run(process.execPath, [...withoutToken, "--inbound-port", "0", "--local-port", "0", "--data-dir", emptyDir], 30_000, { env: { AGENTMESH_JOIN_TOKEN: "" } });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(
      `error: ${emptyDir} (--data-dir) holds no certificate of spiffe://agentmesh.local/sidecar/host-r to rejoin with: ` +
        "join with --join-token (from 'agentmesh ctl join-token --host host-r --agents <names>') and --ca-cert, or pass --cert, --key and --ca-cert\n",
    );
  }, 60_000);

  it("a revoked stored certificate: one line naming it, exit 1; with a new token it joins again", async () => {
    const token = await cluster.joinToken("host-r");
    const dataDir = tempDir();
    const first = startSidecar(token, dataDir);
    await first.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(await stopProcess(first)).toBe(0);
    expect((await cluster.ctl("certs", "revoke", "spiffe://agentmesh.local/sidecar/host-r")).code).toBe(0);

    const refused = await run(process.execPath, [...sidecarArgs(token), "--inbound-port", "0", "--local-port", "0", "--data-dir", dataDir], 30_000);
    expect({ code: refused.code, stderr: refused.stderr }).toEqual({
      code: 1,
      stderr:
        `error: --join-token was refused (already used, or expired) and the server refused the certificate in ${join(dataDir, "sidecar-cert.pem")} (client certificate revoked): ` +
        "create a new token with 'agentmesh ctl join-token --host host-r --agents <names>'\n",
    });

    const fresh = startSidecar(await cluster.joinToken("host-r"), dataDir);
    await fresh.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(fresh.lines.find((line) => line.msg === "stored certificate not used")?.problem).toContain("client certificate revoked");
  }, 60_000);

  it("on a terminal: a banner on stderr with the ports it bound", async () => {
    const dataDir = tempDir();
    const flags = [...sidecarArgs(await cluster.joinToken("host-r")).slice(1), "--inbound-port", "0", "--local-port", "0", "--data-dir", dataDir];
    // util-linux `script` gives the sidecar a real pseudo-TTY (as test/e2e/server-banner.test.ts does for the server).
    const terminal = startProcess("script", ["-qfec", `cd ${repoRoot} && ${process.execPath} ${cliPath} ${flags.join(" ")}`, "/dev/null"]);
    sidecars.push(terminal);
    const listening = await terminal.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    await expect.poll(() => terminal.stderr.join("").includes("Ctrl-C stops the sidecar."), { timeout: 10_000 }).toBe(true);
    const banner = terminal.stderr.join("\n").replace(/\r/g, "").split("\n").filter((line) => line !== "");
    expect(banner).toEqual([
      "agentmesh sidecar is running (mTLS) as spiffe://agentmesh.local/sidecar/host-r",
      `  inbound   ${String(listening.inboundBound)}   (other sidecars dial ${String(listening.inboundAddress)})`,
      `  local     ${String(listening.localAddress)}   (AGENTMESH_SIDECAR_ADDR for agents)`,
      `  data dir  ${dataDir}   (certificate, audit log)`,
      "  agents    0 from --manifest, capacity 0 for the orchestrator",
      "JSON logs follow on stdout. Ctrl-C stops the sidecar.",
    ]);
    expect(String(listening.inboundBound)).toMatch(/^0\.0\.0\.0:[1-9]\d*$/);
  }, 60_000);
});
