// The TypeScript SDK's public entry point (sdk/ts/src/index.ts, `agentmesh/sdk`):
// what it exports is what package.json points at, every export of ours carries a
// doc comment (typedoc reads them), and the user API comes before the integrator hooks.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import * as sdk from "../../sdk/ts/src/index.js";
import { repoRoot } from "../helpers/processes.js";

const entry = join(repoRoot, "sdk", "ts", "src", "index.ts");

function exportedSymbols(): Array<{ name: string; declarationFile: string; documentation: string }> {
  const program = ts.createProgram([entry], { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true, skipLibCheck: true });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const moduleSymbol = source ? checker.getSymbolAtLocation(source) : undefined;
  if (!moduleSymbol) throw new Error("index.ts did not compile to a module");
  return checker.getExportsOfModule(moduleSymbol).map((exported) => {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const declaration = symbol.declarations?.[0];
    return {
      name: exported.name,
      declarationFile: declaration?.getSourceFile().fileName ?? "",
      documentation: ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim(),
    };
  });
}

describe("agentmesh/sdk", () => {
  it("is what package.json exports", () => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { exports: Record<string, { types: string; default: string }>; bin: Record<string, string> };
    expect(manifest.exports["./sdk"]).toEqual({ types: "./dist/sdk/ts/src/index.d.ts", default: "./dist/sdk/ts/src/index.js" });
    expect(manifest.bin.agentmesh).toBe("bin/agentmesh.js");
  });

  it("offers the user API", () => {
    expect(typeof sdk.serve).toBe("function");
    expect(typeof sdk.MeshCaller).toBe("function");
    expect(new sdk.MeshError("notFound", "x").code).toBe(sdk.status.NOT_FOUND);
    expect(sdk.codeByKind.noHealthyInstance).toBe(sdk.status.UNAVAILABLE);
    expect(sdk.HealthState.HEALTH_STATE_READY).toBe(2);
  });

  it("documents every export it defines", () => {
    const ours = exportedSymbols().filter((symbol) => symbol.declarationFile.startsWith(join(repoRoot, "sdk", "ts", "src")));
    expect(ours.length).toBeGreaterThan(30);
    expect(ours.filter((symbol) => symbol.documentation === "").map((symbol) => symbol.name)).toEqual([]);
  });

  it("lists the user API before the integrator hooks", () => {
    const lines = readFileSync(entry, "utf8").split("\n");
    const lineOf = (name: string) => lines.findIndex((line) => line.startsWith("export") && new RegExp(`\\b${name}\\b`).test(line));
    for (const user of ["serve", "MeshCaller", "MeshError"]) {
      for (const hook of ["MeshClient", "MeshIdentity", "signEnvelope"]) {
        expect(lineOf(user)).toBeGreaterThanOrEqual(0);
        expect(lineOf(user), `${user} before ${hook}`).toBeLessThan(lineOf(hook));
      }
    }
  });
});
