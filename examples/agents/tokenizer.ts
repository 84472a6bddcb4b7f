/**
 * A streaming tokenizer: sends each token of the text as its own message, the
 * way an LLM agent streams output. Capability: text.tokenize (InvokeStream).
 */
import { serve } from "../../sdk/ts/src/agent/serve.js";

async function* tokens(text: string): AsyncIterable<string> {
  for (const token of text.match(/\w+|[^\s\w]/g) ?? []) yield token;
}

const serving = serve({
  handlers: { "text.tokenize": (payload) => JSON.stringify(payload.toString("utf8").match(/\w+|[^\s\w]/g) ?? []) },
  streamHandlers: { "text.tokenize": (payload) => tokens(payload.toString("utf8")) },
});
process.once("SIGTERM", () => {
  serving.close();
  process.exit(0);
});
