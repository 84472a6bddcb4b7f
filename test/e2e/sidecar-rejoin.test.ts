// A sidecar keeps the certificate its one-time join token bought in --data-dir: started
// again with the same flags it rejoins with it and goes on renewing it; without a usable
// certificate, a spent token is one line naming the way out, exit 1 (README "Exit codes").
// Real server and sidecar processes.
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MeshCluster, stopProcess, waitForLogAfter } from "../helpers/mesh-cluster.js";
import { type ManagedProcess, cliPath, run, startProcess, tempDir } from "../helpers/processes.js";

let cluster: MeshCluster;
let sidecars: ManagedProcess[] = [];

beforeEach(async () => {
  // Short certificates, so a renewal of the resumed certificate comes within the test.
  cluster = await MeshCluster.start({ serverArgs: ["--cert-ttl", "14s"] });
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

describe("sidecar restart with the certificate in its data dir", () => {
  it("rejoins without a new token and renews; logs the address it bound", async () => {
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

    // The same flags again: the token is spent, the stored certificate is used ("sidecar listening" comes once the Connect stream is up).
    const second = startSidecar(token, dataDir);
    await second.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(second.lines.find((line) => line.msg === "rejoining with the certificate stored in the data dir")).toMatchObject({ serial: joinedSerial });
    // Renewed over mTLS with the resumed certificate, and the new one is stored for the next restart.
    const renewed = await waitForLogAfter(second, 0, (line) => line.msg === "certificate renewed", 15_000);
    expect(renewed.serial).not.toBe(joinedSerial);
    await expect.poll(() => storedSerial(dataDir), { timeout: 5_000 }).toBe(renewed.serial);
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
});
