import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { compareVersionsDescending, isValidVersion, parseVersionRange } from "../../sdk/ts/src/core/semver-match.js";

describe("parseVersionRange", () => {
  it.each([
    ["^2.1.0", "2.5.3", true],
    ["^2.1.0", "3.0.0", false],
    ["^2.1.0", "2.0.9", false],
    [">=1.4 <3", "1.4.0", true],
    [">=1.4 <3", "2.9.9", true],
    [">=1.4 <3", "3.0.0", false],
    ["2.x", "2.7.1", true],
    ["2.x", "1.9.9", false],
    ["~1.4", "1.4.9", true],
    ["~1.4", "1.5.0", false],
    ["", "0.0.1", true],
    ["*", "9.9.9", true],
    ["^2.1.0", "2.2.0-rc.1", false],
    ["^2.2.0-rc.0", "2.2.0-rc.1", true],
    ["1.2.3 || 2.x", "2.0.0", true],
  ])("%s satisfied by %s is %s", (range, version, expected) => {
    expect(parseVersionRange(range).satisfiedBy(version)).toBe(expected);
  });

  it.each([["^^1"], ["not a range"], [">=1.0.0 <"], ["1.2.3 - "], ["x".repeat(300)]])("rejects %s as INVALID_ARGUMENT naming the field", (range) => {
    const attempt = () => parseVersionRange(range, "version_range");
    expect(attempt).toThrow(MeshError);
    try {
      attempt();
    } catch (error) {
      expect((error as MeshError).kind).toBe("invalidArgument");
      expect((error as MeshError).message).toMatch(/^version_range: /);
    }
  });
});

describe("versions", () => {
  it.each([["1.0.0", true], ["1.0.0-rc.1+build.5", true], ["v1.0.0", false], ["1.0", false], ["01.0.0", false], ["1.0.0 ", false]])(
    "isValidVersion(%s) is %s",
    (version, expected) => expect(isValidVersion(version)).toBe(expected),
  );

  it("orders newest first by semver precedence, not text", () => {
    const versions = ["1.10.0", "1.9.0", "2.0.0-rc.1", "2.0.0", "1.9.0-alpha"];
    expect([...versions].sort(compareVersionsDescending)).toEqual(["2.0.0", "2.0.0-rc.1", "1.10.0", "1.9.0", "1.9.0-alpha"]);
  });
});
