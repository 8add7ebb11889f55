// The in-database pgTAP suite of app.sql.md, one vitest test per check, so
// that a failure names the exact check and its diagnostics.

import { describe, expect, inject, it } from "vitest";

const run = inject("pgtap");

describe("pgTAP suite of app.sql.md", () => {
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
