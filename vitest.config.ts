import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Most test time is spent waiting for PostgreSQL, PostgREST and the
    // browser, so two files at a time pay off even on two cores (vitest's
    // default there is one).
    maxWorkers: Math.max(2, availableParallelism() - 1),
    minWorkers: 1,
    globalSetup: ["test/global-setup.ts"],
    reporters: ["default", "json"],
    // Read by .ci/run for its closing "N passed, N failed" line.
    outputFile: { json: "test-results/vitest.json" },
  },
});
