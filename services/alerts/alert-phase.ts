/**
 * Where one alert (one rule + label set) stands. There is no separate "resolved" phase: a
 * resolved alert goes back to pending with `refireAfterMs` set, which is the hysteresis that
 * keeps a flapping condition from sending a storm of firing/resolved pairs.
 */
export type AlertPhase =
  | { name: "pending"; refireAfterMs: number }
  | { name: "firing"; startsAtMs: number };

export interface AlertCondition {
  /** When the condition started holding without a break; undefined while it does not hold. */
  sinceMs: number | undefined;
  forMs: number;
}

/** What the engine must do with an alert now. */
export type AlertStep = "fire" | "resolve" | "forget" | "stay";

/** The one transition function of the alert state machine; pure, so it is tested on its own. */
export function nextAlertStep(phase: AlertPhase, condition: AlertCondition, nowMs: number): AlertStep {
  const holds = condition.sinceMs !== undefined;
  if (phase.name === "firing") return holds ? "stay" : "resolve";
  const cooledDown = nowMs >= phase.refireAfterMs;
  if (!holds) return cooledDown ? "forget" : "stay";
  const heldLongEnough = nowMs - (condition.sinceMs ?? nowMs) >= condition.forMs;
  return heldLongEnough && cooledDown ? "fire" : "stay";
}
