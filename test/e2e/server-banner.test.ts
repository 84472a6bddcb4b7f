// `agentmesh server` on a terminal prints a short human summary on stderr; piped, its
// output stays pure JSON lines. The terminal is a real pseudo-TTY from util-linux
// `script`, which runs the server as its child.
import { createConnection } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type ManagedProcess, cliPath, repoRoot, startProcess, startServerProcess, tempDir } from "../helpers/processes.js";

let running: ManagedProcess[] = [];

afterEach(async () => {
  for (const managed of running.splice(0)) await managed.stop("SIGTERM");
});

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("agentmesh server output", () => {
  it("on a terminal: a banner on stderr with addresses, data dir, how to get admin credentials and the next command", async () => {
    const dataDir = tempDir();
    const home = tempDir("agentmesh-home-");
    const command = `cd ${repoRoot} && HOME=${home} XDG_CONFIG_HOME= ${process.execPath} ${cliPath} server --port 0 --http-port 0 --data-dir ${dataDir}`;
    // -e: script exits with the server's code; closing its terminal (SIGTERM to script) hangs the server up.
    const terminal = startProcess("script", ["-qfec", command, "/dev/null"]);
    running.push(terminal);
    const listening = await terminal.waitForLog((line) => line.msg === "listening");
    const grpcAddress = String(listening.grpcAddress);
    const httpPort = Number(listening.httpPort);
    await expect.poll(() => terminal.stderr.join("").includes("Ctrl-C stops the server."), { timeout: 10_000 }).toBe(true);
    // The terminal merges stdout and stderr; startProcess keeps the non-JSON lines, one per entry.
    const banner = terminal.stderr
      .join("\n")
      .replace(/\r/g, "")
      .split("\n")
      .filter((line) => line !== "");
    expect(banner).toEqual([
      "agentmesh server is running (mTLS)",
      `  gRPC      ${grpcAddress}`,
      `  metrics   http://127.0.0.1:${httpPort}/metrics   (/healthz, /readyz)`,
      `  data dir  ${dataDir}   (CA, audit log)`,
      `  admin     node bin/agentmesh.js ctl init-admin --data-dir ${dataDir}`,
      "            writes admin credentials to ~/.config/agentmesh/admin, where ctl finds them",
      `  next      node bin/agentmesh.js ctl --server ${grpcAddress} agents`,
      "JSON logs follow on stdout. Ctrl-C stops the server.",
    ]);
    await terminal.stop("SIGTERM");
    await expect.poll(() => connects(httpPort), { timeout: 10_000 }).toBe(false);
  });

  it("piped: every line of stdout is JSON and stderr stays empty", async () => {
    const server = await startServerProcess();
    running.push(server);
    const response = await fetch(`http://127.0.0.1:${server.httpPort}/readyz`);
    expect(response.status).toBe(200);
    expect(server.lines.map((line) => line.msg)).toEqual(expect.arrayContaining(["agentmesh server started", "listening"]));
    // startProcess files any stdout line that is not JSON under `stderr`, with real stderr.
    expect(server.stderr).toEqual([]);
  });
});
