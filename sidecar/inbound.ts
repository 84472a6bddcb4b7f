import type { Logger } from "pino";
import type { Clock } from "../sdk/ts/src/core/clock.js";
import { MeshError } from "../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { sha256, verifyEnvelope } from "../sdk/ts/src/core/signing.js";
import { frameFailure, frameMacAlg } from "../sdk/ts/src/core/frame-auth.js";
import type { SignedEnvelope } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { PeerVerifier } from "../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../sdk/ts/src/core/tls/signer-keys.js";
import { type CallFrame, Invocation } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { AuditSink } from "../sdk/ts/src/core/audit-log.js";
import type { AgentClientPool, AttachHub, InboundHandler, PeerInfo } from "../sdk/ts/src/core/dataplane/index.js";
import { decodeOpenInvocation, refusedBeforeDelivery } from "../sdk/ts/src/core/dataplane/index.js";
import type { DispatchOptions, DispatchOutcome } from "../sdk/ts/src/core/dataplane/dispatch.js";
import type { AllowPolicy } from "./allow-rules.js";
import { type LocalAgent, callFinished } from "./local-agents.js";
import type { RefusalTally } from "./refusal-tally.js";
import { type SidecarMetrics, frameAuthFailureReason } from "./observability/sidecar-metrics.js";
import type { CallTracer } from "./observability/call-tracer.js";

export const invokeMethod = "/agentmesh.v1.AgentService/Invoke";
export const invocationType = "agentmesh.v1.Invocation";

export interface InboundOptions {
  /** Our own SPIFFE ID: the audience every envelope must name. Absent in dev mode. */
  selfSpiffeId: string | undefined;
  verifier: PeerVerifier | undefined;
  nonceCache: NonceCache;
  policy: AllowPolicy;
  clock: Clock;
  audit: AuditSink;
  log: Logger;
  agents: ReadonlyMap<string, LocalAgent>;
  attach: AttachHub;
  agentClients: AgentClientPool;
  /** Every refused call (admission and limits), by reason. */
  onRejected: (reason: string) => void;
  /** How each unary call handed to an agent ended (error undefined: it answered); for outlier detection. */
  onOutcome?: (instanceId: string, error: unknown, deadlineMs: number) => void;
  /** Admission refusals (signature, certificate, policy): counted, logged at warn and reported upstream. */
  refusals: RefusalTally;
  /** Server-side call metrics (rpc.server.call.duration). */
  metrics?: SidecarMetrics;
  /** Server spans (tracing on); the agent then sees our span's traceparent. */
  tracer?: CallTracer;
}

/**
 * Admission of calls arriving over tunnels from other sidecars: the envelope must
 * be signed by the mTLS peer itself, for us, fresh and never seen; the caller must
 * be allowed; the agent's rate and in-flight limits must have room. Then the call
 * goes to the local agent over its Attach stream or its AgentService port.
 */
export function createInboundHandler(options: InboundOptions): InboundHandler {
  const signerKeys = options.verifier ? new SignerKeys({ verifier: options.verifier }) : undefined;
  return {
    verify: async (open: CallFrame, peer: PeerInfo): Promise<Invocation> => {
      try {
        if (!options.selfSpiffeId || !options.verifier || !signerKeys) return decodeOpenInvocation(open);
        const nowMs = options.clock.nowMs();
        const verified = options.verifier.verify(peer.authContext.sslPeerCertificate, nowMs);
        if (verified.spiffeId.kind !== "sidecar" && verified.spiffeId.kind !== "server") {
          throw new MeshError("denied", "only sidecars and servers may open tunnels");
        }
        const envelope = open.envelope;
        if (!envelope) throw new MeshError("unauthenticated", "signed envelope required");
        if (envelope.alg === frameMacAlg) {
          // The stream's key agreement proved the caller; the MAC and sequence prove this frame (docs/signing.md §8).
          if (!peer.frames) throw new MeshError("unauthenticated", frameFailure.noSession);
          if (peer.frames.peerId !== verified.spiffeId.uri) throw new MeshError("unauthenticated", frameFailure.signerMismatch);
          peer.frames.open(envelope, invokeMethod, invocationType);
        } else {
          // The sender signs with its current key; after a renewal its new certificate
          // travels in signer_chain while this tunnel's handshake still shows the old one.
          const connection = { spiffeId: verified.spiffeId.uri, serial: verified.serial, publicKey: verified.publicKey };
          await verifyEnvelope(envelope, {
            publicKey: signerKeys.keyFor(envelope, connection, nowMs),
            expectedSigner: verified.spiffeId.uri,
            expectedAudience: options.selfSpiffeId,
            expectedMethod: invokeMethod,
            expectedPayloadType: invocationType,
            clock: options.clock,
            nonceCache: options.nonceCache,
          });
          // On a stream with a frame key a signature is the sender's choice (a capability that
          // asks for non-repudiation): keep it where it can be shown later.
          if (peer.frames) recordSignature(options, envelope, open);
        }
        let invocation: Invocation;
        try {
          invocation = Invocation.decode(envelope.payload);
        } catch {
          throw new MeshError("invalidArgument", "envelope payload is not an Invocation");
        }
        // Who called is what the signature proves, not what the payload claims.
        invocation.caller = verified.spiffeId.uri;
        options.policy.check(invocation.caller, invocation.capability);
        return invocation;
      } catch (error) {
        const reason = error instanceof MeshError ? error.message : "verification failed";
        const authFailure = frameAuthFailureReason(reason);
        if (authFailure) options.metrics?.recordFrameAuthFailure(authFailure);
        options.onRejected(reason);
        options.refusals.record(reason);
        options.audit
          .append({ actor: peer.address, action: "invoke.rejected", target: open.instanceId, outcome: "denied", requestId: String(open.callId), details: { reason } })
          .catch((failure: unknown) => options.log.error({ err: failure }, "audit append failed"));
        throw error instanceof MeshError ? error : new MeshError("unauthenticated", "envelope verification failed");
      }
    },

    dispatch: (invocation: Invocation, instanceId: string, dispatchOptions: DispatchOptions): DispatchOutcome => {
      const metricsEnd = options.metrics?.begin("server", invocation.capability);
      const span = options.tracer?.start("server", invocation.capability, invocation.traceparent);
      if (!metricsEnd && !span) return deliver(invocation, instanceId, dispatchOptions);
      if (span) {
        invocation.traceparent = span.traceparent;
        if (invocation.metadata.traceparent !== undefined) invocation.metadata.traceparent = span.traceparent;
      }
      const end = (error?: unknown): void => {
        metricsEnd?.(invocation.version, error);
        span?.end(invocation.version, error, instanceId);
      };
      let outcome: DispatchOutcome;
      try {
        outcome = deliver(invocation, instanceId, dispatchOptions);
      } catch (error) {
        end(error);
        throw error;
      }
      if (outcome instanceof Promise) {
        outcome.then(() => end(), (error: unknown) => end(error));
        return outcome;
      }
      return ending(outcome, end);
    },
  };

  function deliver(invocation: Invocation, instanceId: string, dispatchOptions: DispatchOptions): DispatchOutcome {
      // Refusals before the call reaches the agent are marked so: the caller picked the
      // instance from a routing view a few ms old (its DRAINING or removal still on the
      // way), and may send the call elsewhere even when not idempotent.
      const agent = options.agents.get(instanceId);
      if (!agent) throw refusedBeforeDelivery(new MeshError("unavailable", "instance not on this sidecar"));
      if (agent.draining) throw refusedBeforeDelivery(new MeshError("unavailable", "instance draining"));
      if (invocation.payload.length > agent.maxMessageBytes) {
        options.onRejected("message size");
        throw new MeshError("overLimit", "limit exceeded: message size");
      }
      const refused = agent.limiter?.admit(instanceId);
      if (refused) {
        options.onRejected(refused);
        throw refusedBeforeDelivery(new MeshError("overLimit", `limit exceeded: ${refused === "rate" ? "invoke rate" : "in-flight calls"}`));
      }
      agent.inFlight += 1;
      const release = () => {
        agent.limiter?.release(instanceId);
        callFinished(agent);
      };
      const deadlineMs = invocation.deadlineMs;
      const callOptions = { deadlineMs: deadlineMs === 0 ? undefined : deadlineMs, signal: dispatchOptions.signal };
      if (dispatchOptions.streaming) {
        const source = options.attach.isAttached(instanceId)
          ? options.attach.dispatchStream(instanceId, invocation, callOptions)
          : options.agentClients.invokeStream(agent.agentAddr, invocation, callOptions);
        return releasing(source, release);
      }
      const reply = options.attach.isAttached(instanceId)
        ? options.attach.dispatch(instanceId, invocation, callOptions)
        : options.agentClients.invoke(agent.agentAddr, invocation, callOptions);
      return observed(reply.finally(release), (error) => options.onOutcome?.(instanceId, error, deadlineMs));
  }
}

async function* ending(source: AsyncIterable<Buffer>, onEnd: (error: unknown) => void): AsyncIterable<Buffer> {
  let failure: unknown;
  try {
    yield* source;
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    onEnd(failure);
  }
}

function recordSignature(options: InboundOptions, envelope: SignedEnvelope, open: CallFrame): void {
  options.audit
    .append({
      actor: envelope.signer,
      action: "invoke.signed",
      target: open.instanceId,
      outcome: "success",
      requestId: String(open.callId),
      details: { alg: envelope.alg, issuedAtMs: envelope.issuedAtMs, nonce: Buffer.from(envelope.nonce).toString("hex"), payloadSha256: sha256(envelope.payload).toString("hex"), signature: Buffer.from(envelope.signature).toString("hex") },
    })
    .catch((failure: unknown) => options.log.error({ err: failure }, "audit append failed"));
}

function observed<T>(reply: Promise<T>, onEnd: (error: unknown) => void): Promise<T> {
  reply.then(() => onEnd(undefined), onEnd);
  return reply;
}

async function* releasing(source: AsyncIterable<Buffer>, release: () => void): AsyncIterable<Buffer> {
  try {
    yield* source;
  } finally {
    release();
  }
}
