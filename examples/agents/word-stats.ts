/**
 * Word statistics of a text, served with the TypeScript SDK over the sidecar's
 * Attach stream (no listening port). Capability: text.word-stats.
 */
import { serve } from "../../sdk/ts/src/agent/serve.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

export function wordStats(text: string): { words: number; lines: number; characters: number; top: Array<[string, number]> } {
  const words = text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map<string, number>();
  for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);
  const top = [...counts.entries()].sort((left, right) => right[1] - left[1] || (left[0] < right[0] ? -1 : 1)).slice(0, 5);
  return { words: words.length, lines: text === "" ? 0 : text.split("\n").length, characters: [...text].length, top };
}

const serving = serve({
  handlers: {
    "text.word-stats": (payload) => {
      if (payload.length > 1_000_000) throw new MeshError("invalidArgument", "text over 1 MB");
      return JSON.stringify({ ...wordStats(payload.toString("utf8")), instance: process.env.AGENTMESH_INSTANCE_ID });
    },
  },
  onError: (error) => process.stderr.write(`word-stats: ${String(error)}\n`),
});
process.once("SIGTERM", () => {
  serving.close();
  process.exit(0);
});
