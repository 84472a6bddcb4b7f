import type { Socket } from "node:net";
import { Server as TlsServer, type TLSSocket } from "node:tls";
import type { Server } from "@grpc/grpc-js";

export interface TlsHooksOptions {
  /** A connection must finish its handshake within this, counted from accept (not idle time). */
  handshakeTimeoutMs: number;
  /** A connection that ended before TLS completed: `timeout`, or the TLS error code. */
  onHandshakeFailure?: (reason: string, remoteAddress: string) => void;
}

/**
 * grpc-js keeps its listening servers private; this is the one place that reaches
 * them, and it fails loudly (at startup, in every test) if a grpc-js upgrade moves them.
 */
function tlsListenersOf(server: Server): TlsServer[] {
  const internal = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(internal instanceof Map)) throw new Error("grpc-js internals changed: its listeners are out of reach (services/server/tls-hooks.ts)");
  const listeners = [...internal.keys()].filter((listener): listener is TlsServer => listener instanceof TlsServer);
  if (listeners.length === 0) throw new Error("grpc-js internals changed: no TLS listener found (services/server/tls-hooks.ts)");
  return listeners;
}

const connectionKey = (socket: Pick<Socket, "remoteAddress" | "remotePort">) => `${socket.remoteAddress ?? ""}:${socket.remotePort ?? ""}`;

/**
 * Two things grpc-js cannot be told through its options, on every TLS listener of
 * a bound server:
 *
 * - An absolute handshake deadline. Node's own `handshakeTimeout` (120 s by default)
 *   is an idle timer, so a client that never speaks holds the socket for two minutes
 *   and one that drips a byte now and then holds it indefinitely.
 *
 * - Clearing OpenSSL's error queue after a handshake. The server asks for a client
 *   certificate without rejecting an unverifiable one (ADR 0001: the interceptor
 *   refuses the first call instead). When a leaf has no authority key identifier,
 *   OpenSSL picks the issuer by subject name alone; a foreign CA that copies the mesh
 *   CA's name is then checked against the mesh CA's key, the signature check fails
 *   and pushes an error that the accepting verify callback leaves on the thread's
 *   queue. Node's next read on the socket finds it and destroys the connection
 *   (close_notify, no gRPC status, nothing logged or audited; or a stall when the
 *   stale error is consumed elsewhere). Reading the peer certificate runs under
 *   Node's ClearErrorOnReturn, which empties the queue before any read, so such a
 *   peer is handled like any other foreign CA: UNAUTHENTICATED at its first call.
 */
export function installTlsHooks(server: Server, options: TlsHooksOptions): void {
  for (const listener of tlsListenersOf(server)) {
    const pending = new Map<string, NodeJS.Timeout>();
    const timedOut = new Set<string>();
    listener.prependListener("connection", (socket: Socket) => {
      const key = connectionKey(socket);
      const timer = setTimeout(() => {
        pending.delete(key);
        timedOut.add(key);
        options.onHandshakeFailure?.("timeout", socket.remoteAddress ?? "");
        socket.destroy();
      }, options.handshakeTimeoutMs);
      timer.unref();
      pending.set(key, timer);
      socket.once("close", () => {
        clearTimeout(pending.get(key));
        pending.delete(key);
        timedOut.delete(key);
      });
    });
    listener.prependListener("secureConnection", (socket: TLSSocket) => {
      socket.getPeerCertificate();
      const key = connectionKey(socket);
      clearTimeout(pending.get(key));
      pending.delete(key);
    });
    listener.on("tlsClientError", (error: NodeJS.ErrnoException, socket: TLSSocket) => {
      if (timedOut.has(connectionKey(socket))) return;
      options.onHandshakeFailure?.(error.code ?? "tls_error", socket.remoteAddress ?? "");
    });
  }
}
