import type { RandomSource } from "../clock.js";
import { Backoff } from "../backoff.js";
import type { CertificateSource, IdentityMaterial } from "./certificate-source.js";

export interface RenewerOptions {
  /** Obtains a fresh certificate (a CSR sent to the CA, or the CA itself on the server). */
  issue: () => Promise<IdentityMaterial>;
  source: CertificateSource;
  random?: RandomSource;
  onRenewed?: (identity: IdentityMaterial) => void;
  onError?: (error: unknown, retryInMs: number) => void;
}

/**
 * Keeps a CertificateSource fresh: renews at half-life with up to 10 % jitter
 * (so a fleet issued together does not renew together), retries failures with
 * backoff well before expiry, and never holds the process open.
 */
export class CertificateRenewer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly backoff: Backoff;

  constructor(private readonly options: RenewerOptions) {
    this.backoff = new Backoff({ initialMs: 200, maxMs: 30_000, multiplier: 2 }, options.random ?? Math.random);
  }

  /** Issues the first certificate, then keeps renewing. */
  async start(): Promise<IdentityMaterial> {
    const identity = await this.options.issue();
    this.options.source.setIdentity(identity);
    this.schedule(identity);
    return identity;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Delay until the next renewal: half the lifetime, minus up to 10 % of it. The
   * lifetime counts from when the certificate arrived, not from notBefore: the CA
   * backdates notBefore by minutes for clock skew, which would put "half-life" of a
   * short certificate in the past and renew it in a tight loop.
   */
  static renewalDelayMs(identity: IdentityMaterial, nowMs: number, random: RandomSource): number {
    const startMs = Math.max(identity.notBeforeMs, Math.min(nowMs, identity.expiresAtMs));
    const lifetimeMs = identity.expiresAtMs - startMs;
    const renewAtMs = startMs + lifetimeMs / 2 - random() * lifetimeMs * 0.1;
    return Math.max(0, renewAtMs - nowMs);
  }

  private schedule(identity: IdentityMaterial): void {
    if (this.stopped) return;
    const delayMs = CertificateRenewer.renewalDelayMs(identity, Date.now(), this.options.random ?? Math.random);
    this.timer = setTimeout(() => this.renew(), delayMs);
    this.timer.unref();
  }

  private renew(): void {
    this.options.issue().then(
      (identity) => {
        if (this.stopped) return;
        this.backoff.reset();
        this.options.source.setIdentity(identity);
        this.options.onRenewed?.(identity);
        this.schedule(identity);
      },
      (error: unknown) => {
        if (this.stopped) return;
        const retryInMs = this.backoff.nextDelayMs();
        this.options.onError?.(error, retryInMs);
        this.timer = setTimeout(() => this.renew(), retryInMs);
        this.timer.unref();
      },
    );
  }
}
