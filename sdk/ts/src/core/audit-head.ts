// The audit log's head record: the last sequence number and hash the writer
// committed, kept beside the log in `<log>.head` so that cutting lines off the end
// of the log (which leaves a valid, shorter chain) no longer verifies.
//
// Format: two fixed slots of 512 bytes; each holds one JSON object padded with
// spaces and ending in "\n":
//   {"format":"agentmesh-audit-head/1","seq":N,"hash":"<hex>","time":"<ISO>","signature":"<base64>"}
// `signature` (optional) signs signedHeadBytes(seq, hash, time) with the writer's key
// (the server: its CA key; ECDSA with SHA-256). Writers alternate slots, so a torn
// write (crash, power loss) damages only one and the other still holds the previous
// head. Readers take the valid slot with the highest seq.
import { type KeyObject, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

export const auditHeadFormat = "agentmesh-audit-head/1";
export const auditHeadSlotBytes = 512;

/** Where the head record of the log at `logPath` lives. */
export function auditHeadPath(logPath: string): string {
  return `${logPath}.head`;
}

export interface AuditHead {
  seq: number;
  hash: string;
  time: string;
  /** Base64; absent when the writer has no signing key (sidecars). */
  signature?: string;
}

/** The signing key of a head record and the keys whose signatures are accepted. */
export interface AuditHeadKeys {
  /** Signs the bytes of signedHeadBytes; absent for a verify-only holder (`ctl audit verify`). */
  sign?: (data: Buffer) => Buffer;
  /** The signing key's public half, plus earlier ones (a rotated CA). */
  publicKeys: readonly KeyObject[];
}

/**
 * What is signed: a fixed prefix (so the bytes can never be mistaken for any other
 * structure the key signs, such as a certificate's DER), then the fields.
 */
export function signedHeadBytes(head: Pick<AuditHead, "seq" | "hash" | "time">): Buffer {
  return Buffer.from(`${auditHeadFormat}\n${head.seq}\n${head.hash}\n${head.time}\n`, "utf8");
}

/** ECDSA and RSA keys sign a SHA-256 digest; Ed25519 signs the message itself. */
function digestFor(key: KeyObject): string | null {
  return key.asymmetricKeyType === "ed25519" || key.asymmetricKeyType === "ed448" ? null : "sha256";
}

/** A signer for head records with `privateKey` (the server's CA key). */
export function headSignerFor(privateKey: KeyObject): (data: Buffer) => Buffer {
  return (data) => cryptoSign(digestFor(privateKey), data, privateKey);
}

function signatureValid(head: AuditHead, publicKeys: readonly KeyObject[]): boolean {
  if (head.signature === undefined) return false;
  const signature = Buffer.from(head.signature, "base64");
  return publicKeys.some((key) => {
    try {
      return cryptoVerify(digestFor(key), signedHeadBytes(head), key, signature);
    } catch {
      return false;
    }
  });
}

function parseSlot(bytes: Buffer): AuditHead | undefined {
  const text = bytes.toString("utf8").trim();
  if (text === "") return undefined;
  try {
    const value = JSON.parse(text) as Partial<AuditHead> & { format?: unknown };
    if (value.format !== auditHeadFormat) return undefined;
    if (typeof value.seq !== "number" || !Number.isSafeInteger(value.seq) || value.seq < 0) return undefined;
    if (typeof value.hash !== "string" || !/^[0-9a-f]{64}$/.test(value.hash)) return undefined;
    if (typeof value.time !== "string") return undefined;
    if (value.signature !== undefined && typeof value.signature !== "string") return undefined;
    return { seq: value.seq, hash: value.hash, time: value.time, ...(value.signature === undefined ? {} : { signature: value.signature }) };
  } catch {
    return undefined;
  }
}

export type ReadHeadResult =
  | { kind: "missing" }
  /** No slot holds a readable record with an acceptable signature. */
  | { kind: "invalid"; reason: string }
  | { kind: "ok"; head: AuditHead; slot: number; signed: boolean };

/**
 * Reads the newest valid head. With `keys`, a slot counts only when signed by one of
 * them (an unsigned record could have been written by anyone); without keys,
 * signatures are not checked and `signed` says whether one is present.
 */
export async function readAuditHead(headPath: string, keys?: Pick<AuditHeadKeys, "publicKeys">): Promise<ReadHeadResult> {
  let handle: FileHandle;
  try {
    handle = await open(headPath, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { kind: "missing" };
    throw error;
  }
  try {
    const bytes = Buffer.alloc(auditHeadSlotBytes * 2);
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, 0);
    let best: { head: AuditHead; slot: number } | undefined;
    let sawRecord = false;
    for (let slot = 0; slot < 2; slot += 1) {
      const start = slot * auditHeadSlotBytes;
      if (start >= bytesRead) continue;
      const head = parseSlot(bytes.subarray(start, Math.min(bytesRead, start + auditHeadSlotBytes)));
      if (!head) continue;
      sawRecord = true;
      if (keys && !signatureValid(head, keys.publicKeys)) continue;
      if (!best || head.seq > best.head.seq) best = { head, slot };
    }
    if (!best) return { kind: "invalid", reason: sawRecord ? "head record signature invalid" : "head record unreadable" };
    return { kind: "ok", head: best.head, slot: best.slot, signed: best.head.signature !== undefined };
  } finally {
    await handle.close();
  }
}

/** Writes head records into alternating slots of one file. */
export class AuditHeadWriter {
  private constructor(
    private readonly handle: FileHandle,
    private nextSlot: number,
    private readonly sign: ((data: Buffer) => Buffer) | undefined,
  ) {}

  /** Opens (creating) the head file; the first write goes to the slot not holding the current head. */
  static async open(headPath: string, currentSlot: number | undefined, sign: ((data: Buffer) => Buffer) | undefined): Promise<AuditHeadWriter> {
    // Not O_APPEND: the slots are rewritten in place.
    const handle = await open(headPath, constants.O_RDWR | constants.O_CREAT, 0o600);
    return new AuditHeadWriter(handle, currentSlot === undefined ? 0 : 1 - currentSlot, sign);
  }

  async write(head: Omit<AuditHead, "signature">, sync: boolean): Promise<void> {
    const signature = this.sign ? this.sign(signedHeadBytes(head)).toString("base64") : undefined;
    const json = JSON.stringify({ format: auditHeadFormat, seq: head.seq, hash: head.hash, time: head.time, ...(signature === undefined ? {} : { signature }) });
    if (Buffer.byteLength(json) >= auditHeadSlotBytes) throw new Error("audit head record does not fit its slot");
    const slot = Buffer.alloc(auditHeadSlotBytes, 0x20);
    slot.write(json, 0, "utf8");
    slot[auditHeadSlotBytes - 1] = 0x0a;
    await this.handle.write(slot, 0, slot.length, this.nextSlot * auditHeadSlotBytes);
    if (sync) await this.handle.datasync();
    this.nextSlot = 1 - this.nextSlot;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
