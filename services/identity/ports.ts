// State the identity domain needs, as ports; adapters/ holds memory-* and
// postgres-*/redis-* implementations that must all pass the same contract suite.

/** A join token as stored: never the token itself, only its SHA-256. */
export interface JoinTokenRecord {
  /** Public handle for logs and audit: the first 16 hex digits of tokenHash. */
  tokenId: string;
  /** SHA-256 of the token string, hex. */
  tokenHash: string;
  /** Agent names the joining identity may register; `*` = any. */
  allowedAgentNames: string[];
  /** Host the token is for: it may become spiffe://<td>/sidecar/<host>. */
  host: string;
  maxUses: number;
  uses: number;
  createdAtMs: number;
  expiresAtMs: number;
  /** SPIFFE ID of the admin who created it. */
  createdBy: string;
}

export interface JoinTokenStore {
  insert(record: JoinTokenRecord): Promise<void>;
  get(tokenHash: string): Promise<JoinTokenRecord | undefined>;
  /**
   * Atomically counts one use if the token exists, has uses left and has not
   * expired at nowMs; answers the updated record, or undefined when nothing was
   * counted. Atomic so two concurrent joins cannot both spend the last use.
   */
  use(tokenHash: string, nowMs: number): Promise<JoinTokenRecord | undefined>;
  /** Drops tokens expired before nowMs; answers how many. */
  deleteExpired(nowMs: number): Promise<number>;
}

/** A certificate the mesh CA issued, kept so a SPIFFE ID can be revoked as a whole. */
export interface IssuedCertificateRecord {
  /** Lower-case hex, no leading zeros. */
  serial: string;
  spiffeId: string;
  issuedAtMs: number;
  notAfterMs: number;
}

export interface CertificateStore {
  recordIssued(record: IssuedCertificateRecord): Promise<void>;
  get(serial: string): Promise<IssuedCertificateRecord | undefined>;
  /** Certificates of the SPIFFE ID still valid at nowMs. */
  listValid(spiffeId: string, nowMs: number): Promise<IssuedCertificateRecord[]>;
}

/** One revoked certificate; kept until the certificate would have expired anyway. */
export interface RevocationRecord {
  serial: string;
  spiffeId: string;
  reason: string;
  revokedAtMs: number;
  /** SPIFFE ID of the admin who revoked it. */
  revokedBy: string;
  notAfterMs: number;
}

export interface RevocationStore {
  /** Idempotent per serial. */
  add(records: RevocationRecord[]): Promise<void>;
  /** Revocations of certificates not yet expired at nowMs. */
  listActive(nowMs: number): Promise<RevocationRecord[]>;
}
