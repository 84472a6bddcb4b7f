import {
  type MethodDefinition,
  Server,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  ServerInterceptingCall,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  status,
} from "@grpc/grpc-js";

/**
 * Stands in for a request that could not be decoded. grpc-js answers a throwing
 * deserializer with INTERNAL "Error deserializing request" before any interceptor
 * or handler runs; but a truncated message or an int64 beyond 2^53 is the caller's
 * fault. So deserializers never throw: they answer this, and the guard interceptor
 * turns it into INVALID_ARGUMENT before a handler can see it.
 */
export class UndecodableRequest {
  readonly undecodable = true;
}

const undecodable = new UndecodableRequest();

/** The same service with deserializers that answer UndecodableRequest instead of throwing. */
export function withGuardedDeserializers(service: ServiceDefinition): ServiceDefinition {
  const guarded: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service) as Array<[string, MethodDefinition<unknown, unknown>]>) {
    const decode = method.requestDeserialize;
    guarded[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch {
          return undecodable;
        }
      },
    };
  }
  return guarded;
}

/**
 * A grpc-js Server whose every service (ours, health, reflection: they all go
 * through addService) decodes through withGuardedDeserializers.
 */
export class GuardedServer extends Server {
  override addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
    super.addService(withGuardedDeserializers(service), implementation);
  }
}

export interface RequestGuardOptions {
  /** A stream's first message (or half-close) must arrive within this after its headers. */
  firstMessageTimeoutMs: number;
  onRefused?: (reason: "first_message_timeout" | "undecodable", method: string) => void;
}

export const undecodableMessage = "request could not be decoded: malformed protobuf, or a number out of range";

/**
 * Runs first on every call: ends streams whose first message does not come in time
 * (a Connect stream that never sends its Hello would otherwise hold its stream slot
 * and a place in the hub forever) and answers undecodable messages, first or later
 * in a stream, with INVALID_ARGUMENT.
 *
 * Unary calls get no such deadline: their one message may be megabytes on a slow
 * link or behind a busy connection's flow control (some of the fuzz test's requests
 * of up to 1 MB, 48 at a time on a loaded 2-core machine, took longer than 5 s to
 * arrive), and they are bounded by
 * the caller's deadline and the identity's in-flight limit anyway. Stream openers
 * (Connect's Hello, a Watch request) are small.
 */
export function createRequestGuard(options: RequestGuardOptions): ServerInterceptor {
  return (methodDescriptor, call: ServerInterceptingCallInterface) => {
    const method = methodDescriptor.path;
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const clear = () => {
      clearTimeout(timer);
      timer = undefined;
    };
    const refuse = (code: status, details: string, reason: "first_message_timeout" | "undecodable") => {
      clear();
      if (ended) return;
      ended = true;
      options.onRefused?.(reason, method);
      call.sendStatus({ code, details });
    };
    const streaming = methodDescriptor.requestStream || methodDescriptor.responseStream;
    return new ServerInterceptingCall(call, {
      start: (next) => {
        if (streaming) {
          timer = setTimeout(
            () => refuse(status.DEADLINE_EXCEEDED, `no request message within ${options.firstMessageTimeoutMs} ms`, "first_message_timeout"),
            options.firstMessageTimeoutMs,
          );
          timer.unref();
        }
        next({
          onReceiveMessage: (message, nextMessage) => {
            clear();
            if (message instanceof UndecodableRequest) {
              refuse(status.INVALID_ARGUMENT, undecodableMessage, "undecodable");
              return;
            }
            if (!ended) nextMessage(message);
          },
          onReceiveHalfClose: (nextHalfClose) => {
            clear();
            nextHalfClose();
          },
          onCancel: () => {
            ended = true;
            clear();
          },
        });
      },
      sendStatus: (statusObject, next) => {
        ended = true;
        clear();
        next(statusObject);
      },
    });
  };
}
