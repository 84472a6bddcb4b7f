import { describe, expect, it } from "vitest";
import { invocation, serverBanner, sidecarBanner } from "../../cli/banner.js";

describe("server banner", () => {
  const base = { grpcAddress: "127.0.0.1:7420", httpAddress: "127.0.0.1:7421", dataDir: ".agentmesh", dataDirIsDefault: true, defaultPort: true, cli: "agentmesh", env: { HOME: "/home/op" } };

  it("with the defaults, suggests the shortest commands", () => {
    expect(serverBanner({ ...base, mtls: true })).toContain("  admin     agentmesh ctl init-admin\n");
    expect(serverBanner({ ...base, mtls: true })).toContain("  next      agentmesh ctl agents\n");
  });

  it("in dev mode needs no credentials and says --plaintext", () => {
    const banner = serverBanner({ ...base, mtls: false });
    expect(banner.split("\n")[0]).toBe("agentmesh server is running (INSECURE DEV MODE: plaintext, no authentication, 127.0.0.1 only)");
    expect(banner).toContain("  admin     no credentials needed: pass --plaintext to ctl\n");
    expect(banner).toContain("  next      agentmesh ctl --plaintext agents\n");
  });

  it("names where init-admin writes: AGENTMESH_CREDENTIALS_DIR, else the per-user default", () => {
    expect(serverBanner({ ...base, mtls: true, env: { HOME: "/home/op", XDG_CONFIG_HOME: "/cfg" } })).toContain("writes admin credentials to /cfg/agentmesh/admin,");
    expect(serverBanner({ ...base, mtls: true, env: { AGENTMESH_CREDENTIALS_DIR: "/creds" } })).toContain("writes admin credentials to /creds,");
  });

  it.each([
    ["/usr/local/bin/agentmesh", "/anywhere", "agentmesh"],
    ["/repo/bin/agentmesh.js", "/repo", "node bin/agentmesh.js"],
    ["/repo/bin/agentmesh.js", "/elsewhere", "node /repo/bin/agentmesh.js"],
  ])("invocation of %s from %s is %s", (script, cwd, expected) => expect(invocation(script, cwd)).toBe(expected));
});

describe("sidecar banner", () => {
  const base = { spiffeId: "spiffe://agentmesh.local/sidecar/host-a", localAddress: "127.0.0.1:40002", dataDir: ".agentmesh-sidecar", agents: 1, capacity: 4 };

  it("shows the address it bound, and what peers dial when that differs", () => {
    const banner = sidecarBanner({ ...base, mtls: true, inboundBound: "0.0.0.0:40001", inboundAdvertised: "127.0.0.1:40001" });
    expect(banner.split("\n")).toEqual([
      "agentmesh sidecar is running (mTLS) as spiffe://agentmesh.local/sidecar/host-a",
      "  inbound   0.0.0.0:40001   (other sidecars dial 127.0.0.1:40001)",
      "  local     127.0.0.1:40002   (AGENTMESH_SIDECAR_ADDR for agents)",
      "  data dir  .agentmesh-sidecar   (certificate, audit log)",
      "  agents    1 from --manifest, capacity 4 for the orchestrator",
      "JSON logs follow on stdout. Ctrl-C stops the sidecar.",
      "",
    ]);
  });

  it("in dev mode says so and names no certificate", () => {
    const banner = sidecarBanner({ ...base, mtls: false, inboundBound: "127.0.0.1:40001", inboundAdvertised: "127.0.0.1:40001" });
    expect(banner.split("\n")[0]).toBe("agentmesh sidecar is running (INSECURE DEV MODE: plaintext, unsigned, 127.0.0.1 only)");
    expect(banner).toContain("  inbound   127.0.0.1:40001\n");
    expect(banner).toContain("(audit log)");
  });
});
