import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { Change, ChangeListener, ChangesResult, ResyncReason } from "./ports.js";

// Pieces every ChangeLog adapter shares: the resync rule, page sizing, listeners.

export const defaultChangesLimit = 1000;
export const maxChangesLimit = 10_000;

/**
 * The rule that makes resumes across restarts safe: another epoch, a revision the
 * store never reached (it was replaced by an older copy), or one whose successors
 * were compacted, all answer resync instead of a silently incomplete stream.
 */
export function resyncReason(afterRevision: number, callerEpoch: string | undefined, store: { epoch: string; revision: number; compactedRevision: number }): ResyncReason | undefined {
  if (callerEpoch !== undefined && callerEpoch !== store.epoch) return "epoch";
  if (afterRevision > store.revision) return "ahead";
  if (afterRevision < store.compactedRevision) return "compacted";
  return undefined;
}

/** Builds the answer from changes read after the caller's revision, cut at a transaction boundary. */
export function changesPage(epoch: string, afterRevision: number, currentRevision: number, changes: Change[]): ChangesResult {
  const revision = changes.length > 0 ? (changes[changes.length - 1] as Change).revision : Math.max(afterRevision, currentRevision);
  return { kind: "changes", epoch, changes, revision, more: revision < currentRevision };
}

export function validLimit(limit: number | undefined): number {
  if (limit === undefined) return defaultChangesLimit;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new MeshError("invalidArgument", "limit must be a positive integer");
  return Math.min(limit, maxChangesLimit);
}

/** Wake-up listeners; one that throws must not stop the others or the commit path. */
export class ChangeListeners {
  private readonly listeners = new Set<ChangeListener>();

  add(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  notify(revision: number): void {
    for (const listener of this.listeners) {
      try {
        listener(revision);
      } catch {
        // A hint only: the listener catches up by reading changesSince anyway.
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}

/** Bytes handed out are copies: a caller changing them must not change the store. */
export function copyBytes(value: Uint8Array): Uint8Array {
  return new Uint8Array(value);
}
