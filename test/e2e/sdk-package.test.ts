// The package as a user gets it: `npm pack`, installed into an empty project with
// production dependencies only (from the npm cache), then its `agentmesh`
// binary runs a server and a sidecar, and an agent and a caller written against
// the public entry point (`agentmesh/sdk`) talk through them. Nothing here reaches
// into the repository's sources: only what the tarball ships is used (and, for the
// types check, the repository's TypeScript compiler and @types/node).
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stopProcess } from "../helpers/mesh-cluster.js";
import { type ManagedProcess, repoRoot, run, startProcess, tempDir } from "../helpers/processes.js";

const INSTALL_TIMEOUT_MS = 150_000;
let workDir: string;
let project: string;
let tarball: string;
const processes: ManagedProcess[] = [];

const npm = (args: string[], cwd: string, timeoutMs = INSTALL_TIMEOUT_MS) =>
  run("bash", ["-c", `cd "${cwd}" && npm ${args.map((arg) => `'${arg}'`).join(" ")}`], timeoutMs);
const installed = (...parts: string[]) => join(project, "node_modules", "agentmesh", ...parts);
const bin = () => join(project, "node_modules", ".bin", "agentmesh");

beforeAll(async () => {
  workDir = tempDir("agentmesh-package-");
  project = join(workDir, "project");
  const packed = await npm(["pack", "--pack-destination", workDir, "--json"], repoRoot, 60_000);
  expect({ code: packed.code, stderr: packed.code === 0 ? "" : packed.stderr }).toEqual({ code: 0, stderr: "" });
  const [packedFile] = JSON.parse(packed.stdout) as Array<{ filename: string }>;
  tarball = join(workDir, packedFile?.filename ?? "missing.tgz");
  await run("mkdir", ["-p", project]);
  writeFileSync(join(project, "package.json"), `${JSON.stringify({ name: "scratch-agent", private: true, type: "module" }, null, 2)}\n`);
  // Production dependencies only, what `npm install agentmesh` gives a user; from the local
  // npm cache (filled by `npm ci`), asking the registry only for what it lacks.
  const install = await npm(["install", "--omit=dev", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", tarball], project);
  expect({ code: install.code, stderr: install.code === 0 ? "" : install.stderr }).toEqual({ code: 0, stderr: "" });
  await provideNativeBuilds();
}, INSTALL_TIMEOUT_MS + 60_000);

/**
 * Install scripts were skipped: better-sqlite3's would compile SQLite from source
 * (minutes on a busy 2-core machine) when its prebuilt binary cannot be downloaded.
 * The repository's `npm ci` already built the same version for this Node, so its
 * binary goes where the install script would have put one; another version is
 * rebuilt for real.
 */
async function provideNativeBuilds(): Promise<void> {
  for (const name of ["better-sqlite3"]) {
    const ours = join(repoRoot, "node_modules", name);
    const theirs = join(project, "node_modules", name);
    const version = (directory: string) => (JSON.parse(readFileSync(join(directory, "package.json"), "utf8")) as { version: string }).version;
    if (existsSync(join(ours, "build", "Release")) && version(ours) === version(theirs)) {
      mkdirSync(join(theirs, "build", "Release"), { recursive: true });
      for (const file of readdirSync(join(ours, "build", "Release")).filter((entry) => entry.endsWith(".node"))) {
        copyFileSync(join(ours, "build", "Release", file), join(theirs, "build", "Release", file));
      }
      continue;
    }
    const rebuilt = await npm(["rebuild", name], project, 600_000);
    expect({ code: rebuilt.code, stderr: rebuilt.code === 0 ? "" : rebuilt.stderr }).toEqual({ code: 0, stderr: "" });
  }
}

afterAll(async () => {
  for (const managed of processes.splice(0).reverse()) await stopProcess(managed);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe("the npm package", () => {
  it("ships the built code, the protos and the binary, and nothing it does not need", () => {
    expect(statSync(tarball).size).toBeLessThan(1024 * 1024);
    for (const path of ["bin/agentmesh.js", "dist/cli/main.js", "dist/sdk/ts/src/index.js", "dist/sdk/ts/src/index.d.ts", "proto/agentmesh/v1/agent.proto"]) {
      expect(existsSync(installed(path)), path).toBe(true);
    }
    expect(readdirSync(installed("dist")).sort()).toEqual(["cli", "sdk", "services", "sidecar"]);
    expect(existsSync(installed("test"))).toBe(false);
    // Runtime imports are real dependencies, not a dev dependency's.
    expect(existsSync(join(project, "node_modules", "@bufbuild", "protobuf"))).toBe(true);
    expect(existsSync(join(project, "node_modules", "typescript"))).toBe(false);
  });

  it("loads its native dependency", async () => {
    // Resolved from inside the installed package, as its own code resolves it.
    const script = [
      'import { createRequire } from "node:module";',
      `const require = createRequire(${JSON.stringify(installed("package.json"))});`,
      'const Database = require("better-sqlite3");',
      'console.log(require.resolve("better-sqlite3"), new Database(":memory:").prepare("select 1 as one").get().one);',
    ].join(" ");
    const loaded = await run(process.execPath, ["--input-type=module", "-e", script], 20_000);
    expect({ code: loaded.code, stdout: loaded.stdout.trim(), stderr: loaded.stderr }).toEqual({
      code: 0,
      stdout: `${join(project, "node_modules", "better-sqlite3", "lib", "index.js")} 1`,
      stderr: "",
    });
  });

  it("runs `agentmesh --help` and a server on port 0", { timeout: 60_000 }, async () => {
    const help = await run(bin(), ["--help"]);
    expect(help.code).toBe(0);
    for (const command of ["server", "sidecar", "ctl"]) expect(help.stdout).toContain(command);

    const server = startProcess(bin(), ["server", "--insecure-dev", "--port", "0", "--http-port", "0", "--data-dir", join(workDir, "server")]);
    processes.push(server);
    const listening = await server.waitForLog((line) => line.msg === "listening", 30_000);
    expect(String(listening.grpcAddress)).toMatch(/^127\.0\.0\.1:\d+$/);

    // An agent and a caller that import only the public entry point, beside a sidecar from the same package.
    writeFileSync(
      join(project, "agent.mjs"),
      [
        'import { serve } from "agentmesh/sdk";',
        'serve({ handlers: { "pkg.echo": (payload) => `echo: ${payload.toString()}` } });',
        "",
      ].join("\n"),
    );
    writeFileSync(
      join(project, "caller.mjs"),
      [
        'import { MeshCaller, MeshError, status } from "agentmesh/sdk";',
        "const caller = new MeshCaller(process.argv[2]);",
        'const reply = await caller.invoke("pkg.echo", "hello", { timeoutMs: 10000 });',
        'const missing = await caller.invoke("pkg.missing", "", { timeoutMs: 10000 }).catch((error) => error);',
        "console.log(JSON.stringify({ payload: reply.payload.toString(), version: reply.version, missingCode: missing.code, isMeshError: missing instanceof MeshError, unavailable: status.UNAVAILABLE }));",
        "caller.close();",
        "",
      ].join("\n"),
    );
    const manifest = join(project, "echo.yaml");
    writeFileSync(
      manifest,
      [
        "kind: Deployment",
        "name: pkg-echo",
        "version: 1.0.0",
        "replicas: 1",
        "capabilities:",
        "  - pkg.echo@1.2.3",
        "process:",
        "  command: node",
        `  args: [${JSON.stringify(join(project, "agent.mjs"))}]`,
        "health:",
        "  heartbeatInterval: 200ms",
        "",
      ].join("\n"),
    );
    const sidecar = startProcess(bin(), [
      "sidecar",
      "--insecure-dev",
      "--server",
      String(listening.grpcAddress),
      "--host",
      "pkg-host",
      "--inbound-port",
      "0",
      "--local-port",
      "0",
      "--http-port",
      "0",
      "--manifest",
      manifest,
      "--data-dir",
      join(workDir, "sidecar"),
    ]);
    processes.push(sidecar);
    const sidecarListening = await sidecar.waitForLog((line) => line.msg === "sidecar listening", 30_000);
    await sidecar.waitForLog((line) => line.msg === "agent process state changed" && line.state === "ready", 30_000);

    const called = await run(process.execPath, [join(project, "caller.mjs"), String(sidecarListening.localAddress)], 30_000);
    expect({ code: called.code, stderr: called.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(called.stdout)).toEqual({ payload: "echo: hello", version: "1.2.3", missingCode: 14, isMeshError: true, unavailable: 14 });
  });

  it("gives TypeScript users the types of its entry point", { timeout: 90_000 }, async () => {
    writeFileSync(
      join(project, "typed.ts"),
      [
        'import { type InvokeResult, MeshCaller, MeshError, type ServeOptions, serve } from "agentmesh/sdk";',
        'const options: ServeOptions = { handlers: { "pkg.echo": (payload) => payload.toString() } };',
        "serve(options);",
        'const reply: Promise<InvokeResult> = new MeshCaller("127.0.0.1:1").invoke("pkg.echo", "x");',
        'const error: MeshError = new MeshError("notFound", "no such thing");',
        "export { reply, error };",
        "",
      ].join("\n"),
    );
    // A wrong use must fail too, or the check proves nothing.
    writeFileSync(join(project, "wrong.ts"), 'import { serve } from "agentmesh/sdk";\nserve({ handlers: 42 });\n');
    const compile = async (file: string) => {
      writeFileSync(
        join(project, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            module: "NodeNext",
            moduleResolution: "NodeNext",
            target: "ES2022",
            strict: true,
            noEmit: true,
            skipLibCheck: true,
            types: ["node"],
            typeRoots: [join(repoRoot, "node_modules", "@types")],
          },
          files: [file],
        }),
      );
      return run(process.execPath, [join(repoRoot, "node_modules", "typescript", "bin", "tsc"), "-p", project, "--listFiles"], 60_000);
    };
    const typed = await compile("typed.ts");
    expect(typed.code, typed.stdout.split("\n").filter((line) => line.includes("error")).join("\n")).toBe(0);
    expect(typed.stdout).toContain(installed("dist", "sdk", "ts", "src", "index.d.ts"));
    const wrong = await compile("wrong.ts");
    expect(wrong.code).not.toBe(0);
    expect(wrong.stdout).toContain("wrong.ts(2,");
  });
});
