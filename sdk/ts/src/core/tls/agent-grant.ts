import { X509Certificate } from "node:crypto";
import { x509 } from "../x509-setup.js";

/**
 * The agent names a sidecar identity may act for travel in its certificate, in a
 * non-critical extension, so a server that restarted (or another replica) knows
 * them from the certificate alone — the way Kubernetes carries groups in client
 * certificates. OID 2.25.<UUID> (ITU-T X.667): needs no registration.
 */
export const agentGrantOid = "2.25.247059227634395432734640591398063412213";

/** DER UTF8String of the names joined by commas (names are DNS labels or `*`). */
export function encodeAgentGrant(allowedAgentNames: readonly string[]): ArrayBuffer {
  const text = Buffer.from([...new Set(allowedAgentNames)].sort().join(","), "utf8");
  const header = text.length < 128 ? Buffer.from([0x0c, text.length]) : lengthHeader(text.length);
  const der = Buffer.concat([header, text]);
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer;
}

export function agentGrantExtension(allowedAgentNames: readonly string[]): x509.Extension {
  return new x509.Extension(agentGrantOid, false, encodeAgentGrant(allowedAgentNames));
}

/** The names granted by a certificate's extension; empty when it has none. */
export function readAgentGrant(certificate: X509Certificate | Buffer): string[] {
  const raw = certificate instanceof X509Certificate ? certificate.raw : certificate;
  const parsed = new x509.X509Certificate(raw);
  const extension = parsed.getExtension(agentGrantOid);
  if (!extension) return [];
  const value = Buffer.from(extension.value);
  if (value[0] !== 0x0c) return [];
  const { length, offset } = readLength(value, 1);
  const names = value.subarray(offset, offset + length).toString("utf8");
  return names === "" ? [] : names.split(",");
}

function lengthHeader(length: number): Buffer {
  const bytes: number[] = [];
  for (let remaining = length; remaining > 0; remaining >>= 8) bytes.unshift(remaining & 0xff);
  return Buffer.from([0x0c, 0x80 | bytes.length, ...bytes]);
}

function readLength(value: Buffer, position: number): { length: number; offset: number } {
  const first = value[position] ?? 0;
  if (first < 0x80) return { length: first, offset: position + 1 };
  const count = first & 0x7f;
  let length = 0;
  for (let index = 1; index <= count; index += 1) length = (length << 8) | (value[position + index] ?? 0);
  return { length, offset: position + 1 + count };
}
