import { CommanderError, InvalidArgumentError } from "commander";
import { DurationError } from "../sdk/ts/src/core/duration.js";
import { MeshError } from "../sdk/ts/src/core/mesh-error.js";
import {
  type ListenEndpoint,
  type RpcTarget,
  describeDirectoryFailure,
  describeFileFailure,
  describeListenFailure,
  describeRpcFailure,
  errnoOf,
  errnoPhrase,
  firstLine,
} from "./error-translation.js";

/**
 * The exit codes of every agentmesh command (README "Exit codes"):
 * 0 it worked; 1 the command was valid but what it asked for failed (a file, a
 * port, a directory, the server, the operation); 2 the command line itself is
 * wrong (unknown command or flag, missing argument, malformed or conflicting
 * values) and nothing was attempted.
 */
export const ExitCode = { ok: 0, failed: 1, usage: 2 } as const;
export type FailureExitCode = typeof ExitCode.failed | typeof ExitCode.usage;

/** What a command was doing when it failed: the converter names the flag and the value in its message. */
export type FailureContext =
  | { kind: "listen"; endpoints: readonly ListenEndpoint[] }
  | { kind: "readFile"; flag: string; path: string }
  | { kind: "directory"; flag: string; path: string }
  | { kind: "rpc"; target: RpcTarget };

/**
 * A failure as an operator sees it: one line and an exit code. `CliError.from`
 * is the one converter (connect-es's `ConnectError.from` is the model): anything
 * caught in `server`, `sidecar` or `ctl` goes through it; the translations of
 * errno values and gRPC statuses live in error-translation.ts.
 */
export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode: FailureExitCode,
    options: { cause?: unknown; reported?: boolean } = {},
  ) {
    super(message, { cause: options.cause });
    this.reported = options.reported ?? false;
  }

  /** True when the line was already written (commander prints its own usage errors). */
  readonly reported: boolean;

  static usage(message: string, cause?: unknown): CliError {
    return new CliError(message, ExitCode.usage, { cause });
  }

  static failed(message: string, cause?: unknown): CliError {
    return new CliError(message, ExitCode.failed, { cause });
  }

  static from(error: unknown, context?: FailureContext | readonly FailureContext[]): CliError {
    if (error instanceof CliError) return error;
    if (error instanceof CommanderError) {
      // Its message is already on stderr (commander prints before it throws).
      return new CliError(error.message.replace(/^error: /, ""), ExitCode.usage, { cause: error, reported: true });
    }
    // A flag or argument value the parser refused: the command line must change.
    if (error instanceof InvalidArgumentError || error instanceof DurationError) return CliError.usage(error.message, error);
    const contexts = context === undefined ? [] : Array.isArray(context) ? context : [context];
    const described = contexts.map((each) => describeInContext(error, each)).find((line) => line !== undefined);
    if (described !== undefined) return CliError.failed(described, error);
    if (error instanceof MeshError) return CliError.failed(error.message, error);
    const code = errnoOf(error);
    const path = (error as { path?: unknown }).path;
    if (code !== undefined && typeof path === "string") return CliError.failed(`${path}: ${errnoPhrase(code) ?? code}`, error);
    return CliError.failed(firstLine(error instanceof Error ? error.message : String(error)), error);
  }
}

function describeInContext(error: unknown, context: FailureContext): string | undefined {
  switch (context.kind) {
    case "listen":
      return describeListenFailure(error, context.endpoints);
    case "readFile":
      return describeFileFailure(error, context.flag, context.path);
    case "directory":
      return describeDirectoryFailure(error, context.flag, context.path);
    case "rpc": {
      // A MeshError here was raised locally (its code is a gRPC one too): it is not the server's answer.
      const serviceError = error as { code?: unknown; details?: unknown; message?: unknown };
      if (typeof serviceError.code !== "number" || error instanceof MeshError) return undefined;
      return describeRpcFailure(serviceError.code, String(serviceError.details ?? serviceError.message ?? ""), context.target);
    }
  }
}

/** Runs `operation`; whatever it throws becomes a CliError described in `context`. */
export async function inContext<Result>(context: FailureContext | readonly FailureContext[], operation: () => Promise<Result> | Result): Promise<Result> {
  try {
    return await operation();
  } catch (error) {
    throw CliError.from(error, context);
  }
}

/**
 * Writes the one line (and, when debugging, the stack of what caused it) and
 * answers the exit code. Help and --version end commander's way with 0.
 */
export function reportFailure(error: unknown, options: { debug: boolean; write: (text: string) => void }): number {
  if (error instanceof CommanderError && error.exitCode === 0) return ExitCode.ok;
  const failure = CliError.from(error);
  if (!failure.reported) options.write(`error: ${failure.message}\n`);
  if (options.debug) {
    const cause = failure.cause instanceof Error ? failure.cause : failure;
    options.write(`${cause.stack ?? String(cause)}\n`);
  }
  return failure.exitCode;
}
