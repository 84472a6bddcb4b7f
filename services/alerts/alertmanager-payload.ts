import type { AlertLabels } from "./alert-fingerprint.js";
import type { Alert, AlertStatus } from "./alert-engine.js";

/** One alert in Alertmanager's webhook body (webhook_config, payload version "4"). */
export interface AlertmanagerAlert {
  status: AlertStatus;
  labels: AlertLabels;
  annotations: AlertLabels;
  startsAt: string;
  endsAt: string;
  generatorURL: string;
  fingerprint: string;
}

/**
 * The JSON body Alertmanager POSTs to a webhook_config URL (notify/webhook Message: template.Data
 * plus version, groupKey and truncatedAlerts), field for field, so any receiver written for
 * Alertmanager (PagerDuty bridges, chat relays, alertmanager-webhook-logger) takes ours unchanged.
 */
export interface AlertmanagerWebhookMessage {
  receiver: string;
  status: AlertStatus;
  alerts: AlertmanagerAlert[];
  groupLabels: AlertLabels;
  commonLabels: AlertLabels;
  commonAnnotations: AlertLabels;
  externalURL: string;
  version: "4";
  groupKey: string;
  truncatedAlerts: number;
}

/** Go's zero time.Time, which Alertmanager sends as `endsAt` while an alert fires. */
export const zeroTime = "0001-01-01T00:00:00Z";

/**
 * Builds one message for alerts of one group (same alertname). The group is firing when any of
 * its alerts fires, as in Alertmanager. `externalUrl` is the mesh server's own URL; it is also
 * each alert's generatorURL, since no rule expression page exists to link to.
 */
export function buildWebhookMessage(receiver: string, alerts: readonly Alert[], externalUrl: string): AlertmanagerWebhookMessage {
  const first = alerts[0];
  if (first === undefined) throw new Error("a webhook message needs at least one alert");
  const groupLabels = { alertname: first.alertname };
  return {
    receiver,
    status: alerts.some((alert) => alert.status === "firing") ? "firing" : "resolved",
    alerts: alerts.map((alert) => ({
      status: alert.status,
      labels: sorted(alert.labels),
      annotations: sorted(alert.annotations),
      startsAt: new Date(alert.startsAtMs).toISOString(),
      endsAt: alert.endsAtMs === undefined ? zeroTime : new Date(alert.endsAtMs).toISOString(),
      generatorURL: externalUrl,
      fingerprint: alert.fingerprint,
    })),
    groupLabels,
    commonLabels: common(alerts.map((alert) => alert.labels)),
    commonAnnotations: common(alerts.map((alert) => alert.annotations)),
    externalURL: externalUrl,
    version: "4",
    // Alertmanager's form: the route's matchers ("{}" for the root route), then the group labels.
    groupKey: `{}:{${Object.entries(groupLabels)
      .map(([name, value]) => `${name}=${JSON.stringify(value)}`)
      .join(", ")}}`,
    truncatedAlerts: 0,
  };
}

/** The pairs every set shares (template.Data's commonLabels / commonAnnotations). */
function common(sets: readonly AlertLabels[]): AlertLabels {
  const [first, ...rest] = sets;
  if (first === undefined) return {};
  return sorted(Object.fromEntries(Object.entries(first).filter(([name, value]) => rest.every((set) => set[name] === value))));
}

/** Go encodes maps with sorted keys; doing the same keeps bodies byte-stable. */
function sorted(labels: AlertLabels): AlertLabels {
  return Object.fromEntries(Object.entries(labels).sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0)));
}
