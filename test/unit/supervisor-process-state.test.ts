import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import {
  IllegalTransitionError,
  type ProcessState,
  canTransition,
  isRunning,
  transition,
} from "../../sidecar/supervisor/process-state.js";

const allStates: ProcessState[] = ["starting", "ready", "unresponsive", "draining", "stopping", "stopped", "backoff", "failed"];

const legal: [ProcessState, ProcessState][] = [
  ["stopped", "starting"],
  ["starting", "ready"],
  ["starting", "backoff"],
  ["starting", "failed"],
  ["starting", "stopped"],
  ["starting", "stopping"],
  ["ready", "draining"],
  ["ready", "stopping"],
  ["ready", "backoff"],
  ["ready", "failed"],
  ["ready", "stopped"],
  ["ready", "unresponsive"],
  ["unresponsive", "ready"],
  ["unresponsive", "stopping"],
  ["unresponsive", "backoff"],
  ["unresponsive", "failed"],
  ["unresponsive", "stopped"],
  ["draining", "stopping"],
  ["draining", "stopped"],
  ["stopping", "stopped"],
  ["backoff", "starting"],
  ["backoff", "stopped"],
  ["failed", "starting"],
  ["failed", "stopped"],
];

const isLegal = (from: ProcessState, to: ProcessState): boolean =>
  legal.some(([legalFrom, legalTo]) => legalFrom === from && legalTo === to);

const illegal = allStates.flatMap((from) =>
  allStates.filter((to) => !isLegal(from, to)).map((to): [ProcessState, ProcessState] => [from, to]),
);

describe("process state transitions", () => {
  it.each(legal)("allows %s -> %s", (from, to) => {
    expect(canTransition(from, to)).toBe(true);
    expect(transition(from, to)).toBe(to);
  });

  it.each(illegal)("rejects %s -> %s with IllegalTransitionError", (from, to) => {
    expect(canTransition(from, to)).toBe(false);
    let caught: unknown;
    try {
      transition(from, to);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(IllegalTransitionError);
    expect(caught).toBeInstanceOf(MeshError);
    expect(caught).toMatchObject({ from, to, kind: "failedPrecondition" });
  });

  it("never restarts a stopping or draining process: they can only end stopped", () => {
    for (const state of ["draining", "stopping"] as const) {
      expect(canTransition(state, "backoff")).toBe(false);
      expect(canTransition(state, "starting")).toBe(false);
      expect(canTransition(state, "failed")).toBe(false);
    }
  });

  it.each([
    ["starting", true],
    ["ready", true],
    ["unresponsive", true],
    ["draining", true],
    ["stopping", true],
    ["stopped", false],
    ["backoff", false],
    ["failed", false],
  ] as const)("isRunning(%s) is %s", (state, running) => {
    expect(isRunning(state)).toBe(running);
  });
});
