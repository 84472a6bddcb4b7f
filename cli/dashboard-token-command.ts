import { X509Certificate, createPrivateKey } from "node:crypto";
import type { Command } from "commander";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { createDashboardToken, validateTokenTtlMs } from "../services/dashboard/index.js";
import { defaultServerConfig } from "../services/server/config.js";
import { type ConnectionOptions, channelCredentials, serverAddresses } from "./ctl-connection.js";
import { parseDurationMs } from "../sdk/ts/src/core/duration.js";

/**
 * `ctl dashboard-token`: a short-lived bearer token for the web dashboard, signed
 * locally with the admin key (no call to the server), printed as a URL to open.
 */
export function addDashboardTokenCommand(ctl: Command): void {
  const command = ctl
    .command("dashboard-token")
    .description("a short-lived token (and URL) for the web dashboard when its HTTP port is not loopback-only; signed with the admin credentials")
    .option("--ttl <duration>", "how long the token works (at most 12h, and never past the admin certificate)", "1h")
    .option("--url <url>", `the dashboard's address (default: http://<--server host>:${defaultServerConfig.httpPort}/dashboard/)`);
  command.action(async () => {
    const options = command.optsWithGlobals() as ConnectionOptions & { ttl: string; url?: string };
    let url: URL;
    let ttlMs: number;
    try {
      ttlMs = parseDurationMs(options.ttl);
      validateTokenTtlMs(ttlMs);
      url = parseDashboardUrl(options.url ?? defaultDashboardUrl(serverAddresses(options)[0] ?? ""));
    } catch (error) {
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      // A bad flag value: a usage error.
      process.exitCode = 2;
      return;
    }
    try {
      // The token is signed with the key on disk whatever the transport; --plaintext only concerns gRPC.
      const { identity } = await channelCredentials({ ...options, plaintext: false });
      const current = identity?.source.current;
      if (!identity || !current) throw new Error("no admin credentials loaded");
      const { token, expiresAtMs } = createDashboardToken({
        spiffeId: current.spiffeId,
        privateKey: createPrivateKey(current.privateKeyPem),
        leafDer: new X509Certificate(current.chainPem[0] ?? "").raw,
        ttlMs,
        clock: systemClock,
      });
      identity.close();
      // The fragment never reaches a server or its logs; the page moves it into sessionStorage.
      url.hash = `token=${token}`;
      if (options.output === "json") {
        process.stdout.write(`${JSON.stringify({ url: url.toString(), token, expiresAtMs, spiffeId: current.spiffeId }, null, 2)}\n`);
        return;
      }
      process.stdout.write(`${url.toString()}\n`);
      process.stderr.write(`# for ${current.spiffeId}, until ${new Date(expiresAtMs).toISOString()}; open the URL, or send "Authorization: Bearer <token>" (-o json shows the token on its own)\n`);
    } catch (error) {
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    }
  });
}

/** The HTTP port on the host ctl talks gRPC to (the server's default port layout). */
function defaultDashboardUrl(server: string): string {
  const host = server.startsWith("[") ? server.slice(0, server.indexOf("]") + 1) : server.split(":")[0] || "127.0.0.1";
  return `http://${host}:${defaultServerConfig.httpPort}/dashboard/`;
}

function parseDashboardUrl(text: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) throw new Error(`--url: "${text}" is not an http(s) URL like http://host:7421/dashboard/`);
  return url;
}
