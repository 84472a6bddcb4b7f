import { X509Certificate } from "node:crypto";
import { x509 } from "../x509-setup.js";

/**
 * The agent names a sidecar identity may act for travel in its certificate, in a
 * non-critical extension, so a server that restarted (or another replica) knows
 * them from the certificate alone — the way Kubernetes carries groups in client
 * certificates.
 *
 * Not a 2.25.<UUID> OID: @peculiar/x509 re-parses extensions while building a
 * certificate, and asn1js cannot read an arc above 2^53 back as a number, so a
 * UUID arc was written out as plain "2.25" and never found again. Until agentmesh
 * has its own IANA enterprise number this sits under 32473, the number RFC 5612
 * reserves for documentation, which no real issuer uses. Only certificates from
 * the mesh's own CA are ever read for it.
 */
export const agentGrantOid = "1.3.6.1.4.1.32473.7420.1";

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
