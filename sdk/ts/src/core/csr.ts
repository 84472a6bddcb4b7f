import { createPrivateKey, webcrypto } from "node:crypto";
import type { KeyObject } from "node:crypto";
import type { SignatureAlg } from "./signing.js";
import { parseSpiffeId } from "./spiffe-id.js";

/** A fresh private key and the CSR that asks the mesh CA to certify it. */
export interface KeyAndCsr {
  /** Parsed once; pass it to signEnvelope and to TLS credentials. */
  privateKey: KeyObject;
  /** PKCS#8 PEM, for TLS credentials and files (mode 0600). */
  privateKeyPem: string;
  /** PKCS#10 request carrying the SPIFFE ID as its URI SAN, signed by privateKey. */
  csrPem: string;
}

const keyAlgorithms = {
  ES256: { generate: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  Ed25519: { generate: { name: "Ed25519" }, sign: { name: "Ed25519" } },
} as const;

/**
 * Makes a fresh key pair and a CSR for `spiffeId` (sidecars, SDK direct mode,
 * `ctl init-admin`). The private key never leaves the caller; the CA only sees
 * the CSR, whose signature proves possession of the key.
 */
export async function generateKeyAndCsr(spiffeId: string, options: { alg?: SignatureAlg } = {}): Promise<KeyAndCsr> {
  const id = parseSpiffeId(spiffeId);
  // @peculiar/x509 (with tsyringe and its metadata polyfill) takes about as long to load as
  // the rest of the SDK entry: loaded on the first CSR, so an agent under a sidecar (which
  // never makes one) does not pay for it at start (bench:sdk, start → READY).
  const { x509 } = await import("./x509-setup.js");
  const { subtle } = webcrypto;
  const algorithm = keyAlgorithms[options.alg ?? "ES256"];
  const keys = (await subtle.generateKey(algorithm.generate, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${id.name}`,
    keys,
    signingAlgorithm: algorithm.sign,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: id.uri }])],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey));
  const privateKey = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  return {
    privateKey,
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    csrPem: csr.toString("pem"),
  };
}
