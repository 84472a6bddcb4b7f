// tsc compiles only TypeScript; the dashboard's page, ES module and style sheet
// are served from beside the compiled module, so the build copies them there.
import { cpSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = join(root, "services", "dashboard", "assets");
cpSync(source, join(root, "dist", "services", "dashboard", "assets"), {
  recursive: true,
  filter: (path) => !path.endsWith("tsconfig.json"),
});
