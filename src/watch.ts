// Watch mode: every save of the document (or of one of its migrations)
// reloads the project into a fresh database and points the API at it, while
// the previous version keeps serving until the new one has loaded.
//
// One reload runs at a time. Saves during a reload are remembered and, when
// it ends, one more reload reads the files as they are then, so the latest
// content always wins and no save is lost. A save that leaves the compiled
// SQL the same as the version serving (prose only) does not reload.
//
// Each version lives in its own database (app_1, app_2, ...) served by its
// own PostgREST on an internal port, behind a small proxy on the user's port
// (src/proxy.ts): the switch is a pointer flip, with no gap in service. The
// rows of tables whose shape did not change come along (src/carry-over.ts),
// so users, todos and the browser's session survive a save.
//
// A version's checks (its pgTAP suite, and with `runTests` the HTTP suite)
// run after it is serving and never hold up the next save: a newer version
// cancels them.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import chokidar from "chokidar";
import { type CarryOverSummary, carryOver, describeCarryOver } from "./carry-over.js";
import { registerCleanup } from "./cleanup.js";
import { type Cluster, startCluster } from "./cluster.js";
import { withClient } from "./db.js";
import {
  applySessionSettings,
  createDatabase,
  LOCAL_SESSION_SETTINGS,
  loadDocuments,
  runDatabaseTests,
} from "./deploy.js";
import { type CompiledDocument, compileMarkdown, includedCode } from "./md2sql.js";
import { freePort } from "./net.js";
import { describeFailures, hasPgTap, type PgTapRun } from "./pgtap.js";
import {
  type IdentityMode,
  identitySettings,
  type PostgrestProcess,
  startPostgrest,
} from "./postgrest.js";
import {
  describeDocuments,
  migrationsDirOf,
  projectDocuments,
  readProjectConfig,
} from "./project.js";
import { type FrontProxy, startFrontProxy } from "./proxy.js";

export interface WatchOptions {
  /** One document instead of the project's list. */
  file?: string;
  /** The project's directory, with its package.json (default: the working directory). */
  cwd?: string;
  /** The document's migrations (default: migrations/ beside it). */
  migrationsDir?: string;
  port?: number;
  tests?: boolean;
  fixtures?: boolean;
  pgBin?: string;
  /** How requests are identified (default pre-request; see sessions.sql.md). */
  identity?: IdentityMode;
  /** How long the files must stay unchanged before a reload starts (ms). */
  settleMs?: number;
  /**
   * After each reload, also run these vitest arguments (test files, filters)
   * against the new version, with TEST_API_URL and TEST_API_DATABASE_URL set.
   */
  runTests?: string[];
  /** Progress and per-reload lines. */
  log?: (line: string) => void;
  /** Called after every reload attempt, for tests and benchmarks. */
  onReload?: (outcome: ReloadOutcome) => void;
}

export type ReloadOutcome =
  | {
      kind: "loaded";
      version: number;
      database: string;
      /** What came over from the previous version (undefined for the first). */
      carried?: CarryOverSummary;
      /** The pgTAP suite, run after the switch; undefined when not run or cancelled. */
      pgtap: Promise<PgTapRun | undefined>;
      ms: number;
    }
  | { kind: "load-failed"; report: string; ms: number }
  | { kind: "unchanged"; ms: number };

export interface WatchSession {
  readonly url: string;
  /** The project's frontend, when it has one. */
  readonly demoUrl: string | undefined;
  readonly cluster: Cluster;
  /** The database the API serves now. */
  currentDatabase(): string;
  /** Resolves when no reload is running or pending. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

interface ServedVersion {
  version: number;
  database: string;
  code: string;
  postgrest: PostgrestProcess;
  /** Stops this version's checks when a newer version replaces it. */
  cancelChecks: () => void;
}

function timestamp(): string {
  return new Date().toISOString().slice(11, 23);
}

async function dropDatabase(cluster: Cluster, database: string): Promise<void> {
  await withClient(cluster.connectionConfig(), (admin) =>
    admin.query(`drop database if exists ${admin.escapeIdentifier(database)} with (force)`),
  );
}

/** The superuser URL of a database in the cluster, for the HTTP suite's direct checks. */
function databaseUrl(cluster: Cluster, database: string): string {
  return cluster.uri(cluster.superuser, database);
}

interface TestRunSummary {
  passed: number;
  failed: number;
  failures: string[];
}

/**
 * Runs vitest against one version. Resolves with the counts, or undefined
 * when it was cancelled (killed) first.
 */
function runHttpSuite(
  args: string[],
  env: Record<string, string>,
): { result: Promise<TestRunSummary | undefined>; cancel: () => void } {
  const reportDir = mkdtempSync(join(tmpdir(), "pgs-watch-tests-"));
  const report = join(reportDir, "report.json");
  // The project's own vitest, else the toolkit's.
  const vitest =
    [process.cwd(), dirname(import.meta.dirname)]
      .map((root) => join(root, "node_modules", ".bin", "vitest"))
      .find((path) => existsSync(path)) ?? "vitest";
  let child: ChildProcess | undefined;
  let cancelled = false;
  const result = new Promise<TestRunSummary | undefined>((done) => {
    child = spawn(
      vitest,
      ["run", ...args, "--reporter=json", `--outputFile.json=${report}`, "--reporter=dot"],
      { env: { ...process.env, ...env }, stdio: "ignore", detached: true },
    );
    child.once("error", () => done({ passed: 0, failed: 1, failures: ["vitest did not start"] }));
    child.once("exit", () => {
      if (cancelled) return done(undefined);
      try {
        const json = JSON.parse(readFileSync(report, "utf8")) as {
          numPassedTests: number;
          numFailedTests: number;
          testResults: Array<{
            assertionResults: Array<{ status: string; fullName: string }>;
            message?: string;
            name: string;
          }>;
        };
        const failures = json.testResults.flatMap((file) => [
          ...file.assertionResults.filter((t) => t.status === "failed").map((t) => t.fullName),
          ...(file.message ? [`${basename(file.name)}: ${file.message.split("\n")[0]}`] : []),
        ]);
        done({ passed: json.numPassedTests, failed: json.numFailedTests, failures });
      } catch {
        done({ passed: 0, failed: 1, failures: ["vitest wrote no report (see its output)"] });
      } finally {
        rmSync(reportDir, { recursive: true, force: true });
      }
    });
  });
  const cancel = () => {
    cancelled = true;
    // The whole process group: vitest's workers too.
    if (child?.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(reportDir, { recursive: true, force: true });
  };
  return { result, cancel };
}

export async function watchDocument(options: WatchOptions = {}): Promise<WatchSession> {
  const log = options.log ?? (() => {});
  const project = {
    ...(options.file ? { file: options.file } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    migrationsDir: migrationsDirOf(options),
  };
  // What the reload lines call the project.
  const file = describeDocuments(projectDocuments(project).filter((d) => !d.migration));
  const settleMs = options.settleMs ?? 100;
  const wantTests = options.tests ?? true;

  // The proxy first: a port in use fails before anything else starts.
  const frontend = options.file ? undefined : readProjectConfig(options.cwd).frontend;
  const proxy: FrontProxy = await startFrontProxy(options.port ?? 3000, undefined, frontend);
  let cluster: Cluster;
  try {
    cluster = await startCluster({ log, ...(options.pgBin ? { pgBin: options.pgBin } : {}) });
  } catch (error) {
    await proxy.close();
    throw error;
  }
  let testsAvailable = false;
  let served: ServedVersion | undefined;
  let versionCounter = 0;

  const compile = (): CompiledDocument[] =>
    projectDocuments(project).map((doc) =>
      compileMarkdown(readFileSync(doc.path), {
        fileName: doc.path,
        includeFixtures: options.fixtures ?? true,
        includeTests: testsAvailable,
      }),
    );

  /** Prints a version's check results when they come, unless a newer version cancelled them. */
  const startChecks = (
    version: number,
    database: string,
    docs: CompiledDocument[],
  ): { pgtap: Promise<PgTapRun | undefined>; cancel: () => void } => {
    let cancelled = false;
    let cancelHttp = () => {};
    const started = performance.now();
    const seconds = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
    const pgtap: Promise<PgTapRun | undefined> =
      testsAvailable && docs.some((doc) => doc.blocks.some((block) => block.tag === "tests"))
        ? runDatabaseTests(cluster, database, docs).then(
            (run) => {
              if (cancelled) return undefined;
              if (!run.ok) for (const line of describeFailures(run)) log(line);
              const tests = run.ok
                ? `pgTAP ${run.passed} passed`
                : `pgTAP ${run.passed} passed, ${run.failed} FAILED (serving, but FAILING its tests)`;
              log(`[${timestamp()}] version ${version}: ${tests} (${seconds()})`);
              return run;
            },
            (error: Error) => {
              if (!cancelled)
                log(`[${timestamp()}] version ${version}: pgTAP run failed: ${error.message}`);
              return undefined;
            },
          )
        : Promise.resolve(undefined);
    if (options.runTests) {
      const args = options.runTests;
      void pgtap.then(() => {
        if (cancelled) return;
        const httpStarted = performance.now();
        const run = runHttpSuite(args, {
          TEST_API_URL: proxy.url,
          TEST_API_DATABASE_URL: databaseUrl(cluster, database),
          // The pgTAP suite has just run; the HTTP run need not repeat it.
          TEST_API_SKIP_PGTAP: "1",
        });
        cancelHttp = run.cancel;
        void run.result.then((summary) => {
          if (!summary || cancelled) return;
          const took = `${((performance.now() - httpStarted) / 1000).toFixed(1)} s`;
          log(
            `[${timestamp()}] version ${version}: HTTP suite ${summary.passed} passed` +
              `${summary.failed > 0 ? `, ${summary.failed} FAILED` : ""} (${took})`,
          );
          for (const failure of summary.failures.slice(0, 10)) log(`    not ok: ${failure}`);
        });
      });
    }
    return {
      pgtap,
      cancel: () => {
        cancelled = true;
        cancelHttp();
      },
    };
  };

  /** Loads the project as a new version; returns the outcome. */
  const loadVersion = async (): Promise<ReloadOutcome> => {
    const started = performance.now();
    const ms = () => Math.round(performance.now() - started);
    let docs: CompiledDocument[];
    try {
      docs = compile();
    } catch (error) {
      return { kind: "load-failed", report: (error as Error).message, ms: ms() };
    }
    // Compare code only: a prose edit that moves lines is still the same
    // program. Compared with what serves, not with the last attempt, so that
    // saving again after a failure always tries again.
    const code = docs.map(includedCode).join("\n\u0000\u0000\n");
    if (served && code === served.code) return { kind: "unchanged", ms: ms() };
    // The number is taken for good only by a version that loads: a failed
    // load leaves the next one its number.
    const version = versionCounter + 1;
    const database = `app_${version}`;
    await createDatabase(cluster, database);
    let carried: CarryOverSummary | undefined;
    try {
      await loadDocuments(cluster, database, docs);
      await applySessionSettings(cluster, database, LOCAL_SESSION_SETTINGS);
      if (served) carried = await carryOver(cluster, served.database, database);
    } catch (error) {
      await dropDatabase(cluster, database);
      const failure = error as { report?: string; message: string };
      return { kind: "load-failed", report: failure.report ?? failure.message, ms: ms() };
    }
    versionCounter = version;
    const postgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      publicUrl: proxy.url,
      logFile: `${cluster.dir}/postgrest-${version}.log`,
      ...identitySettings(options.identity),
    });
    const previous = served;
    proxy.setTarget(postgrest.port);
    previous?.cancelChecks();
    const checks = startChecks(version, database, docs);
    served = { version, database, code, postgrest, cancelChecks: checks.cancel };
    if (previous) {
      await proxy.drained(previous.postgrest.port);
      await previous.postgrest.stop();
      await dropDatabase(cluster, previous.database);
    }
    return {
      kind: "loaded",
      version,
      database,
      pgtap: checks.pgtap,
      ms: ms(),
      ...(carried ? { carried } : {}),
    };
  };

  const report = (outcome: ReloadOutcome) => {
    const at = `[${timestamp()}]`;
    if (outcome.kind === "unchanged") {
      log(
        `${at} ${file}: same code as version ${served?.version} (prose only), not reloaded (${outcome.ms} ms)`,
      );
    } else if (outcome.kind === "load-failed") {
      log(outcome.report);
      const still = served ? `still serving version ${served.version}` : "nothing served";
      log(`${at} ${file}: load FAILED, ${still} (${outcome.ms} ms)`);
    } else {
      const kept = outcome.carried ? `, ${describeCarryOver(outcome.carried)}` : "";
      const tests = testsAvailable ? ", pgTAP running" : "";
      log(
        `${at} ${file}: version ${outcome.version} serving from ${outcome.database}${kept}${tests} (${outcome.ms} ms)`,
      );
    }
    options.onReload?.(outcome);
  };

  // The single-flight reload loop.
  let running: Promise<void> | undefined;
  let pending = false;
  let settleTimer: NodeJS.Timeout | undefined;
  const idleWaiters: Array<() => void> = [];
  const reload = (): void => {
    if (running) {
      pending = true;
      return;
    }
    running = (async () => {
      do {
        pending = false;
        try {
          report(await loadVersion());
        } catch (error) {
          log(`[${timestamp()}] ${file}: reload error: ${(error as Error).message}`);
        }
      } while (pending);
      running = undefined;
      if (!settleTimer) for (const wake of idleWaiters.splice(0)) wake();
    })();
  };
  const scheduleReload = () => {
    if (settleTimer) clearTimeout(settleTimer);
    settleTimer = setTimeout(() => {
      settleTimer = undefined;
      reload();
    }, settleMs);
  };

  try {
    testsAvailable = wantTests && (await withClient(cluster.connectionConfig(), hasPgTap));
    if (wantTests && !testsAvailable) log("pgTAP is not installed: test blocks are not loaded");
    // A first version that fails to load is reported like any other; the
    // proxy answers 503 until a save fixes it.
    report(await loadVersion());
  } catch (error) {
    await proxy.close();
    served?.cancelChecks();
    await served?.postgrest.stop();
    await cluster.stop();
    throw error;
  }

  // Watch directories, not files: editors that save by renaming a new file
  // over the old one, and git checkout/stash, replace the inode.
  // The directory of every document, and the migrations directory, one
  // level deep: that directory may not exist yet when watching starts.
  const documentPaths = new Set(
    projectDocuments(project)
      .filter((d) => !d.migration)
      .map((d) => resolve(d.path)),
  );
  const migrationsPath = resolve(project.migrationsDir);
  const roots = [
    ...new Set([...documentPaths].map((p) => dirname(p)).concat(dirname(migrationsPath))),
  ];
  const watcher = chokidar.watch(roots, { depth: 1, ignoreInitial: true });
  watcher.on("all", (_event, changed) => {
    const path = resolve(changed);
    if (documentPaths.has(path) || path === migrationsPath || dirname(path) === migrationsPath) {
      scheduleReload();
    }
  });
  await new Promise<void>((r) => watcher.once("ready", () => r()));

  let stopping: Promise<void> | undefined;
  // Ctrl-C stops the session before the cluster under it (the newest entry
  // is stopped first): a pgTAP run in progress is cancelled, not cut off
  // mid-query with a connection error.
  const unregister = registerCleanup({
    name: "watch mode",
    stop: () => stop(),
    lastResort: () => {},
  });
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      unregister();
      if (settleTimer) clearTimeout(settleTimer);
      await watcher.close();
      await running?.catch(() => {});
      served?.cancelChecks();
      await proxy.close();
      await served?.postgrest.stop();
      await cluster.stop();
    })();
    return stopping;
  };
  return {
    url: proxy.url,
    demoUrl: proxy.demoUrl,
    cluster,
    currentDatabase: () => served?.database ?? "",
    idle: () =>
      !running && !settleTimer ? Promise.resolve() : new Promise((r) => idleWaiters.push(r)),
    stop,
  };
}
