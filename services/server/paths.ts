import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The repository (or installed package) root: the first ancestor holding
 * `proto/agentmesh`. Source runs from services/…, built code from dist/services/….
 */
export function packageRoot(): string {
  let directory = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(directory, "proto", "agentmesh"))) return directory;
    const parent = dirname(directory);
    if (parent === directory) throw new Error("agentmesh package root not found");
    directory = parent;
  }
}
