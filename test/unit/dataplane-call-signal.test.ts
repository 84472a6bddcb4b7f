import { describe, expect, it } from "vitest";
import { CallCancellation } from "../../sdk/ts/src/core/dataplane/call-signal.js";

describe("CallCancellation", () => {
  it("runs each listener once with the reason set, and not after removal", () => {
    const cancellation = new CallCancellation();
    const heard: unknown[] = [];
    const kept = () => heard.push(["kept", cancellation.reason]);
    const removed = () => heard.push("removed");
    cancellation.addEventListener("abort", kept);
    cancellation.addEventListener("abort", removed);
    cancellation.removeEventListener("abort", removed);
    expect(cancellation.aborted).toBe(false);
    cancellation.abort("gone");
    cancellation.abort("again");
    expect(cancellation.aborted).toBe(true);
    expect(cancellation.reason).toBe("gone");
    expect(heard).toEqual([["kept", "gone"]]);
  });

  it("does not call a listener added after the abort (callers check aborted first)", () => {
    const cancellation = new CallCancellation();
    cancellation.abort();
    let called = false;
    cancellation.addEventListener("abort", () => {
      called = true;
    });
    expect(called).toBe(false);
    expect(cancellation.signal.aborted).toBe(true);
  });
});
