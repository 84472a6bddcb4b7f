import { X509Certificate } from "node:crypto";
import type { webcrypto } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import {
  formatSpiffeId,
  parseSpiffeId,
  peerSpiffeId,
  spiffeIdsFromCertificate,
  tryParseSpiffeId,
} from "../../sdk/ts/src/core/spiffe-id.js";
import { subtle, x509 } from "../../sdk/ts/src/core/x509-setup.js";

describe("parseSpiffeId", () => {
  it.each([
    ["spiffe://mesh.local/agent/summarizer", "mesh.local", "agent", "summarizer"],
    ["spiffe://mesh.local/sidecar/host-a", "mesh.local", "sidecar", "host-a"],
    ["spiffe://prod-1.example_org/server/s1", "prod-1.example_org", "server", "s1"],
    ["spiffe://mesh.local/admin/Alice.B_2", "mesh.local", "admin", "Alice.B_2"],
    ["spiffe://a/agent/...x", "a", "agent", "...x"],
  ])("accepts %s", (uri, trustDomain, kind, name) => {
    expect(parseSpiffeId(uri)).toEqual({ trustDomain, kind, name, uri });
  });

  it.each([
    ["", "scheme must be spiffe://"],
    ["https://mesh.local/agent/a", "scheme must be spiffe://"],
    ["SPIFFE://mesh.local/agent/a", "scheme must be spiffe://"],
    ["spiffe://Mesh.local/agent/a", "trust domain has characters outside [a-z0-9._-]"],
    ["spiffe:///agent/a", "empty trust domain"],
    ["spiffe://mesh.local:8443/agent/a", "port not allowed"],
    ["spiffe://user@mesh.local/agent/a", "userinfo not allowed"],
    ["spiffe://mesh.local/agent/a?x=1", "query not allowed"],
    ["spiffe://mesh.local/agent/a#frag", "fragment not allowed"],
    ["spiffe://mesh.local", "path must be /<kind>/<name>"],
    ["spiffe://mesh.local/", "empty path segment"],
    ["spiffe://mesh.local/agent", "path must be /<kind>/<name>"],
    ["spiffe://mesh.local/agent/", "empty path segment"],
    ["spiffe://mesh.local/agent//a", "empty path segment"],
    ["spiffe://mesh.local/agent/a/b", "path must be /<kind>/<name>"],
    ["spiffe://mesh.local/agent/.", "path segment is . or .."],
    ["spiffe://mesh.local/agent/..", "path segment is . or .."],
    ["spiffe://mesh.local/agent/a%20b", "path segment has characters outside [A-Za-z0-9._-]"],
    ["spiffe://mesh.local/agent/a b", "path segment has characters outside [A-Za-z0-9._-]"],
    ["spiffe://mesh.local/robot/a", "kind must be agent, sidecar, server or admin"],
    ["spiffe://mesh.local/Agent/a", "kind must be agent, sidecar, server or admin"],
    [`spiffe://${"a".repeat(256)}/agent/a`, "trust domain too long"],
    [`spiffe://mesh.local/agent/${"a".repeat(2048)}`, "longer than 2048 bytes"],
  ])("rejects %j (%s)", (uri, reason) => {
    expect(() => parseSpiffeId(uri)).toThrow(new MeshError("invalidArgument", `invalid SPIFFE ID: ${reason}`));
    expect(tryParseSpiffeId(uri)).toBeUndefined();
  });
});

describe("formatSpiffeId", () => {
  it("round-trips with parse", () => {
    const uri = formatSpiffeId({ trustDomain: "mesh.local", kind: "sidecar", name: "host-a" });
    expect(uri).toBe("spiffe://mesh.local/sidecar/host-a");
    expect(parseSpiffeId(uri).uri).toBe(uri);
  });

  it.each([
    [{ trustDomain: "Mesh", kind: "agent", name: "a" }],
    [{ trustDomain: "mesh", kind: "robot", name: "a" }],
    [{ trustDomain: "mesh", kind: "agent", name: "a/b" }],
    [{ trustDomain: "mesh", kind: "agent", name: ".." }],
  ] as const)("refuses %j", (parts) => {
    expect(() => formatSpiffeId(parts as Parameters<typeof formatSpiffeId>[0])).toThrow(MeshError);
  });
});

describe("SPIFFE IDs in certificates", () => {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  let keys: webcrypto.CryptoKeyPair;

  beforeAll(async () => {
    keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  });

  async function certificateWith(names: Array<{ type: "url" | "dns" | "ip"; value: string }>): Promise<X509Certificate> {
    const extensions = names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [];
    const cert = await x509.X509CertificateGenerator.createSelfSigned({ name: "CN=test", keys, signingAlgorithm: algorithm, extensions });
    return new X509Certificate(cert.toString("pem"));
  }

  it("reads URI SANs and ignores DNS and IP SANs", async () => {
    const cert = await certificateWith([
      { type: "dns", value: "localhost" },
      { type: "url", value: "spiffe://mesh.local/agent/a" },
      { type: "ip", value: "127.0.0.1" },
    ]);
    expect(spiffeIdsFromCertificate(cert)).toEqual(["spiffe://mesh.local/agent/a"]);
    expect(peerSpiffeId(cert, "mesh.local")).toMatchObject({ kind: "agent", name: "a", uri: "spiffe://mesh.local/agent/a" });
  });

  it("does not let a URI holding a delimiter smuggle a second identity", async () => {
    const cert = await certificateWith([{ type: "url", value: "spiffe://evil/x, URI:spiffe://mesh.local/admin/root" }]);
    expect(spiffeIdsFromCertificate(cert)).toEqual(["spiffe://evil/x, URI:spiffe://mesh.local/admin/root"]);
    expect(() => peerSpiffeId(cert, "mesh.local")).toThrow(new MeshError("unauthenticated", "peer certificate has no valid SPIFFE ID"));
  });

  it.each([
    ["no SAN at all", [], "peer certificate has no SPIFFE ID"],
    ["only a DNS SAN", [{ type: "dns", value: "localhost" }], "peer certificate has no SPIFFE ID"],
    [
      "two URI SANs",
      [
        { type: "url", value: "spiffe://mesh.local/agent/a" },
        { type: "url", value: "spiffe://mesh.local/admin/b" },
      ],
      "peer certificate has several URI SANs",
    ],
    ["another trust domain", [{ type: "url", value: "spiffe://other.mesh/agent/a" }], "peer certificate is from another trust domain"],
    ["a non-SPIFFE URI", [{ type: "url", value: "https://mesh.local/agent/a" }], "peer certificate has no valid SPIFFE ID"],
    ["an unknown kind", [{ type: "url", value: "spiffe://mesh.local/robot/a" }], "peer certificate has no valid SPIFFE ID"],
  ] as const)("peerSpiffeId refuses %s", async (_label, names, message) => {
    const cert = await certificateWith([...names]);
    expect(() => peerSpiffeId(cert, "mesh.local")).toThrow(new MeshError("unauthenticated", message));
  });
});
