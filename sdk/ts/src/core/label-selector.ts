import { LabelRequirement_Operator, type LabelSelector } from "../gen/agentmesh/v1/registry.js";

/** True when `labels` satisfy every requirement of `selector` (Kubernetes semantics). */
export function matchesLabelSelector(labels: Readonly<Record<string, string>>, selector: LabelSelector | undefined): boolean {
  if (!selector) return true;
  for (const [key, value] of Object.entries(selector.matchLabels)) {
    if (labels[key] !== value) return false;
  }
  for (const requirement of selector.matchExpressions) {
    const value = labels[requirement.key];
    switch (requirement.operator) {
      case LabelRequirement_Operator.OPERATOR_IN:
        if (value === undefined || !requirement.values.includes(value)) return false;
        break;
      case LabelRequirement_Operator.OPERATOR_NOT_IN:
        if (value !== undefined && requirement.values.includes(value)) return false;
        break;
      case LabelRequirement_Operator.OPERATOR_EXISTS:
        if (value === undefined) return false;
        break;
      case LabelRequirement_Operator.OPERATOR_DOES_NOT_EXIST:
        if (value !== undefined) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/**
 * Parses the compact selector syntax used on the command line:
 * `env=prod,tier in (a|b),!canary,gpu` → LabelSelector.
 */
export function parseLabelSelector(text: string): LabelSelector {
  const selector: LabelSelector = { matchLabels: {}, matchExpressions: [] };
  for (const rawPart of text.split(",")) {
    const part = rawPart.trim();
    if (part === "") continue;
    const setMatch = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(part);
    if (setMatch) {
      const [, key = "", operator, values = ""] = setMatch;
      selector.matchExpressions.push({
        key,
        operator: operator === "in" ? LabelRequirement_Operator.OPERATOR_IN : LabelRequirement_Operator.OPERATOR_NOT_IN,
        values: values.split("|").map((value) => value.trim()).filter((value) => value !== ""),
      });
    } else if (part.includes("=")) {
      const [key = "", ...rest] = part.split("=");
      selector.matchLabels[key.trim()] = rest.join("=").trim();
    } else if (part.startsWith("!")) {
      selector.matchExpressions.push({ key: part.slice(1), operator: LabelRequirement_Operator.OPERATOR_DOES_NOT_EXIST, values: [] });
    } else {
      selector.matchExpressions.push({ key: part, operator: LabelRequirement_Operator.OPERATOR_EXISTS, values: [] });
    }
  }
  return selector;
}
