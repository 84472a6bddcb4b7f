// User API first: configuration, the wired pair, what the server feeds and reads.
export { type AlertsConfig, defaultEvaluationIntervalMs, parseAlertsConfig, parseAlertsConfigText } from "./alert-config.js";
export { type Alerting, type AlertingOptions, createAlerting } from "./alerting.js";
export {
  type Alert,
  AlertEngine,
  type AlertEngineOptions,
  type AlertListener,
  type AlertSignal,
  type AlertStatus,
  defaultAlertCooldownMs,
} from "./alert-engine.js";
export {
  type AlertRule,
  type AlertRuleKind,
  type AlertSeverity,
  alertRuleKinds,
  alertSeverities,
  defaultAlertRules,
  parseAlertRules,
  type ParseAlertRulesOptions,
} from "./alert-rules.js";
// Integrator hooks: delivery, payload and the pieces tests and other receivers reuse.
export {
  AlertmanagerWebhookNotifier,
  type AlertmanagerWebhookOptions,
  type DeliveryOutcome,
  defaultWebhookBackoff,
  postJson,
  type PostJson,
  type Sleep,
  type WebhookReceiver,
} from "./alertmanager-webhook.js";
export { type AlertmanagerAlert, type AlertmanagerWebhookMessage, buildWebhookMessage, zeroTime } from "./alertmanager-payload.js";
export { type AlertLabels, labelsFingerprint } from "./alert-fingerprint.js";
export { formatDurationMs, parseDurationMs } from "./duration.js";
