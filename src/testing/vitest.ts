// Helpers for a project's vitest suite (with the global setup of
// global-setup.ts): the deployment under test, and its pgTAP suite as
// vitest tests.

import pg from "pg";
import { describe, expect, inject, it } from "vitest";
import "./provided.js";

/** The API under test. */
export function apiUrl(): string {
  return inject("apiUrl");
}

/** Runs `work` with a fresh superuser connection to the database under test. */
export async function withDatabase<T>(
  work: (db: pg.Client) => Promise<T>,
  config: pg.ClientConfig = inject("database"),
): Promise<T> {
  const db = new pg.Client(config);
  await db.connect();
  try {
    return await work(db);
  } finally {
    await db.end();
  }
}

/**
 * The in-database pgTAP suite, one vitest test per pgTAP check, so that a
 * failure names the exact check and its have/want. Call it at the top level
 * of a test file.
 */
export function pgtapSuite(title = "pgTAP suite"): void {
  const run = inject("pgtap");
  describe(title, () => {
    it("was loaded and found test functions", () => {
      expect(run, "the global setup did not load the test blocks").toBeDefined();
      expect(run?.functions.length).toBeGreaterThan(0);
    });
    for (const fn of run?.functions ?? []) {
      describe(fn.functionName, () => {
        for (const problem of fn.problems) {
          it(problem, () => {
            expect.fail(`${fn.functionName}: ${problem}\n${fn.tap}`);
          });
        }
        fn.checks.forEach((check, index) => {
          it(`${index + 1} - ${check.name || "(unnamed check)"}`, () => {
            if (!check.ok && !check.todo) {
              expect.fail([`not ok: ${check.name}`, ...check.diagnostics].join("\n"));
            }
          });
        });
      });
    }
  });
}
