import { createHash, randomBytes as cryptoRandomBytes } from "node:crypto";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { tryParseSpiffeId, validatePathSegment } from "../../../sdk/ts/src/core/spiffe-id.js";
import type { SpiffeId } from "../../../sdk/ts/src/core/spiffe-id.js";
import type { JoinTokenRecord, JoinTokenStore } from "../ports.js";

export const defaultJoinTokenTtlMs = 10 * 60_000;
export const maxJoinTokenTtlMs = 7 * 24 * 60 * 60_000;
export const maxJoinTokenUses = 100_000;
export const anyAgentName = "*";
const tokenBytes = 32;
// 32 bytes in unpadded base64url.
const tokenPattern = /^[A-Za-z0-9_-]{43}$/;

export interface JoinTokensOptions {
  store: JoinTokenStore;
  clock: Clock;
  trustDomain: string;
  randomBytes?: (size: number) => Uint8Array;
}

export interface CreateJoinTokenInput {
  /** At least one; `*` lets the identity register any agent name. */
  allowedAgentNames: string[];
  host: string;
  /** Default 1. */
  maxUses?: number;
  /** Default 10 minutes. */
  ttlMs?: number;
  /** SPIFFE ID of the admin creating it. */
  createdBy: string;
}

export interface CreatedJoinToken {
  /** Shown to the admin once; only its hash is stored. */
  token: string;
  tokenId: string;
  expiresAtMs: number;
}

/** What a spent token entitles the new identity to (IssueCertificateResponse.allowed_agent_names). */
export interface JoinTokenGrant {
  tokenId: string;
  spiffeId: SpiffeId;
  allowedAgentNames: string[];
  host: string;
  usesLeft: number;
}

export function hashJoinToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

const invalidOrExpired = (): MeshError => new MeshError("unauthenticated", "join token invalid or expired");
const notForIdentity = (): MeshError => new MeshError("unauthenticated", "join token not valid for this identity");

function validateCreate(input: CreateJoinTokenInput): { maxUses: number; ttlMs: number } {
  if (input.allowedAgentNames.length === 0) throw new MeshError("invalidArgument", "allowedAgentNames must not be empty");
  for (const name of input.allowedAgentNames) {
    if (name !== anyAgentName) validatePathSegment(name);
  }
  validatePathSegment(input.host);
  const maxUses = input.maxUses ?? 1;
  if (!Number.isInteger(maxUses) || maxUses < 1 || maxUses > maxJoinTokenUses) {
    throw new MeshError("invalidArgument", `maxUses must be an integer from 1 to ${maxJoinTokenUses}`);
  }
  const ttlMs = input.ttlMs ?? defaultJoinTokenTtlMs;
  if (!Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > maxJoinTokenTtlMs) {
    throw new MeshError("invalidArgument", "ttlMs must be positive and at most 7 days");
  }
  return { maxUses, ttlMs };
}

/**
 * Which identities a token can mint: the sidecar of its host, or an agent (SDK
 * direct mode) whose name it allows. Never a server or an admin.
 */
function tokenCovers(record: JoinTokenRecord, id: SpiffeId): boolean {
  if (id.kind === "sidecar") return id.name === record.host;
  if (id.kind === "agent") return record.allowedAgentNames.includes(anyAgentName) || record.allowedAgentNames.includes(id.name);
  return false;
}

/** Bootstrap secrets for new sidecars: created by an admin, spent on the first certificate. */
export class JoinTokens {
  constructor(private readonly options: JoinTokensOptions) {}

  async create(input: CreateJoinTokenInput): Promise<CreatedJoinToken> {
    const { maxUses, ttlMs } = validateCreate(input);
    const token = Buffer.from((this.options.randomBytes ?? cryptoRandomBytes)(tokenBytes)).toString("base64url");
    const tokenHash = hashJoinToken(token);
    const nowMs = this.options.clock.nowMs();
    const record: JoinTokenRecord = {
      tokenId: tokenHash.slice(0, 16),
      tokenHash,
      allowedAgentNames: [...new Set(input.allowedAgentNames)],
      host: input.host,
      maxUses,
      uses: 0,
      createdAtMs: nowMs,
      expiresAtMs: nowMs + ttlMs,
      createdBy: input.createdBy,
    };
    await this.options.store.insert(record);
    return { token, tokenId: record.tokenId, expiresAtMs: record.expiresAtMs };
  }

  /**
   * Spends one use of `token` for `requestedSpiffeId`. Checks that the token
   * covers the identity before counting the use, so a wrong request leaves the
   * count untouched. Verify the CSR before calling this, for the same reason.
   */
  async consume(token: string, request: { requestedSpiffeId: string }): Promise<JoinTokenGrant> {
    if (!tokenPattern.test(token)) throw invalidOrExpired();
    const tokenHash = hashJoinToken(token);
    const nowMs = this.options.clock.nowMs();
    const record = await this.options.store.get(tokenHash);
    if (!record || record.uses >= record.maxUses || record.expiresAtMs <= nowMs) throw invalidOrExpired();
    const id = tryParseSpiffeId(request.requestedSpiffeId);
    if (!id || id.trustDomain !== this.options.trustDomain || !tokenCovers(record, id)) throw notForIdentity();
    // The store re-checks uses and expiry atomically: another join may have raced us.
    const used = await this.options.store.use(tokenHash, nowMs);
    if (!used) throw invalidOrExpired();
    return {
      tokenId: used.tokenId,
      spiffeId: id,
      // An agent identity only ever speaks for its own name.
      allowedAgentNames: id.kind === "agent" ? [id.name] : used.allowedAgentNames,
      host: used.host,
      usesLeft: used.maxUses - used.uses,
    };
  }
}
