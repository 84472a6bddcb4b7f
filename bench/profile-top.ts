/**
 * The top entries of a V8 .cpuprofile (node --cpu-prof) by self time, with the
 * share of all samples: `node dist/bench/profile-top.js FILE [--top 25]`.
 * bench:dataplane --profile-dir D writes one profile per sidecar.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ options: { top: { type: "string", default: "25" } }, allowPositionals: true });
for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const selfById = new Map<number, number>();
  profile.samples.forEach((id, index) => selfById.set(id, (selfById.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const selfByFrame = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const micros = selfById.get(node.id) ?? 0;
    total += micros;
    const url = node.callFrame.url.replace(/^.*\/(node_modules|dist)\//, "$1/");
    const key = `${node.callFrame.functionName || "(anonymous)"} ${url}:${node.callFrame.lineNumber + 1}`;
    selfByFrame.set(key, (selfByFrame.get(key) ?? 0) + micros);
  }
  const idle = [...selfByFrame].filter(([key]) => key.startsWith("(idle)")).reduce((sum, [, micros]) => sum + micros, 0);
  const busy = total - idle;
  process.stdout.write(`\n${file}: ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s\n`);
  const top = [...selfByFrame].filter(([key]) => !key.startsWith("(idle)")).sort((left, right) => right[1] - left[1]).slice(0, Number(values.top));
  for (const [key, micros] of top) process.stdout.write(`${((micros / busy) * 100).toFixed(1).padStart(5)} %  ${key}\n`);
}
