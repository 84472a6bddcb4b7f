import { describe, expect, it } from "vitest";
import { matchesLabelSelector, parseLabelSelector } from "../../sdk/ts/src/core/label-selector.js";

const labels = { env: "prod", tier: "gold", gpu: "" };

describe("label selectors", () => {
  it.each([
    ["env=prod", true],
    ["env=dev", false],
    ["tier in (gold|silver)", true],
    ["tier notin (gold)", false],
    ["gpu", true],
    ["!gpu", false],
    ["!canary", true],
    ["env=prod,tier in (silver)", false],
    ["", true],
  ])("%s matches is %s", (text, expected) => {
    expect(matchesLabelSelector(labels, parseLabelSelector(text))).toBe(expected);
  });
});
