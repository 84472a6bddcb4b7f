// Visibility of a data plane that refuses calls: the sidecar's tally (counts by
// reason, warn lines at most once per interval) and the server's conversion of the
// reported totals into counter increments.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { RefusalReports } from "../../services/orchestrator/refusal-reports.js";
import { RefusalTally, refusalReason } from "../../sidecar/refusal-tally.js";
import { logSink } from "../helpers/log-sink.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("RefusalTally", () => {
  it("counts refusals by reason label and logs a warn line at most once per interval, tail included", () => {
    vi.useFakeTimers();
    const clock = new ManualClock();
    const sink = logSink("info");
    const tally = new RefusalTally(sink.log, clock, 10_000);
    const warnLines = () => sink.lines.filter((line) => line.msg === "data plane refusing calls");

    tally.record("signature invalid");
    expect(warnLines()).toEqual([expect.objectContaining({ level: 40, refusals: { signature_invalid: 1 } })]);
    for (let call = 0; call < 500; call += 1) tally.record(call % 2 === 0 ? "signature invalid" : "client certificate expired or not yet valid");
    expect(warnLines()).toHaveLength(1);
    clock.advance(10_000);
    vi.advanceTimersByTime(10_000);
    expect(warnLines()).toHaveLength(2);
    expect(warnLines()[1]).toMatchObject({ refusals: { signature_invalid: 250, client_certificate_expired_or_not_yet_valid: 250 } });
    expect(Object.fromEntries(tally.totalsByReason())).toEqual({ signature_invalid: 251, client_certificate_expired_or_not_yet_valid: 250 });
    tally.close();
  });

  it.each([
    ["signature invalid", "signature_invalid"],
    ["caller may not invoke this capability", "caller_may_not_invoke_this_capability"],
    ["  ", "unknown"],
    ["x".repeat(100), "x".repeat(48)],
  ])("labels %j as %j", (message, label) => {
    expect(refusalReason(message)).toBe(label);
  });
});

describe("RefusalReports", () => {
  it("turns cumulative totals into increments, resent totals into nothing, and a restarted sidecar's lower totals into all new", () => {
    const reports = new RefusalReports();
    expect(reports.record("host-a", [{ reason: "signature_invalid", total: 5 }])).toEqual([{ sidecarId: "host-a", reason: "signature_invalid", count: 5 }]);
    expect(reports.record("host-a", [{ reason: "signature_invalid", total: 5 }])).toEqual([]);
    expect(reports.record("host-a", [{ reason: "signature_invalid", total: 8 }])).toEqual([{ sidecarId: "host-a", reason: "signature_invalid", count: 3 }]);
    expect(reports.record("host-b", [{ reason: "signature_invalid", total: 2 }])).toEqual([{ sidecarId: "host-b", reason: "signature_invalid", count: 2 }]);
    expect(reports.record("host-a", [{ reason: "signature_invalid", total: 1 }])).toEqual([{ sidecarId: "host-a", reason: "signature_invalid", count: 1 }]);
  });
});
