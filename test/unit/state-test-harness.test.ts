import { describe, expect, it } from "vitest";
import { findBinary } from "../helpers/server-binaries.js";

describe("throwaway server harness", () => {
  it("names the missing binary and how to install it in one line", () => {
    expect(() => findBinary(["/nonexistent/bin/redis-server"], "sudo apt-get install -y redis-server")).toThrow(
      /^\/nonexistent\/bin\/redis-server not found; install it with: sudo apt-get install -y redis-server$/,
    );
  });
});
