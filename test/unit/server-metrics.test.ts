import { describe, expect, it } from "vitest";
import { ServerMetrics } from "../../services/server/metrics.js";

describe("server metrics", () => {
  it("names the default process and Node.js metrics agentmesh_process_* and agentmesh_nodejs_*, prefixed once", async () => {
    const text = await new ServerMetrics(() => undefined).registry.metrics();
    const names = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1] as string));
    expect(names).toContain("agentmesh_process_cpu_user_seconds_total");
    expect(names).toContain("agentmesh_process_resident_memory_bytes");
    expect(names).toContain("agentmesh_nodejs_eventloop_lag_seconds");
    expect([...names].filter((name) => /^agentmesh_process_(process|nodejs)_/.test(name))).toEqual([]);
    expect([...names].filter((name) => !name.startsWith("agentmesh_"))).toEqual([]);
  });
});
