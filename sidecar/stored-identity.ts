import { X509Certificate, createPrivateKey } from "node:crypto";
import { chmod, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { splitPem } from "../sdk/ts/src/client/mesh-identity.js";
import { spiffeIdsFromCertificate } from "../sdk/ts/src/core/spiffe-id.js";
import type { IdentityMaterial } from "../sdk/ts/src/core/tls/certificate-source.js";

/** Where a sidecar keeps its certificate and key in --data-dir, so a restart rejoins without a new join token. */
export const storedIdentityFiles = { cert: "sidecar-cert.pem", key: "sidecar-key.pem" } as const;

/** Closer to expiry than this, a stored certificate may lapse before the connection and the first renewal (due at once past half-life) are through. */
const minimumRemainingMs = 3_000;

export type StoredIdentity = { kind: "usable"; material: IdentityMaterial } | { kind: "none" } | { kind: "unusable"; problem: string };

/**
 * The certificate a sidecar stored in its data dir, if it can rejoin with it: its
 * SPIFFE ID, signed by a CA of the trust bundle, matching the key, and valid for a
 * while yet. Anything else is reported, never thrown: a token may still join.
 */
export async function loadStoredIdentity(dataDir: string, expected: { spiffeId: string; trustBundlePem: readonly string[]; nowMs: number }): Promise<StoredIdentity> {
  const certFile = join(dataDir, storedIdentityFiles.cert);
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(certFile, "utf8"), readFile(join(dataDir, storedIdentityFiles.key), "utf8")]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { kind: "none" };
    throw error;
  }
  try {
    const chainPem = splitPem(certPem);
    const leaf = new X509Certificate(chainPem[0] ?? "");
    if (!spiffeIdsFromCertificate(leaf).includes(expected.spiffeId)) return { kind: "unusable", problem: `${certFile} is not a certificate of ${expected.spiffeId}` };
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return { kind: "unusable", problem: `${certFile} does not match its key` };
    if (!chainsToBundle(chainPem, expected.trustBundlePem)) return { kind: "unusable", problem: `${certFile} was not signed by the CA of --ca-cert` };
    const expiresAtMs = Date.parse(leaf.validTo);
    if (expiresAtMs - expected.nowMs < minimumRemainingMs) {
      return { kind: "unusable", problem: `the certificate in ${certFile} expired at ${new Date(expiresAtMs).toISOString()}` };
    }
    return {
      kind: "usable",
      material: { chainPem, privateKeyPem: keyPem, notBeforeMs: Date.parse(leaf.validFrom), expiresAtMs, serial: leaf.serialNumber.toLowerCase(), spiffeId: expected.spiffeId },
    };
  } catch {
    return { kind: "unusable", problem: `${certFile} or its key cannot be read as PEM` };
  }
}

/** Leaf, then each intermediate, signed by the next; the last one by a root of the bundle. */
function chainsToBundle(chainPem: readonly string[], trustBundlePem: readonly string[]): boolean {
  const chain = chainPem.map((pem) => new X509Certificate(pem));
  const roots = trustBundlePem.map((pem) => new X509Certificate(pem));
  for (let index = 0; index + 1 < chain.length; index += 1) {
    const [child, parent] = [chain[index] as X509Certificate, chain[index + 1] as X509Certificate];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) return false;
  }
  const top = chain[chain.length - 1];
  return top !== undefined && roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey));
}

/** Writes the current certificate and key (key 0600), each by rename, so a crash never leaves half a file. */
export async function storeIdentity(dataDir: string, material: IdentityMaterial): Promise<void> {
  const keyFile = join(dataDir, storedIdentityFiles.key);
  const certFile = join(dataDir, storedIdentityFiles.cert);
  await writeFile(`${keyFile}.tmp`, material.privateKeyPem, { mode: 0o600 });
  await chmod(`${keyFile}.tmp`, 0o600);
  await writeFile(`${certFile}.tmp`, material.chainPem.join(""));
  // Key first: a certificate on disk always has its key beside it (checkPrivateKey tells a mismatch on load).
  await rename(`${keyFile}.tmp`, keyFile);
  await rename(`${certFile}.tmp`, certFile);
}
