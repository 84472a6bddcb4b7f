import { type IncomingHttpHeaders, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { parseAlertsConfig } from "../../services/alerts/alert-config.js";
import type { AlertSignal } from "../../services/alerts/alert-engine.js";
import { type Alerting, createAlerting } from "../../services/alerts/alerting.js";
import type { Sleep } from "../../services/alerts/alertmanager-webhook.js";
import { logSink } from "../helpers/log-sink.js";

interface ReceivedRequest {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: unknown;
}

interface Receiver {
  url: string;
  requests: ReceivedRequest[];
  server: Server;
}

/** A real HTTP webhook receiver on an ephemeral port; `respond` picks the status of the n-th request. */
async function startReceiver(respond: (requestIndex: number) => number | "hang" = () => 200): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      requests.push({ method: request.method, url: request.url, headers: request.headers, body: JSON.parse(Buffer.concat(chunks).toString()) });
      const status = respond(requests.length - 1);
      if (status === "hang") return;
      response.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "ok" : "nope");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  servers.push(server);
  return { url: `http://127.0.0.1:${port}/hook`, requests, server };
}

async function stopServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

const servers: Server[] = [];
const alertings: Alerting[] = [];

afterEach(async () => {
  await Promise.all(alertings.splice(0).map((alerting) => alerting.close(0)));
  await Promise.all(servers.splice(0).map(stopServer));
});

/** Backoff waits recorded and skipped: retries are exercised on real sockets without real waiting. */
function recordingSleep(): { sleep: Sleep; delaysMs: number[] } {
  const delaysMs: number[] = [];
  return { delaysMs, sleep: async (delayMs) => void delaysMs.push(delayMs) };
}

function setup(receivers: unknown[], options: { rules?: unknown[]; sleep?: Sleep } = {}) {
  const clock = new ManualClock();
  const registry = new Registry();
  const sink = logSink("debug");
  const recorder = recordingSleep();
  const config = parseAlertsConfig({
    externalUrl: "http://mesh.test:9464",
    defaultRules: false,
    rules: options.rules ?? [
      { name: "AgentDown", kind: "agent_down", for: "30s" },
      { name: "AgentCrashLoop", kind: "crash_loop" },
    ],
    receivers,
  });
  const alerting = createAlerting({ config, clock, registry, logger: sink.log, sleep: options.sleep ?? recorder.sleep, random: () => 1 });
  alertings.push(alerting);
  return { clock, registry, sink, alerting, engine: alerting.engine, delaysMs: recorder.delaysMs };
}

type InstanceState = Extract<AlertSignal, { type: "instanceState" }>;

const down = (instanceId: string): InstanceState => ({
  type: "instanceState",
  instanceId,
  agentName: "summarizer",
  deployment: "summarizer",
  state: HealthState.HEALTH_STATE_UNHEALTHY,
  reason: "heartbeat timeout",
});
const up = (instanceId: string): InstanceState => ({ ...down(instanceId), state: HealthState.HEALTH_STATE_READY, reason: "" });
const crashLooping = (instanceId: string): InstanceState => ({ ...down(instanceId), state: HealthState.HEALTH_STATE_FAILED, reason: "crash loop" });

async function deliveries(registry: Registry): Promise<Record<string, number>> {
  const metric = await registry.getSingleMetric("agentmesh_alert_deliveries_total")?.get();
  return Object.fromEntries((metric?.values ?? []).map((sample) => [`${sample.labels.receiver}/${sample.labels.outcome}`, sample.value]));
}

describe("Alertmanager webhook delivery", () => {
  it("POSTs Alertmanager's webhook JSON for a firing and, later, for its resolve", async () => {
    const receiver = await startReceiver();
    const { engine, clock, alerting } = setup([{ name: "ops", url: receiver.url }]);

    engine.observe(down("i-1"));
    clock.advance(30_000);
    engine.evaluate();
    await alerting.notifier.idle();

    const labels = { agent: "summarizer", alertname: "AgentDown", deployment: "summarizer", instance_id: "i-1", severity: "critical" };
    const annotations = {
      description: "Instance i-1 of summarizer has been UNHEALTHY for more than 30s: heartbeat timeout",
      summary: "Agent summarizer instance i-1 is down",
    };
    expect(receiver.requests).toHaveLength(1);
    expect(receiver.requests[0]?.method).toBe("POST");
    expect(receiver.requests[0]?.url).toBe("/hook");
    expect(receiver.requests[0]?.headers["content-type"]).toBe("application/json");
    expect(receiver.requests[0]?.body).toStrictEqual({
      receiver: "ops",
      status: "firing",
      alerts: [
        {
          status: "firing",
          labels,
          annotations,
          startsAt: "2023-11-14T22:13:50.000Z",
          endsAt: "0001-01-01T00:00:00Z",
          generatorURL: "http://mesh.test:9464",
          fingerprint: "81d643b5ac4c6c9f",
        },
      ],
      groupLabels: { alertname: "AgentDown" },
      commonLabels: labels,
      commonAnnotations: annotations,
      externalURL: "http://mesh.test:9464",
      version: "4",
      groupKey: '{}:{alertname="AgentDown"}',
      truncatedAlerts: 0,
    });

    clock.advance(90_000);
    engine.observe(up("i-1"));
    await alerting.notifier.idle();

    expect(receiver.requests).toHaveLength(2);
    expect(receiver.requests[1]?.body).toStrictEqual({
      receiver: "ops",
      status: "resolved",
      alerts: [
        {
          status: "resolved",
          labels,
          annotations,
          startsAt: "2023-11-14T22:13:50.000Z",
          endsAt: "2023-11-14T22:15:20.000Z",
          generatorURL: "http://mesh.test:9464",
          fingerprint: "81d643b5ac4c6c9f",
        },
      ],
      groupLabels: { alertname: "AgentDown" },
      commonLabels: labels,
      commonAnnotations: annotations,
      externalURL: "http://mesh.test:9464",
      version: "4",
      groupKey: '{}:{alertname="AgentDown"}',
      truncatedAlerts: 0,
    });
  });

  it("groups alerts that fire in the same evaluation into one message per alertname", async () => {
    const receiver = await startReceiver();
    const { engine, clock, alerting } = setup([{ name: "ops", url: receiver.url }]);
    engine.observe(down("i-1"));
    engine.observe(down("i-2"));
    clock.advance(30_000);
    engine.evaluate();
    await alerting.notifier.idle();

    expect(receiver.requests).toHaveLength(1);
    const body = receiver.requests[0]?.body as { alerts: Array<{ labels: { instance_id: string } }>; commonLabels: Record<string, string> };
    expect(body.alerts.map((alert) => alert.labels.instance_id)).toEqual(["i-1", "i-2"]);
    expect(body.commonLabels).not.toHaveProperty("instance_id");
  });

  it("retries a receiver answering 500 twice with exponential backoff and delivers once", async () => {
    const receiver = await startReceiver((index) => (index < 2 ? 500 : 200));
    const { engine, alerting, registry, delaysMs } = setup([{ name: "ops", url: receiver.url }]);

    engine.observe(crashLooping("i-1"));
    await alerting.notifier.idle();

    expect(receiver.requests).toHaveLength(3);
    expect(new Set(receiver.requests.map((request) => JSON.stringify(request.body))).size).toBe(1);
    expect(delaysMs).toEqual([1_000, 2_000]);
    expect(await deliveries(registry)).toEqual({ "ops/delivered": 1, "ops/failed": 0, "ops/dropped": 0 });
  });

  it("keeps a receiver's messages in order: the resolve waits behind its retried firing", async () => {
    const receiver = await startReceiver((index) => (index < 2 ? 503 : 200));
    const { engine, alerting } = setup([{ name: "ops", url: receiver.url }]);

    engine.observe(crashLooping("i-1"));
    engine.observe({ type: "instanceRemoved", instanceId: "i-1" });
    await alerting.notifier.idle();

    const statuses = receiver.requests.map((request) => (request.body as { status: string }).status);
    expect(statuses).toEqual(["firing", "firing", "firing", "resolved"]);
  });

  it("gives up after maxAttempts on a receiver that is down, counts a failure, and logs it without the URL", async () => {
    const gone = await startReceiver();
    await stopServer(gone.server);
    const { engine, alerting, registry, delaysMs, sink } = setup([{ name: "ops", url: `${gone.url}?token=s3cret` }]);

    engine.observe(crashLooping("i-1"));
    await alerting.notifier.idle();

    expect(delaysMs).toEqual([1_000, 2_000, 4_000, 8_000]);
    expect(await deliveries(registry)).toEqual({ "ops/delivered": 0, "ops/failed": 1, "ops/dropped": 0 });
    const givingUp = sink.lines.filter((line) => line.msg === "alert delivery failed, giving up");
    expect(givingUp).toHaveLength(1);
    expect(givingUp[0]).toMatchObject({ receiver: "ops", alertname: "AgentCrashLoop", attempts: 5 });
    expect(JSON.stringify(sink.lines)).not.toContain("s3cret");
  });

  it("does not retry a 4xx other than 408 and 429", async () => {
    const receiver = await startReceiver(() => 400);
    const { engine, alerting, registry, delaysMs } = setup([{ name: "ops", url: receiver.url }]);
    engine.observe(crashLooping("i-1"));
    await alerting.notifier.idle();

    expect(receiver.requests).toHaveLength(1);
    expect(delaysMs).toEqual([]);
    expect((await deliveries(registry))["ops/failed"]).toBe(1);
  });

  it("times out a receiver that never answers, per attempt", async () => {
    const receiver = await startReceiver(() => "hang");
    const { engine, alerting, registry } = setup([{ name: "ops", url: receiver.url, timeout: "200ms", maxAttempts: 2 }]);
    engine.observe(crashLooping("i-1"));
    await alerting.notifier.idle();

    expect(receiver.requests).toHaveLength(2);
    expect((await deliveries(registry))["ops/failed"]).toBe(1);
  });

  it("skips resolves for a receiver with sendResolved: false, and a slow receiver does not hold up another", async () => {
    const quiet = await startReceiver();
    const failing = await startReceiver(() => 500);
    const { engine, alerting } = setup([
      { name: "pager", url: quiet.url, sendResolved: false },
      { name: "flaky", url: failing.url, maxAttempts: 3 },
    ]);
    engine.observe(crashLooping("i-1"));
    engine.observe({ type: "instanceRemoved", instanceId: "i-1" });
    await alerting.notifier.idle();

    expect(quiet.requests.map((request) => (request.body as { status: string }).status)).toEqual(["firing"]);
    expect(failing.requests).toHaveLength(6);
  });

  it("never blocks the engine: observe returns before any POST completes, and close() cancels pending retries", async () => {
    const receiver = await startReceiver(() => 500);
    const parked: Sleep = (_delayMs, signal) =>
      new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true }));
    const { engine, alerting, registry } = setup([{ name: "ops", url: receiver.url }], { sleep: parked });

    engine.observe(crashLooping("i-1"));
    expect(receiver.requests).toHaveLength(0);
    await new Promise<void>((resolve) => receiver.server.once("request", (request) => request.on("end", resolve)));

    await alerting.close(0);
    expect(receiver.requests).toHaveLength(1);
    expect(await deliveries(registry)).toEqual({ "ops/delivered": 0, "ops/failed": 0, "ops/dropped": 1 });
  });

  it("shows firing alerts in agentmesh_alerts_firing on the registry it was given", async () => {
    const receiver = await startReceiver();
    const { engine, clock, alerting, registry } = setup([{ name: "ops", url: receiver.url }]);
    engine.observe(down("i-1"));
    engine.observe(down("i-2"));
    clock.advance(30_000);
    engine.evaluate();
    await alerting.notifier.idle();

    const text = await registry.metrics();
    expect(text).toContain('agentmesh_alerts_firing{alertname="AgentDown",severity="critical"} 2');
    expect(text).toContain('agentmesh_alerts_firing{alertname="AgentCrashLoop",severity="critical"} 0');
    expect(text).toContain('agentmesh_alert_deliveries_total{receiver="ops",outcome="delivered"} 1');

    engine.observe(up("i-2"));
    expect(await registry.metrics()).toContain('agentmesh_alerts_firing{alertname="AgentDown",severity="critical"} 1');
  });
});
