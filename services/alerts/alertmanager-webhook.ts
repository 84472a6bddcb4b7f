import http from "node:http";
import https from "node:https";
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import { Backoff, type BackoffOptions } from "../../sdk/ts/src/core/backoff.js";
import type { RandomSource } from "../../sdk/ts/src/core/clock.js";
import type { Alert } from "./alert-engine.js";
import { type AlertmanagerWebhookMessage, buildWebhookMessage } from "./alertmanager-payload.js";

/** One webhook_config: where transitions go. */
export interface WebhookReceiver {
  /** The payload's `receiver` and the metric label; never the URL, which may carry a secret. */
  name: string;
  url: string;
  /** Deadline of one POST, connection included. */
  timeoutMs: number;
  /** POSTs per message before giving up (first try included). */
  maxAttempts: number;
  /** Also deliver resolutions (Alertmanager's send_resolved). */
  sendResolved: boolean;
}

export const defaultWebhookTimeoutMs = 10_000;
export const defaultWebhookMaxAttempts = 5;
/** Waits of 1 s, 2 s, 4 s, 8 s (each randomly between half and all of it): the waits between five attempts add up to 15 s at most. */
export const defaultWebhookBackoff: BackoffOptions = { initialMs: 1_000, maxMs: 30_000, multiplier: 2 };
/** Per receiver. A receiver down for hours must not grow memory without bound; oldest go first. */
export const defaultMaxQueuedMessages = 1_000;

/** Sends one body and returns the HTTP status; rejects on network errors, timeout or abort. */
export type PostJson = (url: URL, body: string, timeoutMs: number, signal: AbortSignal) => Promise<number>;
/** Waits between attempts; rejects when `signal` aborts (shutdown). */
export type Sleep = (delayMs: number, signal: AbortSignal) => Promise<void>;

export interface AlertmanagerWebhookOptions {
  receivers: readonly WebhookReceiver[];
  /** The counter `agentmesh_alert_deliveries_total{receiver,outcome}` is registered here. */
  registry: Registry;
  logger: Logger;
  /** The mesh server's URL, sent as externalURL and generatorURL. */
  externalUrl?: string;
  random?: RandomSource;
  sleep?: Sleep;
  backoff?: BackoffOptions;
  maxQueuedMessages?: number;
  post?: PostJson;
}

export type DeliveryOutcome = "delivered" | "failed" | "dropped";
const deliveryOutcomes: readonly DeliveryOutcome[] = ["delivered", "failed", "dropped"];

// Timers must not hold the process open: a backoff wait is never a reason to stay up.
const unrefSleep: Sleep = (delayMs, signal) => delay(delayMs, undefined, { signal, ref: false });

/**
 * Delivers alert transitions to webhooks in Alertmanager's format. `notify` only queues, so the
 * engine never waits on a network. Transitions reported in the same tick (one `evaluate`) are
 * grouped by alertname and status into one message, as Alertmanager groups by alertname; each
 * receiver then gets its messages strictly in order, one at a time, so a resolve never
 * overtakes its firing. A message is retried with exponential backoff on network errors,
 * timeouts, 5xx, 408 and 429 (other 4xx will not get better), up to `maxAttempts`.
 */
export class AlertmanagerWebhookNotifier {
  private readonly queues: ReceiverQueue[];
  private readonly aborter = new AbortController();
  private readonly log: Logger;
  private batch: Alert[] = [];

  constructor(private readonly options: AlertmanagerWebhookOptions) {
    this.log = options.logger.child({ component: "alert-webhook" });
    const deliveries = new Counter({
      name: "agentmesh_alert_deliveries_total",
      help: "Alert webhook messages by receiver and outcome (delivered, failed after retries, dropped).",
      labelNames: ["receiver", "outcome"],
      registers: [options.registry],
    });
    const shared: QueueDependencies = {
      post: options.post ?? postJson,
      sleep: options.sleep ?? unrefSleep,
      backoff: options.backoff ?? defaultWebhookBackoff,
      random: options.random ?? Math.random,
      maxQueuedMessages: options.maxQueuedMessages ?? defaultMaxQueuedMessages,
      signal: this.aborter.signal,
      log: this.log,
      count: (receiver, outcome) => deliveries.inc({ receiver, outcome }),
    };
    this.queues = options.receivers.map((receiver) => {
      for (const outcome of deliveryOutcomes) deliveries.inc({ receiver: receiver.name, outcome }, 0);
      return new ReceiverQueue(receiver, shared);
    });
  }

  /** Queues one transition; returns at once. */
  notify(alert: Alert): void {
    if (this.aborter.signal.aborted || this.queues.length === 0) return;
    if (this.batch.length === 0) queueMicrotask(() => this.flushBatch());
    this.batch.push(alert);
  }

  /** Resolves once every queued message has been delivered or given up. */
  async idle(): Promise<void> {
    for (;;) {
      await Promise.resolve(); // lets a pending batch reach the queues first
      const running = this.queues.flatMap((queue) => (queue.running === undefined ? [] : [queue.running]));
      if (running.length === 0 && this.batch.length === 0) return;
      await Promise.all(running);
    }
  }

  /** Stops: cancels backoff waits and POSTs in flight, and drops what is still queued. */
  async close(): Promise<void> {
    this.aborter.abort();
    this.batch = [];
    await this.idle();
  }

  private flushBatch(): void {
    const groups = new Map<string, Alert[]>();
    for (const alert of this.batch) {
      const key = `${alert.status}\u0000${alert.alertname}`;
      const group = groups.get(key);
      if (group === undefined) groups.set(key, [alert]);
      else group.push(alert);
    }
    this.batch = [];
    for (const queue of this.queues) {
      for (const group of groups.values()) {
        if (group[0]?.status === "resolved" && !queue.receiver.sendResolved) continue;
        queue.enqueue(buildWebhookMessage(queue.receiver.name, group, this.options.externalUrl ?? ""));
      }
    }
  }
}

interface QueueDependencies {
  post: PostJson;
  sleep: Sleep;
  backoff: BackoffOptions;
  random: RandomSource;
  maxQueuedMessages: number;
  signal: AbortSignal;
  log: Logger;
  count: (receiver: string, outcome: DeliveryOutcome) => void;
}

/** One receiver's ordered queue with a single worker. */
class ReceiverQueue {
  /** The worker while it runs; undefined when the queue is empty and idle. */
  running: Promise<void> | undefined;
  private readonly messages: AlertmanagerWebhookMessage[] = [];
  private readonly url: URL;

  constructor(
    readonly receiver: WebhookReceiver,
    private readonly deps: QueueDependencies,
  ) {
    this.url = new URL(receiver.url);
  }

  enqueue(message: AlertmanagerWebhookMessage): void {
    if (this.messages.length >= this.deps.maxQueuedMessages) {
      const dropped = this.messages.shift();
      this.deps.count(this.receiver.name, "dropped");
      this.deps.log.warn({ receiver: this.receiver.name, alertname: dropped?.groupLabels.alertname }, "alert webhook queue full, dropped the oldest message");
    }
    this.messages.push(message);
    this.running ??= this.work();
  }

  private async work(): Promise<void> {
    for (let message = this.messages.shift(); message !== undefined; message = this.messages.shift()) {
      await this.deliver(message);
    }
    // Cleared in the same turn the loop sees the queue empty, so an enqueue can never find a
    // finished worker still marked as running.
    this.running = undefined;
  }

  private async deliver(message: AlertmanagerWebhookMessage): Promise<void> {
    const { receiver, deps } = this;
    const fields = { receiver: receiver.name, alertname: message.groupLabels.alertname, status: message.status, alerts: message.alerts.length };
    const body = JSON.stringify(message);
    const backoff = new Backoff(deps.backoff, deps.random);
    for (let attempt = 1; ; attempt += 1) {
      if (deps.signal.aborted) return deps.count(receiver.name, "dropped");
      let problem: string;
      let retryable: boolean;
      try {
        const status = await deps.post(this.url, body, receiver.timeoutMs, deps.signal);
        if (status >= 200 && status < 300) {
          deps.log.debug({ ...fields, attempts: attempt }, "alert delivered");
          return deps.count(receiver.name, "delivered");
        }
        problem = `HTTP ${status}`;
        retryable = status >= 500 || status === 408 || status === 429;
      } catch (error) {
        if (deps.signal.aborted) return deps.count(receiver.name, "dropped");
        problem = error instanceof Error ? error.message : String(error);
        retryable = true;
      }
      if (!retryable || attempt >= receiver.maxAttempts) {
        deps.log.error({ ...fields, attempts: attempt, problem }, "alert delivery failed, giving up");
        return deps.count(receiver.name, "failed");
      }
      const delayMs = backoff.nextDelayMs();
      deps.log.warn({ ...fields, attempt, delayMs, problem }, "alert delivery failed, retrying");
      try {
        await deps.sleep(delayMs, deps.signal);
      } catch {
        return deps.count(receiver.name, "dropped");
      }
    }
  }
}

/**
 * POST over a fresh connection each time (agent: false): alerts are rare, and a pooled
 * keep-alive socket would be one more thing to close on shutdown. The deadline runs on real
 * time because it guards a real socket.
 */
export const postJson: PostJson = (url, body, timeoutMs, signal) =>
  new Promise((resolve, reject) => {
    const deadline = AbortSignal.timeout(timeoutMs);
    const fail = (error: unknown): void => reject(deadline.aborted ? new Error(`no response within ${timeoutMs} ms`) : error);
    const transport = url.protocol === "https:" ? https : http;
    const request = transport.request(
      url,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), "user-agent": "agentmesh-alerts" },
        signal: AbortSignal.any([signal, deadline]),
      },
      (response) => {
        response.resume(); // the body is not needed, only the status
        response.on("end", () => resolve(response.statusCode ?? 0));
        response.on("close", () => {
          if (!response.complete) fail(new Error("response ended early"));
        });
        response.on("error", fail);
      },
    );
    request.on("error", fail);
    request.end(body);
  });
