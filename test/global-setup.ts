// The suite's global setup: the toolkit's own (one deploy-local instance of
// the project for the whole run; see src/testing/global-setup.ts), after
// installing what this repository's tests need from the distribution when
// running as root on a fresh Debian/Ubuntu machine (pgTAP, Chromium for
// the end-to-end tests, nginx for the production recipe), so that `npm ci && npm test` is all it takes.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import * as toolkit from "../src/testing/global-setup.js";

function installSystemPackages(): void {
  if (process.getuid?.() !== 0 || !existsSync("/usr/bin/apt-get") || process.env.PG_BIN) return;
  execFileSync(
    "bash",
    [join(import.meta.dirname, "..", "scripts", "setup-system.sh"), "chromium", "nginx"],
    {
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
}

export async function setup(project: TestProject): Promise<void> {
  installSystemPackages();
  await toolkit.setup(project);
}

export const teardown = toolkit.teardown;
