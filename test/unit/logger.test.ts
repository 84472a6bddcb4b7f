import { describe, expect, it } from "vitest";
import { logSink } from "../helpers/log-sink.js";

// pino appends each child's bindings as they are: a child of a child that binds
// `component` again wrote the key twice in one JSON line.
describe("createLogger", () => {
  it("writes each key once when a child rebinds what its parent bound (later wins)", () => {
    const sink = logSink();
    const server = sink.log.child({ component: "server", serverId: "server-1" });
    server.child({ component: "lifecycle" }).child({ deployment: "echo" }).info({ instanceId: "i-1" }, "command sent");
    sink.log.child({ component: "server" }).child({ component: "registry" }).info("x");
    const raw = sink.raw;
    expect(sink.lines[0]).toMatchObject({ service: "agentmesh", component: "lifecycle", serverId: "server-1", deployment: "echo", instanceId: "i-1", msg: "command sent" });
    for (const line of raw) expect(line.match(/"component":/g)).toHaveLength(1);
    expect(raw).toHaveLength(2);
  });

  it("children keep their parent's level, and redaction still applies", () => {
    const sink = logSink();
    const parent = sink.log.child({ component: "sidecar" });
    parent.level = "warn";
    const child = parent.child({ component: "supervisor" });
    child.info("hidden");
    child.warn({ detail: { token: "secret" } }, "shown");
    expect(sink.lines.map((line) => line.msg)).toEqual(["shown"]);
    expect(sink.raw.join("")).not.toContain("secret");
  });
});
