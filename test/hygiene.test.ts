// Test files leave nothing behind, even when a filter skips all their tests
// (`npx vitest run -t "logout"`): temporary directories are made in hooks
// that run only with the tests that need them, never at collection time.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");

it("collecting every test file with a filter that matches nothing leaves the temp directory empty", () => {
  const temp = mkdtempSync(join(tmpdir(), "hygiene-"));
  try {
    execFileSync(
      join(ROOT, "node_modules", ".bin", "vitest"),
      ["run", "-t", "a name no test has, 7c1f", "--reporter=dot", "--outputFile.json=/dev/null"],
      {
        cwd: ROOT,
        // The suite's own deployment is not what this checks: point it at a stand-in.
        env: {
          ...process.env,
          TMPDIR: temp,
          TEST_API_URL: "http://127.0.0.1:9",
          TEST_API_DATABASE_URL: "postgres://nobody@127.0.0.1:9/none",
          TEST_API_SKIP_PGTAP: "1",
        },
        stdio: "pipe",
      },
    );
    expect(readdirSync(temp)).toEqual([]);
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}, 120_000);
