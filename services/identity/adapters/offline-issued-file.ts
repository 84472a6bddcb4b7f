import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { IssuedCertificateRecord } from "../ports.js";

/**
 * Certificates the CA issued outside the server process: `ctl init-admin` signs
 * admin certificates with the CA in the server's data dir, where no server is
 * asked (it bootstraps the first admin). It appends each one here, beside the CA,
 * and the server reads this file before a revocation, so every certificate the CA
 * issued can be revoked by serial or SPIFFE ID.
 */
export const offlineIssuedFileName = "issued-offline.jsonl";

export async function appendOfflineIssued(dataDir: string, record: IssuedCertificateRecord): Promise<void> {
  await appendFile(join(dataDir, offlineIssuedFileName), `${JSON.stringify(record)}\n`, { mode: 0o600 });
}

/** The records still valid at nowMs; a missing file is none, a torn or foreign line is skipped. */
export async function readOfflineIssued(dataDir: string, nowMs: number): Promise<IssuedCertificateRecord[]> {
  let text: string;
  try {
    text = await readFile(join(dataDir, offlineIssuedFileName), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const records: IssuedCertificateRecord[] = [];
  for (const line of text.split("\n")) {
    const record = parseRecord(line);
    if (record && record.notAfterMs > nowMs) records.push(record);
  }
  return records;
}

function parseRecord(line: string): IssuedCertificateRecord | undefined {
  if (line.trim() === "") return undefined;
  try {
    const value = JSON.parse(line) as Partial<IssuedCertificateRecord>;
    const valid =
      typeof value.serial === "string" && typeof value.spiffeId === "string" && typeof value.issuedAtMs === "number" && typeof value.notAfterMs === "number";
    return valid ? { serial: value.serial as string, spiffeId: value.spiffeId as string, issuedAtMs: value.issuedAtMs as number, notAfterMs: value.notAfterMs as number } : undefined;
  } catch {
    return undefined;
  }
}
