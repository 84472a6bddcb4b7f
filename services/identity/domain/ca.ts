import { createPrivateKey, createPublicKey, randomBytes as cryptoRandomBytes, sign as cryptoSign, X509Certificate } from "node:crypto";
import type { KeyObject, webcrypto } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { agentGrantSubject } from "../../../sdk/ts/src/core/tls/agent-grant.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { parseSpiffeId, validateTrustDomain } from "../../../sdk/ts/src/core/spiffe-id.js";
import { subtle, x509 } from "../../../sdk/ts/src/core/x509-setup.js";

export const caCertFileName = "ca-cert.pem";
export const caKeyFileName = "ca-key.pem";
/** Leaves start this long before issuance so peers whose clocks run behind accept them. */
export const leafBackdateMs = 5 * 60_000;
export const defaultLeafTtlMs = 60 * 60_000;
const defaultMaxLeafTtlMs = 24 * 60 * 60_000;
const defaultCaValidityMs = 10 * 365 * 24 * 60 * 60_000;

interface CaCommonOptions {
  trustDomain: string;
  clock: Clock;
  randomBytes?: (size: number) => Uint8Array;
  /** Extra roots to publish, e.g. the previous root during a rotation. */
  extraTrustBundlePem?: string[];
  /** Upper bound on any leaf's lifetime (default 24 h). */
  maxLeafTtlMs?: number;
}

/** Keep (or create on first start) the CA in `dataDir`. */
export interface CaFromDataDir extends CaCommonOptions {
  dataDir: string;
  /** Lifetime of a newly created root (default 10 years). */
  caValidityMs?: number;
}

/**
 * An operator's CA: `certPem` is the signing certificate first, then its issuers
 * (a self-signed root, or an intermediate followed by its chain).
 */
export interface CaFromPem extends CaCommonOptions {
  certPem: string;
  keyPem: string;
}

export type LoadCaOptions = CaFromDataDir | CaFromPem;

export interface IssueCertificateInput {
  /** PEM PKCS#10. Its subject and requested extensions are ignored: the CA decides. */
  csrPem: string;
  /** The identity to certify, already authorized by the caller. */
  spiffeId: string;
  ttlMs: number;
  /** For server certificates, so grpcurl and browsers can verify the host. */
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Agent names a sidecar identity may act for, carried in the certificate (agent-grant.ts). */
  allowedAgentNames?: string[];
  /** Defaults to the CA's clock. */
  clock?: Clock;
}

export interface IssuedCertificate {
  /** Leaf first, then intermediates (never the root). */
  chainPem: string[];
  /** Lower-case hex, as normalizeSerial gives. */
  serial: string;
  spiffeId: string;
  notBeforeMs: number;
  expiresAtMs: number;
}

export interface VerifiedCsr {
  publicKeyAlgorithm: "ECDSA P-256" | "Ed25519";
}

export interface MeshCa {
  readonly trustDomain: string;
  /** The signing CA certificate (root or intermediate). */
  readonly certificatePem: string;
  readonly certificate: X509Certificate;
  /** Roots peers should trust: more than one while a CA rotation is under way. */
  trustBundle(): string[];
  /** Parses the CSR and checks its self-signature (proof of possession). */
  verifyCsr(csrPem: string): Promise<VerifiedCsr>;
  issueCertificate(input: IssueCertificateInput): Promise<IssuedCertificate>;
  /**
   * Signs `data` with the CA key (ECDSA over SHA-256): the audit log's head record.
   * Callers put a fixed prefix first, so what is signed never parses as a certificate.
   */
  sign(data: Buffer): Buffer;
}

/** Serials compare as lower-case hex without leading zeros (Node prints upper case). */
export function normalizeSerial(serial: string): string {
  const hex = serial.trim().toLowerCase().replace(/^0+(?=.)/, "");
  if (!/^[0-9a-f]+$/.test(hex)) throw new MeshError("invalidArgument", "serial must be hex");
  return hex;
}

export function splitPemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((block) => `${block}\n`) ?? [];
}

function isSelfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}

const signingAlgorithmByCurve: Record<string, { namedCurve: string; hash: string }> = {
  prime256v1: { namedCurve: "P-256", hash: "SHA-256" },
  secp384r1: { namedCurve: "P-384", hash: "SHA-384" },
};

interface CaMaterial {
  chain: X509Certificate[];
  chainPem: string[];
  privateKey: KeyObject;
}

async function importSigningKey(privateKey: KeyObject): Promise<{ key: webcrypto.CryptoKey; hash: string }> {
  const curve = privateKey.asymmetricKeyType === "ec" ? privateKey.asymmetricKeyDetails?.namedCurve : undefined;
  const algorithm = curve === undefined ? undefined : signingAlgorithmByCurve[curve];
  if (!algorithm) throw new MeshError("failedPrecondition", "CA key must be ECDSA P-256 or P-384");
  const pkcs8 = privateKey.export({ type: "pkcs8", format: "der" });
  const key = await subtle.importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: algorithm.namedCurve }, false, ["sign"]);
  return { key, hash: algorithm.hash };
}

function parseMaterial(certPem: string, keyPem: string, nowMs: number): CaMaterial {
  const chainPem = splitPemCertificates(certPem);
  if (chainPem.length === 0) throw new MeshError("failedPrecondition", "CA certificate file holds no certificate");
  const chain = chainPem.map((pem) => new X509Certificate(pem));
  const [caCert] = chain;
  if (!caCert) throw new MeshError("failedPrecondition", "CA certificate file holds no certificate");
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch {
    throw new MeshError("failedPrecondition", "CA key file is not a readable private key");
  }
  const spki = (key: KeyObject): Buffer => key.export({ type: "spki", format: "der" });
  if (!spki(createPublicKey(privateKey)).equals(spki(caCert.publicKey))) {
    throw new MeshError("failedPrecondition", "CA key does not match the CA certificate");
  }
  if (!caCert.ca) throw new MeshError("failedPrecondition", "CA certificate is not a CA (basicConstraints)");
  if (Date.parse(caCert.validTo) <= nowMs) throw new MeshError("failedPrecondition", "CA certificate expired");
  return { chain, chainPem, privateKey };
}

async function createSelfSignedCa(options: CaFromDataDir): Promise<{ certPem: string; keyPem: string }> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const nowMs = options.clock.nowMs();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(options.randomBytes ?? cryptoRandomBytes),
    name: `CN=agentmesh CA ${options.trustDomain}, O=agentmesh`,
    notBefore: new Date(nowMs - leafBackdateMs),
    notAfter: new Date(nowMs + (options.caValidityMs ?? defaultCaValidityMs)),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({ type: "pkcs8", format: "pem" }).toString();
  return { certPem: cert.toString("pem"), keyPem };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

async function loadOrCreateInDataDir(options: CaFromDataDir): Promise<{ certPem: string; keyPem: string }> {
  const certPath = join(options.dataDir, caCertFileName);
  const keyPath = join(options.dataDir, caKeyFileName);
  const [certPem, keyPem] = await Promise.all([readIfExists(certPath), readIfExists(keyPath)]);
  if (certPem !== undefined && keyPem !== undefined) return { certPem, keyPem };
  // Never overwrite half a CA: a lone key or certificate needs an operator.
  if (certPem !== undefined || keyPem !== undefined) {
    throw new MeshError("failedPrecondition", `CA data dir has only one of ${caCertFileName} and ${caKeyFileName}`);
  }
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const created = await createSelfSignedCa(options);
  // Write to temporary names, key first, then rename: a crash leaves either
  // nothing or a complete pair under the real names. chmod because writeFile's
  // mode only applies when it creates the file, not to a leftover temporary.
  await writeFile(`${keyPath}.tmp`, created.keyPem, { mode: 0o600 });
  await chmod(`${keyPath}.tmp`, 0o600);
  await writeFile(`${certPath}.tmp`, created.certPem, { mode: 0o644 });
  await rename(`${keyPath}.tmp`, keyPath);
  await rename(`${certPath}.tmp`, certPath);
  return created;
}

function randomSerialHex(randomBytes: (size: number) => Uint8Array): string {
  const bytes = Buffer.from(randomBytes(16));
  // Positive (top bit clear) and no leading zero byte, so the DER integer keeps
  // all 16 bytes and the hex is the same everywhere it is printed.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString("hex");
}

const dnsNamePattern = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

function validateSans(dnsNames: string[], ipAddresses: string[]): void {
  for (const name of dnsNames) {
    if (name.length > 253 || !dnsNamePattern.test(name)) throw new MeshError("invalidArgument", "invalid DNS name");
  }
  for (const address of ipAddresses) {
    if (isIP(address) === 0) throw new MeshError("invalidArgument", "invalid IP address");
  }
}

function csrKeyAlgorithm(csr: x509.Pkcs10CertificateRequest): VerifiedCsr["publicKeyAlgorithm"] | undefined {
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (algorithm.name === "ECDSA" && algorithm.namedCurve === "P-256") return "ECDSA P-256";
  if (algorithm.name === "Ed25519") return "Ed25519";
  return undefined;
}

async function parseAndVerifyCsr(csrPem: string): Promise<{ csr: x509.Pkcs10CertificateRequest; verified: VerifiedCsr }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new MeshError("invalidArgument", "csr malformed");
  }
  let publicKeyAlgorithm: VerifiedCsr["publicKeyAlgorithm"] | undefined;
  try {
    publicKeyAlgorithm = csrKeyAlgorithm(csr);
  } catch {
    publicKeyAlgorithm = undefined;
  }
  if (!publicKeyAlgorithm) throw new MeshError("invalidArgument", "csr key must be ECDSA P-256 or Ed25519");
  let valid: boolean;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new MeshError("invalidArgument", "csr signature invalid");
  return { csr, verified: { publicKeyAlgorithm } };
}

/**
 * Loads the mesh CA from operator PEM, or from `dataDir`, creating an ECDSA P-256
 * self-signed root there on first start (key file mode 0600).
 */
export async function loadOrCreateCa(options: LoadCaOptions): Promise<MeshCa> {
  validateTrustDomain(options.trustDomain);
  const pem = "dataDir" in options ? await loadOrCreateInDataDir(options) : options;
  const material = parseMaterial(pem.certPem, pem.keyPem, options.clock.nowMs());
  const signing = await importSigningKey(material.privateKey);
  const [caCert] = material.chain;
  const caCertPem = material.chainPem[0];
  if (!caCert || caCertPem === undefined) throw new MeshError("failedPrecondition", "CA certificate file holds no certificate");
  const caPeculiar = new x509.X509Certificate(caCertPem);
  const authorityKeyIdentifier = await x509.AuthorityKeyIdentifierExtension.create(caPeculiar);

  const roots = material.chainPem.filter((_, index) => isSelfSigned(material.chain[index] as X509Certificate));
  const bundle = [...new Set([...roots, ...(options.extraTrustBundlePem ?? []).flatMap(splitPemCertificates)])];
  if (bundle.length === 0) {
    throw new MeshError("failedPrecondition", "CA chain has no root: append it to the certificate file or pass it as a trust bundle");
  }
  // Leaves carry the signing CA and any intermediates; peers hold the roots already.
  const intermediatesPem = material.chainPem.filter((pemText) => !roots.includes(pemText));
  const caNotAfterMs = Date.parse(caCert.validTo);
  const maxLeafTtlMs = options.maxLeafTtlMs ?? defaultMaxLeafTtlMs;
  const randomBytes = options.randomBytes ?? cryptoRandomBytes;

  return {
    trustDomain: options.trustDomain,
    certificatePem: caCertPem,
    certificate: caCert,
    trustBundle: () => bundle.slice(),
    verifyCsr: async (csrPem) => (await parseAndVerifyCsr(csrPem)).verified,
    sign: (data) => cryptoSign("sha256", data, material.privateKey),
    async issueCertificate(input) {
      const id = parseSpiffeId(input.spiffeId);
      if (id.trustDomain !== options.trustDomain) throw new MeshError("invalidArgument", "SPIFFE ID is outside the trust domain");
      if (!Number.isInteger(input.ttlMs) || input.ttlMs <= 0) throw new MeshError("invalidArgument", "ttlMs must be a positive integer");
      const dnsNames = input.dnsNames ?? [];
      const ipAddresses = input.ipAddresses ?? [];
      validateSans(dnsNames, ipAddresses);
      const { csr } = await parseAndVerifyCsr(input.csrPem);

      const nowMs = (input.clock ?? options.clock).nowMs();
      // X.509 times have one-second resolution; report what the certificate says.
      const notBeforeMs = Math.floor((nowMs - leafBackdateMs) / 1000) * 1000;
      const expiresAtMs = Math.floor(Math.min(nowMs + Math.min(input.ttlMs, maxLeafTtlMs), caNotAfterMs) / 1000) * 1000;
      const serial = randomSerialHex(randomBytes);
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: serial,
        subject: [`CN=${id.name}`, `OU=${id.kind}`, agentGrantSubject(input.allowedAgentNames ?? []), "O=agentmesh"].filter((part) => part !== "").join(", "),
        issuer: caPeculiar.subjectName,
        notBefore: new Date(notBeforeMs),
        notAfter: new Date(expiresAtMs),
        signingAlgorithm: { name: "ECDSA", hash: signing.hash },
        publicKey: csr.publicKey,
        signingKey: signing.key,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([
            { type: "url", value: id.uri },
            ...dnsNames.map((value) => ({ type: "dns" as const, value })),
            ...ipAddresses.map((value) => ({ type: "ip" as const, value })),
          ]),
          await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
          authorityKeyIdentifier,
        ],
      });
      return { chainPem: [leaf.toString("pem"), ...intermediatesPem], serial, spiffeId: id.uri, notBeforeMs, expiresAtMs };
    },
  };
}
