import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../helpers/processes.js";

// STYLE.md: sidecar/ and sdk/ts/ never import from services/; no import cycles.

function sourceFiles(directory: string): string[] {
  return readdirSync(directory).flatMap((name) => {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) return name === "gen" ? [] : sourceFiles(path);
    return path.endsWith(".ts") ? [path] : [];
  });
}

/** Relative imports of a file, resolved to .ts paths (type-only imports included: they still couple modules). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/^(?:import|export)[^;]*?from\s+"(\.[^"]+)\.js";/gms)].map((match) => resolve(dirname(file), `${match[1]}.ts`));
}

const roots = ["cli", "services", "sidecar", "sdk/ts/src"].map((root) => join(repoRoot, root));
const files = roots.flatMap(sourceFiles);
const graph = new Map(files.map((file) => [file, importsOf(file)]));

describe("architecture", () => {
  it("sees the import graph it checks", () => {
    const edges = [...graph.values()].reduce((count, targets) => count + targets.length, 0);
    expect(files.length).toBeGreaterThan(80);
    expect(edges).toBeGreaterThan(300);
    expect(graph.get(join(repoRoot, "sidecar/sidecar.ts"))).toContain(join(repoRoot, "sidecar/inbound.ts"));
  });

  it("keeps sidecar/ and sdk/ts/ free of imports from services/ and cli/", () => {
    const offenders = files
      .filter((file) => file.startsWith(join(repoRoot, "sidecar")) || file.startsWith(join(repoRoot, "sdk")))
      .flatMap((file) => (graph.get(file) ?? []).filter((target) => target.startsWith(join(repoRoot, "services")) || target.startsWith(join(repoRoot, "cli"))).map((target) => `${relative(repoRoot, file)} → ${relative(repoRoot, target)}`));
    expect(offenders).toEqual([]);
  });

  it("has no import cycles", () => {
    const cycles: string[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === "done") return;
      if (state.get(file) === "visiting") {
        cycles.push([...path.slice(path.indexOf(file)), file].map((entry) => relative(repoRoot, entry)).join(" → "));
        return;
      }
      state.set(file, "visiting");
      for (const target of graph.get(file) ?? []) if (graph.has(target)) visit(target, [...path, file]);
      state.set(file, "done");
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });
});
