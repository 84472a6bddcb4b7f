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
  /** The first message (or half-close) must arrive within this after the headers. */
  firstMessageTimeoutMs: number;
  onRefused?: (reason: "first_message_timeout" | "undecodable", method: string) => void;
}

export const undecodableMessage = "request could not be decoded: malformed protobuf, or a number out of range";

/**
 * Runs first on every call: ends calls whose first message does not come in time
 * (a Connect stream that never sends its Hello would otherwise hold a stream slot
 * forever; so would a unary call whose body never arrives) and answers undecodable
 * messages, first or later in a stream, with INVALID_ARGUMENT.
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
    return new ServerInterceptingCall(call, {
      start: (next) => {
        timer = setTimeout(
          () => refuse(status.DEADLINE_EXCEEDED, `no request message within ${options.firstMessageTimeoutMs} ms`, "first_message_timeout"),
          options.firstMessageTimeoutMs,
        );
        timer.unref();
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
