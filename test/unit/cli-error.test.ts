import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { CommanderError, InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { CliError, type FailureContext, reportFailure } from "../../cli/cli-error.js";
import type { RpcTarget } from "../../cli/error-translation.js";
import { normalizeServerAddress } from "../../cli/options.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { tempDir } from "../helpers/processes.js";

const systemError = (code: string, fields: Record<string, unknown> = {}) => Object.assign(new Error(`${code}: something`), { code, ...fields });
const serviceError = (code: status, details: string) => Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details });

const serverEndpoints: FailureContext = {
  kind: "listen",
  endpoints: [
    { hostFlag: "--host", portFlag: "--port", host: "127.0.0.1", port: 7420 },
    { hostFlag: "--http-host", portFlag: "--http-port", host: "127.0.0.1", port: 7421 },
  ],
};

const ctlTarget: RpcTarget = { address: "127.0.0.1:7420", plaintext: false, role: "ctl", credentials: "/home/op/.config/agentmesh/admin (the per-user default)", timeoutMs: 10_000 };

describe("CliError.from: one line and an exit code for anything a command throws", () => {
  it.each<[string, unknown, FailureContext | undefined, string, number]>([
    [
      "grpc-js bind failure (text only)",
      new Error("No address added out of total 1 resolved errors: [listen EADDRINUSE: address already in use 127.0.0.1:7420]"),
      serverEndpoints,
      "cannot listen on 127.0.0.1:7420 (--port): address already in use; stop the process using it or choose another --port",
      1,
    ],
    [
      "node http listen failure",
      systemError("EADDRINUSE", { syscall: "listen", address: "127.0.0.1", port: 7421 }),
      serverEndpoints,
      "cannot listen on 127.0.0.1:7421 (--http-port): address already in use; stop the process using it or choose another --http-port",
      1,
    ],
    [
      "a privileged port",
      systemError("EACCES", { syscall: "listen", port: 7420 }),
      serverEndpoints,
      "cannot listen on 127.0.0.1:7420 (--port): permission denied; ports below 1024 need privileges, choose another --port",
      1,
    ],
    ["a missing file", systemError("ENOENT", { path: "missing.yaml" }), { kind: "readFile", flag: "--alerts-config", path: "missing.yaml" }, "cannot read --alerts-config missing.yaml: no such file or directory", 1],
    ["a read-only mount", systemError("EROFS"), { kind: "directory", flag: "--data-dir", path: "/ro/data" }, "cannot use --data-dir /ro/data: read-only file system; choose a writable --data-dir", 1],
    [
      "connection refused",
      serviceError(status.UNAVAILABLE, "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7420. Resolution note: "),
      { kind: "rpc", target: ctlTarget },
      "no agentmesh server at 127.0.0.1:7420 (connection refused): start one with 'agentmesh server', or point --server at it",
      1,
    ],
    [
      "mTLS to a plaintext server",
      serviceError(status.UNAVAILABLE, "No connection established. Last error: Error: 80ACC129687F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: "),
      { kind: "rpc", target: ctlTarget },
      "the server at 127.0.0.1:7420 speaks plaintext (it runs with --insecure-dev): add --plaintext",
      1,
    ],
    [
      "plaintext to an mTLS server",
      serviceError(status.UNAVAILABLE, "No connection established. Last error: Failed to connect (2026-12-02T06:31:19.620Z). Resolution note: "),
      { kind: "rpc", target: { ...ctlTarget, plaintext: true, credentials: undefined, serverSpeaksTls: true } },
      "the server at 127.0.0.1:7420 requires mTLS: drop --plaintext (ctl then uses the admin credentials from 'agentmesh ctl init-admin')",
      1,
    ],
    [
      "credentials of another mesh",
      serviceError(status.UNAVAILABLE, "No connection established. Last error: Error: self-signed certificate in certificate chain. Resolution note: "),
      { kind: "rpc", target: ctlTarget },
      "the server at 127.0.0.1:7420 presents a certificate the CA of /home/op/.config/agentmesh/admin (the per-user default) did not sign: run 'agentmesh ctl init-admin' against this server's --data-dir",
      1,
    ],
    [
      "a sidecar dialing a plaintext server",
      serviceError(status.UNAVAILABLE, "No connection established. Last error: wrong version number"),
      { kind: "rpc", target: { ...ctlTarget, role: "sidecar" } },
      "the server at 127.0.0.1:7420 speaks plaintext (it runs with --insecure-dev): add --insecure-dev, or point --server at a server with mTLS",
      1,
    ],
    ["a refusal names the credentials", serviceError(status.PERMISSION_DENIED, "admin identity required"), { kind: "rpc", target: ctlTarget }, "admin identity required (PERMISSION_DENIED); credentials used: /home/op/.config/agentmesh/admin (the per-user default)", 1],
    ["a server answer", serviceError(status.NOT_FOUND, "instance not found"), { kind: "rpc", target: ctlTarget }, "instance not found (NOT_FOUND)", 1],
    ["a client deadline", serviceError(status.DEADLINE_EXCEEDED, "Deadline exceeded after 10.002s,LB pick: 0.001s"), { kind: "rpc", target: ctlTarget }, "the server at 127.0.0.1:7420 did not answer within 10 s (DEADLINE_EXCEEDED)", 1],
    ["a server deadline keeps its words", serviceError(status.DEADLINE_EXCEEDED, "sidecar host-a reported no outcome within 25000 ms"), { kind: "rpc", target: ctlTarget }, "sidecar host-a reported no outcome within 25000 ms (DEADLINE_EXCEEDED)", 1],
    ["a flag value the parser refused", new InvalidArgumentError("--port must be an integer 0-65535"), undefined, "--port must be an integer 0-65535", 2],
    ["a local MeshError is not the server's answer", new MeshError("invalidArgument", "file: no deployment found"), { kind: "rpc", target: ctlTarget }, "file: no deployment found", 1],
    ["an fs error out of context names its path", systemError("EACCES", { path: "/x/audit.log" }), undefined, "/x/audit.log: permission denied", 1],
    ["anything else: its first line, no stack", new Error("something broke\n    at somewhere (file.js:1:1)"), undefined, "something broke", 1],
  ])("%s", (_name, error, context, line, exitCode) => {
    const failure = CliError.from(error, context);
    expect({ line: failure.message, exitCode: failure.exitCode }).toEqual({ line, exitCode });
    expect(failure.cause).toBe(error);
  });

  it("names the file in the way of a data dir under a regular file", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "file"), "");
    const failure = CliError.from(systemError("ENOTDIR"), { kind: "directory", flag: "--data-dir", path: join(dir, "file", "data") });
    expect(failure.message).toBe(`cannot use --data-dir ${join(dir, "file", "data")}: ${join(dir, "file")} is a file, not a directory; choose a writable --data-dir`);
    expect(CliError.from(systemError("EEXIST"), { kind: "directory", flag: "--data-dir", path: join(dir, "file") }).message).toContain("it is a file, not a directory");
  });
});

describe("reportFailure", () => {
  const report = (error: unknown, debug = false) => {
    const written: string[] = [];
    const code = reportFailure(error, { debug, write: (text) => written.push(text) });
    return { code, text: written.join("") };
  };

  it("writes one line, and the stack of the cause only when debugging", () => {
    const cause = new Error("boom");
    expect(report(CliError.failed("cannot do it", cause))).toEqual({ code: 1, text: "error: cannot do it\n" });
    const debugged = report(CliError.failed("cannot do it", cause), true);
    expect(debugged.text.startsWith("error: cannot do it\nError: boom\n    at ")).toBe(true);
  });

  it("exits 2 for commander's usage errors without repeating what commander printed, 0 for help", () => {
    expect(report(new CommanderError(1, "commander.unknownOption", "error: unknown option '--bogus'"))).toEqual({ code: 2, text: "" });
    expect(report(new CommanderError(0, "commander.helpDisplayed", "(outputHelp)"))).toEqual({ code: 0, text: "" });
  });
});

describe("normalizeServerAddress", () => {
  it.each([
    ["127.0.0.1", "127.0.0.1:7420"],
    ["127.0.0.1:9000", "127.0.0.1:9000"],
    ["server", "server:7420"],
    ["server.example.com:443", "server.example.com:443"],
    ["::1", "[::1]:7420"],
    ["[::1]", "[::1]:7420"],
    ["[::1]:9000", "[::1]:9000"],
    ["dns:///server:7420", "dns:///server:7420"],
  ])("%s → %s", (given, normalized) => expect(normalizeServerAddress(given)).toBe(normalized));

  it.each([["127.0.0.1:0"], ["127.0.0.1:99999"], ["host:abc"], [""]])("refuses %j as a usage error", (given) => {
    expect(() => normalizeServerAddress(given)).toThrow(InvalidArgumentError);
  });
});
