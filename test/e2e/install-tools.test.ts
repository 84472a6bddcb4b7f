// scripts/install-tools.sh (npm test's pretest) on a machine without Go: the tools on
// PATH are used as they are; a missing one fails with one line saying what to do.
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot, tempDir } from "../helpers/processes.js";

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A PATH with only what the script needs besides the tools, so `go` is surely absent. */
function basePath(): string {
  const dir = join(tempDir("agentmesh-path-"), "bin");
  mkdirSync(dir);
  for (const tool of ["mkdir", "dirname", "awk"]) {
    const found = ["/usr/bin", "/bin"].map((system) => join(system, tool)).find((candidate) => existsSync(candidate));
    if (found === undefined) throw new Error(`${tool} not found in /usr/bin or /bin`);
    symlinkSync(found, join(dir, tool));
  }
  return dir;
}

function stubTools(dir: string, names: string[]): void {
  mkdirSync(dir, { recursive: true });
  for (const name of names) {
    writeFileSync(join(dir, name), "#!/bin/sh\necho stub\n");
    chmodSync(join(dir, name), 0o755);
  }
}

function runScript(path: string, toolsBin: string, args: string[] = []): Promise<ScriptRun> {
  return new Promise((resolve) => {
    execFile("/bin/bash", [join(repoRoot, "scripts", "install-tools.sh"), ...args], { env: { PATH: path, AGENTMESH_TOOLS_BIN: toolsBin } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe("scripts/install-tools.sh without Go", () => {
  it("uses grpcurl and grpc-health-probe from PATH", async () => {
    const stubs = join(tempDir(), "stubs");
    stubTools(stubs, ["grpcurl", "grpc-health-probe"]);
    const result = await runScript(`${stubs}:${basePath()}`, join(tempDir(), "tools"));
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
    expect(result.stdout).toBe(`install-tools: grpcurl: ${stubs}/grpcurl (on PATH)\ninstall-tools: grpc-health-probe: ${stubs}/grpc-health-probe (on PATH)\n`);
  });

  it("says how to put .tools/bin on PATH when the tools are there", async () => {
    const toolsBin = join(tempDir(), "tools");
    stubTools(toolsBin, ["grpcurl", "grpc-health-probe"]);
    const result = await runScript(basePath(), toolsBin);
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split("\n").at(-1)).toBe(`install-tools: to run them yourself: export PATH="${toolsBin}:$PATH"`);
  });

  it("fails in one line naming the tool and Go when a tool is neither on PATH nor installable", async () => {
    const stubs = join(tempDir(), "stubs");
    stubTools(stubs, ["grpc-health-probe"]);
    const toolsBin = join(tempDir(), "tools");
    const result = await runScript(`${stubs}:${basePath()}`, toolsBin);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`install-tools: grpcurl is not on PATH or in ${toolsBin}, and installing it needs Go (https://go.dev/dl/); or put grpcurl on PATH\n`);
  });

  it("--deploy-checks uses what is already there: kubeconform on PATH, the built schemas and compose-config", async () => {
    const stubs = join(tempDir(), "stubs");
    stubTools(stubs, ["kubeconform"]);
    const tools = tempDir();
    const toolsBin = join(tools, "bin");
    stubTools(toolsBin, ["compose-config"]);
    const schemas = join(tools, "kubernetes-schemas", "v1.27.0");
    mkdirSync(schemas, { recursive: true });
    writeFileSync(join(schemas, ".complete"), "");
    const result = await runScript(`${stubs}:${basePath()}`, toolsBin, ["--deploy-checks"]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
    expect(result.stdout.split("\n").slice(0, 3)).toEqual([
      `install-tools: kubeconform: ${stubs}/kubeconform (on PATH)`,
      `install-tools: kubernetes schemas: ${schemas}`,
      `install-tools: compose-config: ${toolsBin}/compose-config`,
    ]);
  });

  it("--deploy-checks fails in one line when the schemas must be built and Go is missing", async () => {
    const stubs = join(tempDir(), "stubs");
    stubTools(stubs, ["kubeconform"]);
    const toolsBin = join(tempDir(), "bin");
    const kubeOpenapiModule = /^KUBE_OPENAPI_MODULE=(\S+)$/m.exec(readFileSync(join(repoRoot, "scripts", "install-tools.sh"), "utf8"))?.[1];
    const result = await runScript(`${stubs}:${basePath()}`, toolsBin, ["--deploy-checks"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`install-tools: the Kubernetes schemas are not in ${join(dirname(toolsBin), "kubernetes-schemas", "v1.27.0")}, and building them needs Go (https://go.dev/dl/) to fetch the ${kubeOpenapiModule} module\n`);
  });
});
