import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { BackoffOptions } from "../../sdk/ts/src/core/backoff.js";
import type { Clock, RandomSource } from "../../sdk/ts/src/core/clock.js";
import type { AlertsConfig } from "./alert-config.js";
import { AlertEngine } from "./alert-engine.js";
import { AlertmanagerWebhookNotifier, type PostJson, type Sleep } from "./alertmanager-webhook.js";

export interface AlertingOptions {
  config: AlertsConfig;
  clock: Clock;
  registry: Registry;
  logger: Logger;
  random?: RandomSource;
  sleep?: Sleep;
  backoff?: BackoffOptions;
  post?: PostJson;
}

/** The engine and its webhook notifier, wired together: what the server holds. */
export interface Alerting {
  readonly engine: AlertEngine;
  readonly notifier: AlertmanagerWebhookNotifier;
  /** Starts periodic evaluation at the configured interval. */
  start(): void;
  /**
   * Stops evaluating, gives queued webhook messages up to `graceMs` to go out, then cancels
   * the rest: shutdown must not hang on a receiver that is down.
   */
  close(graceMs?: number): Promise<void>;
}

export function createAlerting(options: AlertingOptions): Alerting {
  const { config } = options;
  const engine = new AlertEngine({
    rules: config.rules,
    clock: options.clock,
    registry: options.registry,
    logger: options.logger,
    cooldownMs: config.cooldownMs,
  });
  const notifier = new AlertmanagerWebhookNotifier({
    receivers: config.receivers,
    registry: options.registry,
    logger: options.logger,
    externalUrl: config.externalUrl,
    ...(options.random === undefined ? {} : { random: options.random }),
    ...(options.sleep === undefined ? {} : { sleep: options.sleep }),
    ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
    ...(options.post === undefined ? {} : { post: options.post }),
  });
  engine.onTransition((alert) => notifier.notify(alert));
  return {
    engine,
    notifier,
    start: () => engine.start(config.evaluationIntervalMs),
    async close(graceMs = 2_000) {
      engine.stop();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
        timer.unref();
      });
      await Promise.race([notifier.idle(), deadline]);
      clearTimeout(timer);
      await notifier.close();
    },
  };
}
