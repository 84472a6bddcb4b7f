import type { X509Certificate } from "node:crypto";
import { MeshError } from "./mesh-error.js";

/** The kinds of workload agentmesh names; each is the first path segment of its SPIFFE ID. */
export const spiffeKinds = ["agent", "sidecar", "server", "admin"] as const;
/** `agent`, `sidecar`, `server` or `admin`. */
export type SpiffeKind = (typeof spiffeKinds)[number];

/** A parsed agentmesh SPIFFE ID: `spiffe://<trustDomain>/<kind>/<name>`. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly kind: SpiffeKind;
  readonly name: string;
  /** The ID in its one canonical string form. */
  readonly uri: string;
}

const scheme = "spiffe://";
// Limits from the SPIFFE ID specification (§2.1, §2.3).
const maxTrustDomainLength = 255;
const maxUriLength = 2048;
const trustDomainPattern = /^[a-z0-9._-]+$/;
const pathSegmentPattern = /^[A-Za-z0-9._-]+$/;

function invalid(reason: string): MeshError {
  return new MeshError("invalidArgument", `invalid SPIFFE ID: ${reason}`);
}

/** Throws invalidArgument unless `trustDomain` is a valid SPIFFE trust domain name. */
export function validateTrustDomain(trustDomain: string): void {
  if (trustDomain.length === 0) throw invalid("empty trust domain");
  if (trustDomain.length > maxTrustDomainLength) throw invalid("trust domain too long");
  // The spec's character set excludes upper case, ':' (port) and '@' (userinfo).
  if (!trustDomainPattern.test(trustDomain)) throw invalid("trust domain has characters outside [a-z0-9._-]");
}

/** Throws invalidArgument unless `segment` is a valid SPIFFE path segment. */
export function validatePathSegment(segment: string): void {
  if (segment.length === 0) throw invalid("empty path segment");
  if (segment === "." || segment === "..") throw invalid("path segment is . or ..");
  if (!pathSegmentPattern.test(segment)) throw invalid("path segment has characters outside [A-Za-z0-9._-]");
}

function isSpiffeKind(value: string): value is SpiffeKind {
  return (spiffeKinds as readonly string[]).includes(value);
}

/**
 * Parses `spiffe://<trust-domain>/<kind>/<name>`. Throws MeshError("invalidArgument")
 * for anything the SPIFFE spec forbids (upper-case trust domain, port, userinfo,
 * query, fragment, empty or dot segments) and for kinds agentmesh does not issue.
 */
export function parseSpiffeId(uri: string): SpiffeId {
  if (uri.length > maxUriLength) throw invalid("longer than 2048 bytes");
  if (!uri.startsWith(scheme)) throw invalid("scheme must be spiffe://");
  if (uri.includes("?")) throw invalid("query not allowed");
  if (uri.includes("#")) throw invalid("fragment not allowed");
  const rest = uri.slice(scheme.length);
  const slash = rest.indexOf("/");
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  if (trustDomain.includes("@")) throw invalid("userinfo not allowed");
  if (trustDomain.includes(":")) throw invalid("port not allowed");
  validateTrustDomain(trustDomain);
  if (slash === -1) throw invalid("path must be /<kind>/<name>");
  const segments = rest.slice(slash + 1).split("/");
  for (const segment of segments) validatePathSegment(segment);
  const [kind, name] = segments;
  if (segments.length !== 2 || kind === undefined || name === undefined) throw invalid("path must be /<kind>/<name>");
  if (!isSpiffeKind(kind)) throw invalid("kind must be agent, sidecar, server or admin");
  return { trustDomain, kind, name, uri };
}

/** Like parseSpiffeId but answers undefined instead of throwing. */
export function tryParseSpiffeId(uri: string): SpiffeId | undefined {
  try {
    return parseSpiffeId(uri);
  } catch {
    return undefined;
  }
}

/** Builds the canonical string, validating every part. */
export function formatSpiffeId(parts: { trustDomain: string; kind: SpiffeKind; name: string }): string {
  validateTrustDomain(parts.trustDomain);
  if (!isSpiffeKind(parts.kind)) throw invalid("kind must be agent, sidecar, server or admin");
  validatePathSegment(parts.name);
  return `${scheme}${parts.trustDomain}/${parts.kind}/${parts.name}`;
}

/**
 * Splits Node's `subjectAltName` text. Node writes `TYPE:value` entries joined by
 * ", " and JSON-quotes any value holding a delimiter (CVE-2021-44532), so a SAN
 * such as `spiffe://a, URI:spiffe://b` stays one entry instead of smuggling a second.
 */
function parseSubjectAltNames(text: string): Array<{ type: string; value: string }> {
  const names: Array<{ type: string; value: string }> = [];
  let position = 0;
  while (position < text.length) {
    const colon = text.indexOf(":", position);
    if (colon === -1) throw new Error("malformed subjectAltName");
    const type = text.slice(position, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (end >= text.length) throw new Error("malformed subjectAltName");
      end += 1;
      value = JSON.parse(text.slice(colon + 1, end)) as string;
    } else {
      const comma = text.indexOf(", ", colon + 1);
      end = comma === -1 ? text.length : comma;
      value = text.slice(colon + 1, end);
    }
    names.push({ type, value });
    if (end === text.length) break;
    if (text.slice(end, end + 2) !== ", ") throw new Error("malformed subjectAltName");
    position = end + 2;
  }
  return names;
}

const uriSansCache = new WeakMap<X509Certificate, string[]>();

/** Every URI SAN of the certificate, in certificate order (SPIFFE or not). */
export function spiffeIdsFromCertificate(cert: X509Certificate): string[] {
  const cached = uriSansCache.get(cert);
  if (cached) return cached.slice();
  const text = cert.subjectAltName;
  const uris = text ? parseSubjectAltNames(text).filter((n) => n.type === "URI").map((n) => n.value) : [];
  uriSansCache.set(cert, uris);
  return uris.slice();
}

/**
 * The SPIFFE ID a TLS peer proves with its certificate. An X509-SVID carries
 * exactly one URI SAN; zero or several, a malformed ID or a foreign trust domain
 * all answer MeshError("unauthenticated") so the caller learns nothing more.
 */
export function peerSpiffeId(cert: X509Certificate, expectedTrustDomain: string): SpiffeId {
  let uris: string[];
  try {
    uris = spiffeIdsFromCertificate(cert);
  } catch {
    throw new MeshError("unauthenticated", "peer certificate has no valid SPIFFE ID");
  }
  const [uri] = uris;
  if (uri === undefined) throw new MeshError("unauthenticated", "peer certificate has no SPIFFE ID");
  if (uris.length > 1) throw new MeshError("unauthenticated", "peer certificate has several URI SANs");
  const id = tryParseSpiffeId(uri);
  if (!id) throw new MeshError("unauthenticated", "peer certificate has no valid SPIFFE ID");
  if (id.trustDomain !== expectedTrustDomain) throw new MeshError("unauthenticated", "peer certificate is from another trust domain");
  return id;
}
