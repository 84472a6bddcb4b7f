import type { experimental } from "@grpc/grpc-js";

type CertificateProvider = experimental.CertificateProvider;
type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export interface IdentityMaterial {
  /** Leaf first, then intermediates. */
  chainPem: string[];
  privateKeyPem: string;
  notBeforeMs: number;
  expiresAtMs: number;
  serial: string;
  spiffeId: string;
}

/**
 * The current certificate and trust bundle of one component, as a grpc-js
 * CertificateProvider: servers and channels built on it pick up a renewed
 * certificate for new handshakes without a restart or a dropped stream.
 */
export class CertificateSource implements CertificateProvider {
  private identity: IdentityMaterial | undefined;
  private trustBundlePem: string[] = [];
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly changeListeners = new Set<() => void>();
  private readyResolve: (() => void) | undefined;
  /** Resolves once both a certificate and a trust bundle are loaded. */
  readonly ready: Promise<void>;

  constructor() {
    this.ready = new Promise((resolve) => {
      this.readyResolve = resolve;
    });
  }

  get current(): IdentityMaterial | undefined {
    return this.identity;
  }

  get trustBundle(): readonly string[] {
    return this.trustBundlePem;
  }

  setIdentity(identity: IdentityMaterial): void {
    this.identity = identity;
    const update = { certificate: Buffer.from(identity.chainPem.join("\n")), privateKey: Buffer.from(identity.privateKeyPem) };
    for (const listener of this.identityListeners) listener(update);
    this.notify();
  }

  setTrustBundle(bundlePem: string[]): void {
    this.trustBundlePem = [...bundlePem];
    const update = { caCertificate: Buffer.from(bundlePem.join("\n")) };
    for (const listener of this.caListeners) listener(update);
    this.notify();
  }

  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  // Current values are delivered on the next tick, never synchronously: grpc-js's
  // certificate-provider server credentials register their own watcher only after
  // adding these listeners, so a synchronous first update is lost and every
  // handshake fails until the next renewal.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    setImmediate(() => {
      if (this.caListeners.has(listener) && this.trustBundlePem.length > 0) listener({ caCertificate: Buffer.from(this.trustBundlePem.join("\n")) });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    setImmediate(() => {
      const identity = this.identity;
      if (this.identityListeners.has(listener) && identity) {
        listener({ certificate: Buffer.from(identity.chainPem.join("\n")), privateKey: Buffer.from(identity.privateKeyPem) });
      }
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  private notify(): void {
    if (this.identity && this.trustBundlePem.length > 0) this.readyResolve?.();
    for (const listener of this.changeListeners) listener();
  }
}
