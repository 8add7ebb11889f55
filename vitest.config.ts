import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    globalSetup: ["test/global-setup.ts"],
    reporters: ["default", "json"],
    // Read by .ci/run for its closing "N passed, N failed" line.
    outputFile: { json: "test-results/vitest.json" },
  },
});
