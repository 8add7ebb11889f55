// The suite's global setup: the toolkit's own (one deploy-local instance of
// the project for the whole run; see src/testing/global-setup.ts), after
// installing what this repository's tests need from the distribution when
// running as root on Debian/Ubuntu (Chromium for the end-to-end tests, nginx
// for the production recipe, pgTAP for a Debian PostgreSQL server), so that
// `npm ci && npm test` is all it takes. Never a PostgreSQL server, never an
// upgrade (scripts/setup-system.sh); POSTGREST_SESSIONS_NO_APT=1 installs
// nothing.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import * as toolkit from "../src/testing/global-setup.js";

function installSystemPackages(): void {
  if (process.getuid?.() !== 0 || !existsSync("/usr/bin/apt-get") || process.env.PG_BIN) return;
  if (process.env.POSTGREST_SESSIONS_NO_APT === "1") {
    process.stderr.write(
      "POSTGREST_SESSIONS_NO_APT=1: installing nothing; the browser and nginx tests need chromium and nginx\n",
    );
    return;
  }
  // Never an upgrade of what is installed: the script refuses (exit 3) and says what it would change.
  try {
    execFileSync(
      "bash",
      [join(import.meta.dirname, "..", "scripts", "setup-system.sh"), "chromium", "nginx"],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
  } catch (error) {
    if ((error as { status?: number }).status !== 3) throw error;
    process.stderr.write(
      "\n*** chromium and nginx were not installed (see above): the end-to-end and production recipe tests will fail until they are. ***\n\n",
    );
  }
}

export async function setup(project: TestProject): Promise<void> {
  installSystemPackages();
  await toolkit.setup(project);
}

export const teardown = toolkit.teardown;
