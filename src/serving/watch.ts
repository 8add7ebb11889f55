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
//
// Most saves change one document, usually the last (the application, or its
// newest migration), while the session module before it is thousands of
// lines. So the documents before the one being edited are loaded once into a
// template database (app_base_N), and each version starts as a copy of it
// (CREATE DATABASE ... TEMPLATE, tens of milliseconds) and loads only the
// rest. A save that changes a document inside the template makes a new one.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import chokidar from "chokidar";
import { registerCleanup } from "../cleanup.js";
import { type CompiledDocument, compileMarkdown, includedCode } from "../document/md2sql.js";
import { describeFailures, hasPgTap, type PgTapRun } from "../document/pgtap.js";
import {
  describeDocuments,
  migrationsDirOf,
  projectDocuments,
  readProjectConfig,
} from "../document/project.js";
import { freePort, PortInUseError } from "../net.js";
import { type Cluster, startCluster } from "../postgres/cluster.js";
import { withClient } from "../postgres/db.js";
import { type CarryOverSummary, carryOver, describeCarryOver } from "./carry-over.js";
import {
  applySessionSettings,
  createDatabase,
  LOCAL_SESSION_SETTINGS,
  type LocalDeploymentOptions,
  loadDocuments,
  runDatabaseTests,
} from "./deploy.js";
import { identitySettings, type PostgrestProcess, startPostgrest } from "./postgrest.js";
import { type FrontProxy, startFrontProxy } from "./proxy.js";

/** What a watch session shares with deploy-local: the project, ports, blocks, binaries, identity. */
export interface WatchOptions
  extends Pick<
    LocalDeploymentOptions,
    "file" | "cwd" | "migrationsDir" | "port" | "tests" | "fixtures" | "pgBin" | "identity"
  > {
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
  /** Each document's code, to find the first one a save changed. */
  codes: string[];
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
    [process.cwd(), join(import.meta.dirname, "..", "..")]
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

/**
 * The versions of a project being served: each save loads a new version into
 * a database of its own, switches the front proxy to it, and starts its
 * checks; the previous one is stopped once drained.
 */
/** A database holding the leading documents, which versions start as copies of. */
interface Template {
  database: string;
  /** The code of the documents it holds, in order. */
  codes: string[];
}

class Versions {
  testsAvailable = false;
  served: ServedVersion | undefined;
  private versionCounter = 0;
  private template: Template | undefined;
  private templateCounter = 0;
  /** What the reload lines call the project. */
  readonly name: string;

  constructor(
    private readonly options: WatchOptions,
    private readonly project: { file?: string; cwd?: string; migrationsDir: string },
    readonly cluster: Cluster,
    readonly proxy: FrontProxy,
    private readonly log: (line: string) => void,
  ) {
    this.name = describeDocuments(projectDocuments(project).filter((d) => !d.migration));
  }

  private compile(): CompiledDocument[] {
    return projectDocuments(this.project).map((doc) =>
      compileMarkdown(readFileSync(doc.path), {
        fileName: doc.path,
        includeFixtures: this.options.fixtures ?? true,
        includeTests: this.testsAvailable,
      }),
    );
  }

  /** Loads the project as a new version; returns the outcome. */
  async load(): Promise<ReloadOutcome> {
    const started = performance.now();
    const ms = () => Math.round(performance.now() - started);
    let docs: CompiledDocument[];
    try {
      docs = this.compile();
    } catch (error) {
      return { kind: "load-failed", report: (error as Error).message, ms: ms() };
    }
    // Compare code only: a prose edit that moves lines is still the same
    // program. Compared with what serves, not with the last attempt, so that
    // saving again after a failure always tries again.
    const codes = docs.map(includedCode);
    const code = codes.join("\n\u0000\u0000\n");
    if (this.served && code === this.served.code) return { kind: "unchanged", ms: ms() };
    // The number is taken for good only by a version that loads: a failed
    // load leaves the next one its number.
    const version = this.versionCounter + 1;
    const database = `app_${version}`;
    const { cluster } = this;
    let carried: CarryOverSummary | undefined;
    try {
      const base = await this.templateFor(docs, codes);
      await createDatabase(cluster, database, base?.database);
      await loadDocuments(cluster, database, docs.slice(base?.codes.length ?? 0));
      await applySessionSettings(cluster, database, LOCAL_SESSION_SETTINGS);
      if (this.served) carried = await carryOver(cluster, this.served.database, database);
    } catch (error) {
      await dropDatabase(cluster, database);
      const failure = error as { report?: string; message: string };
      return { kind: "load-failed", report: failure.report ?? failure.message, ms: ms() };
    }
    let postgrest: PostgrestProcess;
    try {
      postgrest = await this.startPostgrest(database, version);
    } catch (error) {
      await dropDatabase(cluster, database);
      throw error;
    }
    this.versionCounter = version;
    const previous = this.served;
    this.proxy.setTarget(postgrest.port);
    previous?.cancelChecks();
    const checks = this.startChecks(version, database, docs);
    this.served = { version, database, code, codes, postgrest, cancelChecks: checks.cancel };
    if (previous) {
      await this.proxy.drained(previous.postgrest.port);
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
  }

  /**
   * A PostgREST for one version, on free ports. A port the kernel called free
   * can be taken before PostgREST binds it (by an outgoing connection, say):
   * then fresh ports, twice more.
   */
  private async startPostgrest(database: string, version: number): Promise<PostgrestProcess> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startPostgrest({
          dbUri: this.cluster.uri("authenticator", database),
          port: await freePort(),
          publicUrl: this.proxy.url,
          logFile: `${this.cluster.dir}/postgrest-${version}${attempt > 1 ? `-${attempt}` : ""}.log`,
          ...identitySettings(this.options.identity),
        });
      } catch (error) {
        if (!(error instanceof PortInUseError) || attempt === 3) throw error;
      }
    }
  }

  /**
   * The template holding the documents before the first one this save
   * changed (before the last one, for the first version), made anew when the
   * one there is does not match; none when that is no document at all.
   */
  private async templateFor(
    docs: CompiledDocument[],
    codes: string[],
  ): Promise<Template | undefined> {
    const previous = this.served?.codes ?? [];
    let changed = previous.length > 0 ? 0 : codes.length - 1;
    while (previous.length > 0 && changed < codes.length && codes[changed] === previous[changed])
      changed++;
    const held = this.template;
    if (held && held.codes.length <= changed && held.codes.every((c, i) => c === codes[i])) {
      return held;
    }
    if (held) {
      this.template = undefined;
      await dropDatabase(this.cluster, held.database);
    }
    if (changed < 1) return undefined;
    const database = `app_base_${++this.templateCounter}`;
    await createDatabase(this.cluster, database);
    try {
      await loadDocuments(this.cluster, database, docs.slice(0, changed));
    } catch (error) {
      await dropDatabase(this.cluster, database);
      throw error;
    }
    this.template = { database, codes: codes.slice(0, changed) };
    return this.template;
  }

  /** Prints a version's check results when they come, unless a newer version cancelled them. */
  private startChecks(
    version: number,
    database: string,
    docs: CompiledDocument[],
  ): { pgtap: Promise<PgTapRun | undefined>; cancel: () => void } {
    const { cluster, log, options } = this;
    let cancelled = false;
    let cancelHttp = () => {};
    const started = performance.now();
    const seconds = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
    const pgtap: Promise<PgTapRun | undefined> =
      this.testsAvailable && docs.some((doc) => doc.blocks.some((block) => block.tag === "tests"))
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
          TEST_API_URL: this.proxy.url,
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
  }

  /** The reload line for an outcome. */
  report(outcome: ReloadOutcome): void {
    const at = `[${timestamp()}]`;
    const { log, name } = this;
    if (outcome.kind === "unchanged") {
      log(
        `${at} ${name}: same code as version ${this.served?.version} (prose only), not reloaded (${outcome.ms} ms)`,
      );
    } else if (outcome.kind === "load-failed") {
      log(outcome.report);
      const still = this.served ? `still serving version ${this.served.version}` : "nothing served";
      log(`${at} ${name}: load FAILED, ${still} (${outcome.ms} ms)`);
    } else {
      const kept = outcome.carried ? `, ${describeCarryOver(outcome.carried)}` : "";
      const tests = this.testsAvailable ? ", pgTAP running" : "";
      log(
        `${at} ${name}: version ${outcome.version} serving from ${outcome.database}${kept}${tests} (${outcome.ms} ms)`,
      );
    }
    this.options.onReload?.(outcome);
  }

  /** Stops what serves and the cluster under it. */
  async stop(): Promise<void> {
    this.served?.cancelChecks();
    await this.proxy.close();
    await this.served?.postgrest.stop();
    await this.cluster.stop();
  }
}

/**
 * One reload at a time: saves that come while one runs make one more run
 * afterwards, however many they were, and it loads what is there by then.
 * Files must settle first (editors write in steps).
 */
class Reloads {
  private running: Promise<void> | undefined;
  private pending = false;
  private settleTimer: NodeJS.Timeout | undefined;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(
    private readonly work: () => Promise<void>,
    private readonly settleMs: number,
  ) {}

  schedule(): void {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.run();
    }, this.settleMs);
  }

  private run(): void {
    if (this.running) {
      this.pending = true;
      return;
    }
    this.running = (async () => {
      do {
        this.pending = false;
        await this.work();
      } while (this.pending);
      this.running = undefined;
      if (!this.settleTimer) for (const wake of this.idleWaiters.splice(0)) wake();
    })();
  }

  idle(): Promise<void> {
    return !this.running && !this.settleTimer
      ? Promise.resolve()
      : new Promise((r) => this.idleWaiters.push(r));
  }

  /** No more reloads; resolves when the one running (if any) is done. */
  async stop(): Promise<void> {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    await this.running?.catch(() => {});
  }
}

/**
 * Watches directories, not files: editors that save by renaming a new file
 * over the old one, and git checkout/stash, replace the inode. The directory
 * of every document, and the migrations directory, one level deep: that
 * directory may not exist yet when watching starts.
 */
async function watchProject(
  project: { file?: string; cwd?: string; migrationsDir: string },
  changed: () => void,
): Promise<{ close(): Promise<void> }> {
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
  watcher.on("all", (_event, changedPath) => {
    const path = resolve(changedPath);
    if (documentPaths.has(path) || path === migrationsPath || dirname(path) === migrationsPath) {
      changed();
    }
  });
  await new Promise<void>((r) => watcher.once("ready", () => r()));
  return watcher;
}

export async function watchDocument(options: WatchOptions = {}): Promise<WatchSession> {
  const log = options.log ?? (() => {});
  const project = {
    ...(options.file ? { file: options.file } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    migrationsDir: migrationsDirOf(options),
  };
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
  const versions = new Versions(options, project, cluster, proxy, log);
  const reloads = new Reloads(async () => {
    try {
      versions.report(await versions.load());
    } catch (error) {
      log(`[${timestamp()}] ${versions.name}: reload error: ${(error as Error).message}`);
    }
  }, options.settleMs ?? 100);

  try {
    const wantTests = options.tests ?? true;
    versions.testsAvailable = wantTests && (await withClient(cluster.connectionConfig(), hasPgTap));
    if (wantTests && !versions.testsAvailable)
      log("pgTAP is not installed: test blocks are not loaded");
    // A first version that fails to load is reported like any other; the
    // proxy answers 503 until a save fixes it.
    versions.report(await versions.load());
  } catch (error) {
    await versions.stop();
    throw error;
  }
  const watcher = await watchProject(project, () => reloads.schedule());

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
      await watcher.close();
      await reloads.stop();
      await versions.stop();
    })();
    return stopping;
  };
  return {
    url: proxy.url,
    demoUrl: proxy.demoUrl,
    cluster,
    currentDatabase: () => versions.served?.database ?? "",
    idle: () => reloads.idle(),
    stop,
  };
}
