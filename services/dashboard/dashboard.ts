import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry as PromRegistry } from "prom-client";
import type { AuditEvent } from "../../sdk/ts/src/core/audit-log.js";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { DashboardSession, DashboardTokenVerifier } from "./dashboard-token.js";
import { EventStream } from "./event-stream.js";
import {
  type DashboardSources,
  type InstanceChange,
  type InstanceView,
  type LoadView,
  alertView,
  auditView,
  changeKind,
  deploymentView,
  instanceView,
  loadView,
  routingView,
} from "./read-model.js";
import { type AssetName, StaticAssets } from "./static-assets.js";

export interface DashboardOptions {
  sources: DashboardSources;
  /**
   * Present when the HTTP port is reachable beyond loopback: then every data
   * request needs a token from `ctl dashboard-token`. Absent on loopback, like /metrics.
   */
  tokens: DashboardTokenVerifier | undefined;
  clock: Clock;
  log: Logger;
  /** Security events (refused and granted dashboard sessions) for the audit log. */
  audit?: (event: AuditEvent) => void;
  /** Where `agentmesh_dashboard_*` metrics are registered (open pages, refused requests). */
  metrics?: PromRegistry;
  /** Deployments, rollouts, alerts, the audit tail and session expiry are looked at this often while a page is open. */
  refreshIntervalMs?: number;
  /** Load changes (heartbeats publish no Watch event) are pushed this often. */
  loadIntervalMs?: number;
  keepAliveIntervalMs?: number;
  maxStreams?: number;
  auditEntries?: number;
  maxBufferedBytes?: number;
  assetsDir?: string;
}

export interface Dashboard {
  /** Answers requests under /dashboard; false for any other path (the caller serves those). */
  handle(request: IncomingMessage, response: ServerResponse): boolean;
  /** Ends every open stream and stops the refresh loop. */
  close(): void;
}

const basePath = "/dashboard";

/**
 * Loopback-only HTTP ports serve the dashboard as they serve /metrics; any other
 * bind address (0.0.0.0, a LAN or pod address) requires a token. Decided by the
 * bind address, not the peer's: a local proxy would make every peer look local.
 */
export function dashboardNeedsAuthentication(httpHost: string): boolean {
  const host = httpHost.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return !(host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host));
}
const assetPaths: Record<string, AssetName> = {
  "/dashboard/": "index.html",
  "/dashboard/index.html": "index.html",
  "/dashboard/dashboard.js": "dashboard.js",
  "/dashboard/dashboard.css": "dashboard.css",
};

/**
 * Everything is same-origin and nothing is inline, so the policy can forbid any
 * other source: the page cannot load assets from the internet, nor run injected script.
 */
const securityHeaders: Record<string, string> = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

interface Client {
  stream: EventStream;
  session: DashboardSession | undefined;
  watch: { close(): void } | undefined;
  /** Instances of the Watch snapshot, until SYNCED sends them as one event. */
  snapshot: InstanceView[] | undefined;
}

/**
 * The web dashboard: static page, one SSE stream per open page fed by its own
 * registry Watch, and one refresh loop (only while a page is open) that pushes
 * deployments, rollouts, alerts, audit entries and load changes to every page
 * when they change. Nothing polls per agent, and nothing runs with no page open.
 */
export function createDashboard(options: DashboardOptions): Dashboard {
  const log = options.log.child({ component: "dashboard" });
  const refreshIntervalMs = options.refreshIntervalMs ?? 500;
  const loadIntervalMs = options.loadIntervalMs ?? 2000;
  const keepAliveIntervalMs = options.keepAliveIntervalMs ?? 15_000;
  const maxStreams = options.maxStreams ?? 64;
  const auditEntries = options.auditEntries ?? 50;
  const maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;
  const assets = new StaticAssets(options.assetsDir);
  if (assets.problem) log.error({ problem: assets.problem }, "dashboard page unavailable");

  const clients = new Set<Client>();
  const registers = options.metrics ? [options.metrics] : [];
  const openStreams = new Gauge({ name: "agentmesh_dashboard_streams", help: "Dashboard pages with an open event stream.", registers });
  const deniedRequests = new Counter({ name: "agentmesh_dashboard_denied_total", help: "Dashboard data requests refused for a missing or invalid token.", registers });
  /** The last JSON sent per topic, so a topic is pushed only when it changed, and new pages get it at once. */
  const latest = new Map<"deployments" | "alerts" | "audit", string>();
  const lastLoads = new Map<string, string>();
  let refreshTimer: NodeJS.Timeout | undefined;
  let loadTimer: NodeJS.Timeout | undefined;
  let refreshing = false;
  let closed = false;

  const broadcast = (event: string, json: string) => {
    for (const client of clients) if (!client.snapshot) client.stream.sendJson(event, json);
  };

  const publish = (topic: "deployments" | "alerts" | "audit", value: unknown) => {
    const json = JSON.stringify(value);
    if (latest.get(topic) === json) return;
    latest.set(topic, json);
    broadcast(topic, json);
  };

  /** One topic's read; a failing source skips only its own topic this round. */
  const refreshTopic = async (topic: "deployments" | "alerts" | "audit", read: () => Promise<unknown> | unknown) => {
    try {
      publish(topic, await read());
    } catch (error) {
      log.warn({ err: error, topic }, "dashboard refresh failed; the next one retries");
    }
  };

  const refresh = async () => {
    if (refreshing) return;
    refreshing = true;
    try {
      await refreshTopic("deployments", async () =>
        (await options.sources.listDeployments())
          .map((deployment) => deploymentView(deployment, options.sources.rollout(deployment.name)))
          .sort((left, right) => (left.name < right.name ? -1 : 1)),
      );
      await refreshTopic("alerts", () => options.sources.alertsFiring().map(alertView).sort((left, right) => left.startsAtMs - right.startsAtMs));
      await refreshTopic("audit", async () => (await options.sources.auditTail(auditEntries)).map(auditView).filter((entry) => entry !== undefined));
    } finally {
      refreshing = false;
    }
    const nowMs = options.clock.nowMs();
    for (const client of clients) {
      if (client.session && options.tokens && !options.tokens.stillValid(client.session)) {
        client.stream.send("session-ended", { reason: "token expired or its certificate revoked: run `agentmesh ctl dashboard-token`" });
        drop(client);
      } else if (nowMs - client.stream.lastWriteAtMs >= keepAliveIntervalMs) {
        client.stream.keepAlive();
      }
    }
  };

  const pushLoads = () => {
    const changed: Record<string, LoadView> = {};
    let count = 0;
    const seen = new Set<string>();
    for (const instance of options.sources.listInstances()) {
      seen.add(instance.instanceId);
      const view = loadView(instance.load);
      const json = JSON.stringify(view);
      if (lastLoads.get(instance.instanceId) === json) continue;
      lastLoads.set(instance.instanceId, json);
      changed[instance.instanceId] = view;
      count += 1;
    }
    for (const instanceId of lastLoads.keys()) if (!seen.has(instanceId)) lastLoads.delete(instanceId);
    if (count > 0) broadcast("load", JSON.stringify(changed));
  };

  const startLoops = () => {
    if (refreshTimer) return;
    refreshTimer = setInterval(() => void refresh(), refreshIntervalMs);
    loadTimer = setInterval(pushLoads, loadIntervalMs);
    refreshTimer.unref();
    loadTimer.unref();
  };

  const stopLoopsIfIdle = () => {
    if (clients.size > 0) return;
    clearInterval(refreshTimer);
    clearInterval(loadTimer);
    refreshTimer = undefined;
    loadTimer = undefined;
    latest.clear();
    lastLoads.clear();
  };

  const drop = (client: Client) => {
    if (!clients.delete(client)) return;
    openStreams.set(clients.size);
    client.watch?.close();
    client.stream.end();
    stopLoopsIfIdle();
  };

  const onChange = (client: Client, change: InstanceChange) => {
    const kind = changeKind(change.type);
    if (kind === undefined) return;
    if (client.snapshot) {
      if (kind === "added") {
        client.snapshot.push(instanceView(change.instance));
        return;
      }
      if (kind !== "synced") return;
      client.stream.send("snapshot", { revision: change.revision, instances: client.snapshot });
      client.snapshot = undefined;
      for (const topic of ["deployments", "alerts", "audit"] as const) {
        const json = latest.get(topic);
        if (json !== undefined) client.stream.sendJson(topic, json);
      }
      return;
    }
    if (kind === "removed") client.stream.send("instance", { kind, revision: change.revision, id: change.instance.instanceId });
    else if (kind !== "synced") client.stream.send("instance", { kind, revision: change.revision, instance: instanceView(change.instance) });
  };

  const openStream = async (request: IncomingMessage, response: ServerResponse) => {
    const session = await authenticate(request, response);
    if (session === false) return;
    if (clients.size >= maxStreams || closed) {
      json(response, 503, { error: "too many open dashboard pages; close one and reload" });
      return;
    }
    const client: Client = {
      stream: new EventStream(response, maxBufferedBytes, () => options.clock.nowMs(), () => {
        log.warn({ remoteAddress: request.socket.remoteAddress }, "dashboard page not reading its events; stream closed");
        drop(client);
      }),
      session,
      watch: undefined,
      snapshot: [],
    };
    clients.add(client);
    openStreams.set(clients.size);
    response.on("close", () => drop(client));
    client.stream.open(2000);
    client.stream.send("session", {
      authRequired: options.tokens !== undefined,
      spiffeId: session?.spiffeId ?? "",
      expiresAtMs: session?.expiresAtMs ?? 0,
    });
    startLoops();
    if (latest.size === 0) void refresh();
    try {
      client.watch = options.sources.watchInstances((change) => onChange(client, change));
    } catch (error) {
      log.error({ err: error }, "dashboard could not watch the registry");
      drop(client);
    }
    // The Watch may end the client synchronously (overflow) before returning its subscription.
    if (!clients.has(client)) client.watch?.close();
  };

  const serveRouting = async (request: IncomingMessage, response: ServerResponse, query: URLSearchParams) => {
    const session = await authenticate(request, response);
    if (session === false) return;
    const capability = query.get("capability") ?? "";
    if (capability === "") {
      json(response, 400, { error: "capability: required" });
      return;
    }
    try {
      json(response, 200, routingView(capability, options.sources.routing(capability)));
    } catch (error) {
      if (error instanceof MeshError && error.kind === "invalidArgument") {
        json(response, 400, { error: error.message });
        return;
      }
      const requestId = randomUUID();
      log.error({ err: error, requestId }, "routing view failed");
      json(response, 500, { error: `internal error, request ${requestId}` });
    }
  };

  /** The session for the request, undefined when none is needed, or false once a 401 has been sent. */
  const authenticate = async (request: IncomingMessage, response: ServerResponse): Promise<DashboardSession | undefined | false> => {
    if (!options.tokens) return undefined;
    const header = request.headers.authorization ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    let reason = "token required: run `agentmesh ctl dashboard-token` and open the URL it prints";
    if (match) {
      try {
        const session = await options.tokens.verify(match[1] as string);
        if (request.url?.startsWith(`${basePath}/api/events`)) {
          options.audit?.({ actor: session.spiffeId, action: "dashboard.open", target: basePath, outcome: "success", requestId: "", details: { remoteAddress: request.socket.remoteAddress ?? "" } });
        }
        return session;
      } catch (error) {
        if (error instanceof MeshError) reason = error.message;
        else {
          log.warn({ err: error }, "dashboard token check failed");
          reason = "token invalid";
        }
      }
    }
    deniedRequests.inc();
    options.audit?.({ actor: request.socket.remoteAddress ?? "unknown", action: "dashboard.denied", target: basePath, outcome: "denied", requestId: "", details: { reason } });
    response.writeHead(401, { ...securityHeaders, "content-type": "application/json", "cache-control": "no-store", "www-authenticate": 'Bearer realm="agentmesh-dashboard"' });
    response.end(`${JSON.stringify({ error: reason })}\n`);
    return false;
  };

  const handle = (request: IncomingMessage, response: ServerResponse): boolean => {
    const url = new URL(request.url ?? "/", "http://dashboard.invalid");
    const path = url.pathname;
    if (path !== basePath && !path.startsWith(`${basePath}/`)) return false;
    if (path === basePath) {
      response.writeHead(308, { ...securityHeaders, location: `${basePath}/` }).end();
      return true;
    }
    const asset = assetPaths[path];
    if (asset) {
      assets.serve(asset, request, response, securityHeaders);
      return true;
    }
    if (request.method !== "GET") {
      response.writeHead(405, { ...securityHeaders, allow: "GET" }).end();
      return true;
    }
    const failed = (error: unknown) => {
      const requestId = randomUUID();
      log.error({ err: error, requestId, path }, "dashboard request failed");
      if (!response.headersSent) json(response, 500, { error: `internal error, request ${requestId}` });
      else response.end();
    };
    if (path === `${basePath}/api/events`) openStream(request, response).catch(failed);
    else if (path === `${basePath}/api/routing`) serveRouting(request, response, url.searchParams).catch(failed);
    else json(response, 404, { error: "not found" });
    return true;
  };

  return {
    handle,
    close: () => {
      closed = true;
      for (const client of [...clients]) drop(client);
      stopLoopsIfIdle();
    },
  };
}

function json(response: ServerResponse, statusCode: number, body: unknown): void {
  response.writeHead(statusCode, { ...securityHeaders, "content-type": "application/json", "cache-control": "no-store" });
  response.end(`${JSON.stringify(body)}\n`);
}
