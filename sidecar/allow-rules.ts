import { MeshError } from "../sdk/ts/src/core/mesh-error.js";

/** `from=capability` with `*` wildcards, e.g. `spiffe://mesh/sidecar/*=sql.*`. */
export interface AllowRule {
  from: RegExp;
  capability: RegExp;
  text: string;
}

export function parseAllowRule(text: string): AllowRule {
  const separator = text.lastIndexOf("=");
  if (separator <= 0 || separator === text.length - 1) throw new MeshError("invalidArgument", `allow rule "${text}": expected <spiffe-id pattern>=<capability pattern>`);
  return { from: globToRegExp(text.slice(0, separator)), capability: globToRegExp(text.slice(separator + 1)), text };
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`);
}

/**
 * Invoke authorization (DESIGN §3): allowed within the trust domain by default;
 * with `defaultDeny`, only what a rule allows. mTLS already proved the caller is
 * in the trust domain.
 */
export class AllowPolicy {
  constructor(
    private readonly rules: readonly AllowRule[],
    private readonly defaultDeny: boolean,
  ) {}

  check(caller: string, capability: string): void {
    if (!this.defaultDeny && this.rules.length === 0) return;
    if (this.rules.some((rule) => rule.from.test(caller) && rule.capability.test(capability))) return;
    if (!this.defaultDeny) return;
    throw new MeshError("denied", "caller may not invoke this capability");
  }
}
