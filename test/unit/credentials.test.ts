import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultCredentialsDir, describeCredentialsDir, legacyCredentialsHint, resolveCredentialsDir } from "../../cli/credentials.js";
import { tempDir } from "../helpers/processes.js";

describe("where ctl looks for admin credentials", () => {
  it.each<[NodeJS.ProcessEnv, string]>([
    [{ HOME: "/home/op" }, "/home/op/.config/agentmesh/admin"],
    [{ HOME: "/home/op", XDG_CONFIG_HOME: "/cfg" }, "/cfg/agentmesh/admin"],
    // The XDG rule: a relative XDG_CONFIG_HOME is ignored.
    [{ HOME: "/home/op", XDG_CONFIG_HOME: "relative" }, "/home/op/.config/agentmesh/admin"],
  ])("per-user default for %j is %s", (env, dir) => expect(defaultCredentialsDir(env)).toBe(dir));

  it("the flag, then the environment, then the per-user default, each named", () => {
    const env = { HOME: "/home/op" };
    expect(describeCredentialsDir(resolveCredentialsDir("/a", "cli", env))).toBe("/a (--credentials-dir)");
    expect(describeCredentialsDir(resolveCredentialsDir("/b", "env", env))).toBe("/b (AGENTMESH_CREDENTIALS_DIR)");
    expect(describeCredentialsDir(resolveCredentialsDir(undefined, undefined, env))).toBe("/home/op/.config/agentmesh/admin (the per-user default)");
  });

  it("points at credentials an older init-admin left in ./.agentmesh/admin", () => {
    const cwd = tempDir();
    expect(legacyCredentialsHint(cwd)).toBe("");
    mkdirSync(join(cwd, ".agentmesh", "admin"), { recursive: true });
    writeFileSync(join(cwd, ".agentmesh", "admin", "admin-cert.pem"), "");
    expect(legacyCredentialsHint(cwd)).toBe(`; credentials exist in ${join(cwd, ".agentmesh", "admin")}: pass --credentials-dir .agentmesh/admin`);
  });
});
