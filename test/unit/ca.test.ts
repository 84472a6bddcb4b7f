import { generateKeyPairSync, X509Certificate } from "node:crypto";
import type { webcrypto } from "node:crypto";
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { peerSpiffeId } from "../../sdk/ts/src/core/spiffe-id.js";
import { subtle, x509 } from "../../sdk/ts/src/core/x509-setup.js";
import {
  caCertFileName,
  caKeyFileName,
  leafBackdateMs,
  loadOrCreateCa,
  normalizeSerial,
  splitPemCertificates,
} from "../../services/identity/domain/ca.js";
import type { MeshCa } from "../../services/identity/domain/ca.js";

const trustDomain = "mesh.local";
const agentId = "spiffe://mesh.local/agent/summarizer";
// Whole seconds, so certificate times compare exactly.
const startMs = Math.floor(Date.now() / 1000) * 1000;

let dataDir: string;
let clock: ManualClock;

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "agentmesh-ca-"));
  clock = new ManualClock(startMs);
});

afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const createCa = (): Promise<MeshCa> => loadOrCreateCa({ dataDir, trustDomain, clock });

describe("loadOrCreateCa", () => {
  it("creates a P-256 self-signed CA on first start with a 0600 key file, and reloads it afterwards", async () => {
    const ca = await createCa();
    expect((await stat(join(dataDir, caKeyFileName))).mode & 0o777).toBe(0o600);
    const certificate = new X509Certificate(await readFile(join(dataDir, caCertFileName), "utf8"));
    expect(certificate.ca).toBe(true);
    expect(certificate.checkIssued(certificate) && certificate.verify(certificate.publicKey)).toBe(true);
    expect(certificate.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(ca.trustBundle()).toEqual([ca.certificatePem]);

    const reloaded = await createCa();
    expect(reloaded.certificatePem).toBe(ca.certificatePem);
    // The reloaded CA signs with the same key: its leaves chain to the first root.
    const { csrPem } = await generateKeyAndCsr(agentId);
    const issued = await reloaded.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000 });
    expect(new X509Certificate(issued.chainPem[0] ?? "").verify(ca.certificate.publicKey)).toBe(true);
  });

  it("refuses a data dir holding only half a CA", async () => {
    await createCa();
    await unlink(join(dataDir, caCertFileName));
    await expect(createCa()).rejects.toMatchObject({ kind: "failedPrecondition" });
    expect((await stat(join(dataDir, caKeyFileName))).isFile()).toBe(true);
  });

  it("loads an operator's PEM files", async () => {
    const created = await createCa();
    const keyPem = await readFile(join(dataDir, caKeyFileName), "utf8");
    const ca = await loadOrCreateCa({ certPem: created.certificatePem, keyPem, trustDomain, clock });
    expect(ca.trustBundle()).toEqual([created.certificatePem]);
  });

  it("refuses a key that does not match the certificate", async () => {
    const created = await createCa();
    const otherKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    await expect(loadOrCreateCa({ certPem: created.certificatePem, keyPem: otherKey, trustDomain, clock })).rejects.toThrow(
      new MeshError("failedPrecondition", "CA key does not match the CA certificate"),
    );
  });

  it("refuses an expired CA and an invalid trust domain", async () => {
    const created = await createCa();
    const keyPem = await readFile(join(dataDir, caKeyFileName), "utf8");
    const later = new ManualClock(startMs + 11 * 365 * 24 * 3_600_000);
    await expect(loadOrCreateCa({ certPem: created.certificatePem, keyPem, trustDomain, clock: later })).rejects.toThrow(/expired/);
    await expect(loadOrCreateCa({ dataDir, trustDomain: "Mesh.Local", clock })).rejects.toMatchObject({ kind: "invalidArgument" });
  });

  it("publishes extra roots for a rotation", async () => {
    const ca = await createCa();
    const otherDir = await mkdtemp(join(tmpdir(), "agentmesh-ca-next-"));
    try {
      const next = await loadOrCreateCa({ dataDir: otherDir, trustDomain, clock, extraTrustBundlePem: [ca.certificatePem] });
      expect(next.trustBundle()).toEqual([next.certificatePem, ca.certificatePem]);
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it("signs with an operator's intermediate and ships it in the chain", async () => {
    const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    const rootKeys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const intermediateKeys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=operator root",
      keys: rootKeys,
      signingAlgorithm: algorithm,
      notBefore: new Date(startMs - 60_000),
      notAfter: new Date(startMs + 365 * 24 * 3_600_000),
      extensions: [new x509.BasicConstraintsExtension(true, 1, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const intermediate = await x509.X509CertificateGenerator.create({
      subject: "CN=operator intermediate",
      issuer: root.subject,
      notBefore: new Date(startMs - 60_000),
      notAfter: new Date(startMs + 30 * 24 * 3_600_000),
      signingAlgorithm: algorithm,
      publicKey: intermediateKeys.publicKey,
      signingKey: rootKeys.privateKey,
      extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const keyDer = Buffer.from(await subtle.exportKey("pkcs8", intermediateKeys.privateKey));
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${keyDer.toString("base64")}\n-----END PRIVATE KEY-----\n`;
    const certPem = `${intermediate.toString("pem")}\n${root.toString("pem")}\n`;

    const ca = await loadOrCreateCa({ certPem, keyPem, trustDomain, clock });
    expect(ca.trustBundle().map((pem) => new X509Certificate(pem).subject)).toEqual(["CN=operator root"]);
    const { csrPem } = await generateKeyAndCsr(agentId);
    const issued = await ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000 });
    expect(issued.chainPem).toHaveLength(2);
    const [leaf, middle] = issued.chainPem.map((pem) => new X509Certificate(pem));
    const rootCert = new X509Certificate(root.toString("pem"));
    expect(leaf?.verify(middle?.publicKey ?? rootCert.publicKey)).toBe(true);
    expect(middle?.verify(rootCert.publicKey)).toBe(true);

    const withoutRoot = loadOrCreateCa({ certPem: intermediate.toString("pem"), keyPem, trustDomain, clock });
    await expect(withoutRoot).rejects.toMatchObject({ kind: "failedPrecondition" });
  });
});

describe("issueCertificate", () => {
  it("issues a leaf node:crypto accepts: one SPIFFE URI SAN, not a CA, client and server auth, backdated", async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr(agentId);
    const issued = await ca.issueCertificate({
      csrPem,
      spiffeId: agentId,
      ttlMs: 3_600_000,
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1", "::1"],
    });
    expect(issued.chainPem).toHaveLength(1);
    const leaf = new X509Certificate(issued.chainPem[0] ?? "");
    expect(leaf.checkIssued(ca.certificate)).toBe(true);
    expect(leaf.verify(ca.certificate.publicKey)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.subjectAltName).toBe("URI:spiffe://mesh.local/agent/summarizer, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    expect(peerSpiffeId(leaf, trustDomain).uri).toBe(agentId);
    expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    expect(Date.parse(leaf.validFrom)).toBe(startMs - leafBackdateMs);
    expect(Date.parse(leaf.validTo)).toBe(startMs + 3_600_000);
    expect(issued).toMatchObject({ spiffeId: agentId, notBeforeMs: startMs - leafBackdateMs, expiresAtMs: startMs + 3_600_000 });
    expect(normalizeSerial(leaf.serialNumber)).toBe(issued.serial);

    const parsed = new x509.X509Certificate(issued.chainPem[0] ?? "");
    const keyUsage = parsed.getExtension(x509.KeyUsagesExtension);
    expect(keyUsage?.critical).toBe(true);
    expect((keyUsage?.usages ?? 0) & x509.KeyUsageFlags.digitalSignature).toBeTruthy();
    expect((keyUsage?.usages ?? 0) & x509.KeyUsageFlags.keyCertSign).toBe(0);
    const basicConstraints = parsed.getExtension(x509.BasicConstraintsExtension);
    expect(basicConstraints?.ca).toBe(false);
    expect(basicConstraints?.critical).toBe(true);
  });

  it("gives every certificate a distinct positive serial", async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr(agentId);
    const serials = new Set<string>();
    for (let index = 0; index < 5; index += 1) serials.add((await ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000 })).serial);
    expect(serials.size).toBe(5);
    for (const serial of serials) expect(serial).toMatch(/^[4-7][0-9a-f]{31}$/);
  });

  it("certifies the requested identity, not whatever the CSR asks for", async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr("spiffe://mesh.local/admin/root");
    const issued = await ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000 });
    expect(new X509Certificate(issued.chainPem[0] ?? "").subjectAltName).toBe(`URI:${agentId}`);
  });

  it("issues for an Ed25519 key", async () => {
    const ca = await createCa();
    const { csrPem, privateKey } = await generateKeyAndCsr(agentId, { alg: "Ed25519" });
    const issued = await ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000 });
    const leaf = new X509Certificate(issued.chainPem[0] ?? "");
    expect(leaf.publicKey.asymmetricKeyType).toBe("ed25519");
    expect(leaf.checkPrivateKey(privateKey)).toBe(true);
  });

  it("caps the lifetime", async () => {
    const ca = await loadOrCreateCa({ dataDir, trustDomain, clock, maxLeafTtlMs: 120_000 });
    const { csrPem } = await generateKeyAndCsr(agentId);
    const issued = await ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 3_600_000 });
    expect(issued.expiresAtMs).toBe(startMs + 120_000);
  });

  it("rejects a CSR whose signature does not match its key", async () => {
    const ca = await createCa();
    const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    const signing = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const claimed = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    // Someone else's public key, signed with the requester's own private key.
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=summarizer",
      keys: { publicKey: claimed.publicKey, privateKey: signing.privateKey },
      signingAlgorithm: algorithm,
    });
    await expect(ca.issueCertificate({ csrPem: csr.toString("pem"), spiffeId: agentId, ttlMs: 60_000 })).rejects.toThrow(
      new MeshError("invalidArgument", "csr signature invalid"),
    );
    await expect(ca.verifyCsr(csr.toString("pem"))).rejects.toThrow(new MeshError("invalidArgument", "csr signature invalid"));
  });

  it("rejects a CSR with a flipped signature bit", async () => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr(agentId);
    const der = Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).rawData);
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(ca.issueCertificate({ csrPem: tampered, spiffeId: agentId, ttlMs: 60_000 })).rejects.toThrow(
      new MeshError("invalidArgument", "csr signature invalid"),
    );
  });

  it.each([
    ["garbage CSR", { csrPem: "not a csr" }, "csr malformed"],
    ["other trust domain", { spiffeId: "spiffe://other.mesh/agent/a" }, "SPIFFE ID is outside the trust domain"],
    ["invalid SPIFFE ID", { spiffeId: "spiffe://mesh.local/agent/a/b" }, "invalid SPIFFE ID: path must be /<kind>/<name>"],
    ["zero TTL", { ttlMs: 0 }, "ttlMs must be a positive integer"],
    ["bad DNS name", { dnsNames: ["bad name"] }, "invalid DNS name"],
    ["bad IP address", { ipAddresses: ["300.1.1.1"] }, "invalid IP address"],
  ])("rejects %s", async (_label, overrides, message) => {
    const ca = await createCa();
    const { csrPem } = await generateKeyAndCsr(agentId);
    await expect(ca.issueCertificate({ csrPem, spiffeId: agentId, ttlMs: 60_000, ...overrides })).rejects.toThrow(
      new MeshError("invalidArgument", message),
    );
  });

  it("rejects an RSA CSR", async () => {
    const ca = await createCa();
    const algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 1024 };
    const keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: "CN=a", keys, signingAlgorithm: algorithm });
    await expect(ca.issueCertificate({ csrPem: csr.toString("pem"), spiffeId: agentId, ttlMs: 60_000 })).rejects.toThrow(
      new MeshError("invalidArgument", "csr key must be ECDSA P-256 or Ed25519"),
    );
  });
});

describe("PEM helpers", () => {
  it("splits a bundle and normalizes serials", async () => {
    const ca = await createCa();
    expect(splitPemCertificates(`junk\n${ca.certificatePem}\n${ca.certificatePem}`)).toHaveLength(2);
    expect(normalizeSerial("00AB12")).toBe("ab12");
    expect(() => normalizeSerial("xyz")).toThrow(MeshError);
  });
});

// writeFile applies its mode only when it creates the file: a leftover temporary
// file from a crashed first start must not hand its looser mode to the key.
it("the key file is 0600 even when a crashed start left a looser temporary file", async () => {
  await writeFile(join(dataDir, `${caKeyFileName}.tmp`), "stale", { mode: 0o644 });
  await createCa();
  expect((await stat(join(dataDir, caKeyFileName))).mode & 0o777).toBe(0o600);
});
