import { type ChannelCredentials, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { sessionKeyMetadata } from "../../sdk/ts/src/core/session-affinity.js";
import { type KeyAgreementOptions, type FrameSealer, startKeyAgreement } from "../../sdk/ts/src/core/frame-auth.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import type { CertificateSource } from "../../sdk/ts/src/core/tls/certificate-source.js";
import { meshChannelCredentials } from "../../sdk/ts/src/core/tls/channel-credentials.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { SourceSigner } from "../../sdk/ts/src/core/tls/source-signer.js";
import { Invocation } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { InvokeRequest, InvokeResponse } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { AgentInstance } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { TunnelClient, isRefusedBeforeDelivery } from "../../sdk/ts/src/core/dataplane/index.js";
import type { Resolver } from "./resolver.js";

const invokeMethod = "/agentmesh.v1.AgentService/Invoke";
const invocationType = "agentmesh.v1.Invocation";

export interface ServerInvokerOptions {
  /** Capabilities whose calls stay signed one by one (non-repudiation: the receiving sidecar audits the signature). */
  signedCapabilities?: ReadonlySet<string>;
  /** The mesh's revocations: a sidecar showing a revoked certificate is refused at the key agreement and in its replies. */
  isRevoked?: (serial: string) => boolean;
}

/**
 * OrchestratorService.Invoke for clients without a sidecar (grpcurl, scripts):
 * the server resolves an instance and sends the call on a tunnel to the
 * instance's sidecar — the same path sidecars use, with the same frame
 * authentication: one signed key agreement per tunnel stream, then a MAC on every
 * frame each way (docs/signing.md §8); calls made before the agreement finished,
 * and calls of a `signedCapabilities` capability, are signed with the server's key. Instances
 * behind a tunnel known to be broken (reconnecting, or its sidecar not answering
 * pings) are skipped, for the first attempt and the retry alike.
 */
export class ServerInvoker {
  private readonly tunnels = new Map<string, TunnelClient>();
  private readonly credentials: ChannelCredentials;
  private readonly signer: SourceSigner | undefined;
  private readonly renewals: CertificateSource | undefined;
  private readonly keyAgreement: Omit<KeyAgreementOptions, "selfId"> | undefined;
  private callsInFlight = 0;
  private closing = false;

  constructor(
    private readonly resolver: Resolver,
    source: CertificateSource | undefined,
    trustDomain: string,
    clock: Clock,
    private readonly log: Logger,
    private readonly options: ServerInvokerOptions = {},
  ) {
    this.credentials = source ? meshChannelCredentials(source, trustDomain, "sidecar") : grpcCredentials.createInsecure();
    this.signer = source ? new SourceSigner(source, clock) : undefined;
    this.renewals = source;
    if (source && this.signer) {
      const verifier = new PeerVerifier(trustDomain, source.trustBundle, options.isRevoked);
      // The trust bundle may grow (a CA rotation): key shares are checked against the current one.
      source.onChange(() => verifier.setTrustBundle(source.trustBundle));
      const signer = this.signer;
      this.keyAgreement = {
        // The chain goes along: right after a renewal the tunnel's handshake may still show the previous certificate.
        signer: { sign: (payload, method, payloadType, audience) => signer.sign(payload, method, payloadType, audience, true) },
        verifier,
        signerKeys: new SignerKeys({ verifier, isRevoked: options.isRevoked }),
        clock,
        nonceCache: new MemoryNonceCache({ clock }),
        isRevoked: options.isRevoked,
      };
    }
  }

  /** Drops the tunnel streams to sidecars showing a certificate `isRevoked` names (a revocation just made); answers how many. */
  dropPeers(isRevoked: (serial: string) => boolean, reason: string): number {
    let dropped = 0;
    for (const tunnel of this.tunnels.values()) dropped += tunnel.dropPeers(isRevoked, reason);
    return dropped;
  }

  async invoke(request: InvokeRequest, caller: string, deadlineMs: number): Promise<InvokeResponse> {
    this.callsInFlight += 1;
    try {
      return await this.invokeWithRetry(request, caller, deadlineMs);
    } finally {
      this.callsInFlight -= 1;
      if (this.closing && this.callsInFlight === 0) this.closeTunnels();
    }
  }

  /**
   * Closes the tunnels once the calls in flight have finished: server shutdown
   * (DESIGN §6) lets in-flight calls complete while gRPC drains, and closing the
   * tunnels at once would fail them with UNAVAILABLE.
   */
  close(): void {
    this.closing = true;
    if (this.callsInFlight === 0) this.closeTunnels();
  }

  /**
   * Retries once elsewhere: a call the receiver refused before delivering it (the
   * END frame says so) whatever it is, an unavailable one only when idempotent.
   */
  private async invokeWithRetry(request: InvokeRequest, caller: string, deadlineMs: number): Promise<InvokeResponse> {
    const excluded = new Set<string>();
    let failure: unknown;
    for (let attempt = 0; ; attempt += 1) {
      let instance: AgentInstance;
      try {
        instance = this.pickReachable(request, excluded);
      } catch (error) {
        // Nowhere else to go: the caller hears why the first attempt failed.
        throw failure ?? error;
      }
      excluded.add(instance.instanceId);
      try {
        return await this.invokeOn(instance, request, caller, deadlineMs);
      } catch (error) {
        const code = (error as { code?: number }).code;
        const retryable = isRefusedBeforeDelivery(error) || (request.idempotent && code === status.UNAVAILABLE);
        if (!retryable || attempt > 0) throw error;
        failure = error;
      }
    }
  }

  /** Resolves, passing over instances whose sidecar's tunnel is known not to work now. */
  private pickReachable(request: InvokeRequest, excluded: Set<string>): AgentInstance {
    for (;;) {
      const instance = this.resolver.resolve({
        capability: request.capability,
        versionRange: request.versionRange,
        labelSelector: request.labelSelector,
        excludeInstanceIds: [...excluded],
        sessionKey: request.metadata[sessionKeyMetadata] ?? "",
      });
      const state = this.tunnels.get(instance.endpoint)?.state;
      if (state !== "backoff" && state !== "unresponsive") return instance;
      excluded.add(instance.instanceId);
    }
  }

  private closeTunnels(): void {
    for (const tunnel of this.tunnels.values()) tunnel.close();
    this.tunnels.clear();
  }

  private async invokeOn(instance: AgentInstance, request: InvokeRequest, caller: string, deadlineMs: number): Promise<InvokeResponse> {
    const version = instance.manifest?.capabilities.find((capability) => capability.name === request.capability)?.version ?? "";
    const invocation: Invocation = {
      callId: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      capability: request.capability,
      version,
      payload: Buffer.from(request.payload),
      contentType: request.contentType,
      caller,
      deadlineMs,
      metadata: request.metadata,
      traceparent: request.metadata.traceparent ?? "",
    };
    const reply = await this.tunnelTo(instance).unary(this.openFrame(instance, invocation), { deadlineMs: deadlineMs || undefined });
    return { payload: reply.payload, contentType: reply.contentType, instanceId: instance.instanceId, version };
  }

  private openFrame(instance: AgentInstance, invocation: Invocation) {
    const signer = this.signer;
    if (!signer) return { instanceId: instance.instanceId, invocation };
    // The payload bytes travel exactly as MACed or signed; the receiver never re-encodes them.
    const bytes = Invocation.encode(invocation).finish();
    const signed = this.options.signedCapabilities?.has(invocation.capability) === true;
    return {
      instanceId: instance.instanceId,
      // A signature carries the chain: right after a renewal the key is new while the
      // tunnel's handshake (until it has moved) still shows the previous certificate.
      authenticate: (frames: FrameSealer | undefined) =>
        frames && !signed ? frames.seal(bytes, invokeMethod, invocationType) : signer.sign(bytes, invokeMethod, invocationType, instance.spiffeId, true),
    };
  }

  private tunnelTo(instance: AgentInstance): TunnelClient {
    const address = instance.endpoint;
    let tunnel = this.tunnels.get(address);
    if (!tunnel) {
      const keyAgreement = this.keyAgreement;
      const selfId = this.renewals?.current?.spiffeId;
      const peerId = instance.spiffeId;
      tunnel = new TunnelClient({
        address,
        credentials: this.credentials,
        channelOptions: { "grpc.ssl_target_name_override": "agentmesh-sidecar" },
        renewals: this.renewals,
        logger: this.log,
        keyAgreement: keyAgreement && selfId ? () => startKeyAgreement({ ...keyAgreement, selfId }, peerId) : undefined,
      });
      tunnel.connect();
      this.tunnels.set(address, tunnel);
    }
    return tunnel;
  }
}
