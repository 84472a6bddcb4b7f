import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    // Two cores: more workers only fight over them and make e2e timings noisy.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
