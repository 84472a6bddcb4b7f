import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { appendOfflineIssued, offlineIssuedFileName, readOfflineIssued } from "../../services/identity/adapters/offline-issued-file.js";
import { tempDir } from "../helpers/processes.js";

const record = (serial: string, notAfterMs: number) => ({ serial, spiffeId: "spiffe://mesh.local/admin/second", issuedAtMs: 1_000, notAfterMs });

describe("certificates init-admin issued beside the CA", () => {
  it("reads back what was appended, without the expired ones and past a torn or foreign line", async () => {
    const dataDir = tempDir();
    await appendOfflineIssued(dataDir, record("4a01", 5_000));
    await appendOfflineIssued(dataDir, record("4a02", 1_500));
    appendFileSync(join(dataDir, offlineIssuedFileName), '{"serial":"4a03","spiffeId":\n{"serial":7}\n');
    await appendOfflineIssued(dataDir, record("4a04", 9_000));
    expect((await readOfflineIssued(dataDir, 2_000)).map((each) => each.serial)).toEqual(["4a01", "4a04"]);
  });

  it("is empty when init-admin never ran there", async () => {
    expect(await readOfflineIssued(tempDir(), 0)).toEqual([]);
  });
});
