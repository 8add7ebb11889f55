import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // One throwaway PostgreSQL + PostgREST with the project's documents for
    // the whole run (inject("apiUrl"), inject("database"), inject("pgtap")).
    globalSetup: ["node_modules/postgrest-sessions/dist/testing/global-setup.js"],
  },
});
