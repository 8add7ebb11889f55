// Watch mode: every save of the document reloads it into a fresh database and
// points the API at it, while the previous version keeps serving until the
// new one has loaded.
//
// One reload runs at a time. Saves during a reload are remembered and, when
// it ends, one more reload reads the file as it is then, so the latest
// content always wins and no save is lost. A save that leaves the compiled
// SQL unchanged (prose only) does not reload.
//
// Each version lives in its own database (app_1, app_2, ...) served by its
// own PostgREST on an internal port, behind a small proxy on the user's port
// (src/proxy.ts): the switch is a pointer flip, with no gap in service.

import { readFileSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import chokidar from "chokidar";
import pg from "pg";
import { type Cluster, startCluster } from "./cluster.js";
import { createDatabase, loadDocument, runDatabaseTests } from "./deploy.js";
import { compileMarkdown, includedCode } from "./md2sql.js";
import { describeFailures, hasPgTap, type PgTapRun } from "./pgtap.js";
import { freePort, type PostgrestProcess, startPostgrest } from "./postgrest.js";
import { type FrontProxy, startFrontProxy } from "./proxy.js";

export interface WatchOptions {
  file?: string;
  port?: number;
  tests?: boolean;
  fixtures?: boolean;
  pgBin?: string;
  /** How long the file must stay unchanged before a reload starts (ms). */
  settleMs?: number;
  /** Progress and per-reload lines. */
  log?: (line: string) => void;
  /** Called after every reload attempt, for tests and benchmarks. */
  onReload?: (outcome: ReloadOutcome) => void;
}

export type ReloadOutcome =
  | { kind: "loaded"; version: number; database: string; pgtap?: PgTapRun; ms: number }
  | { kind: "load-failed"; report: string; ms: number }
  | { kind: "unchanged"; ms: number };

export interface WatchSession {
  readonly url: string;
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
  sql: string;
  postgrest: PostgrestProcess;
}

function timestamp(): string {
  return new Date().toISOString().slice(11, 23);
}

async function dropDatabase(cluster: Cluster, database: string): Promise<void> {
  const admin = new pg.Client(cluster.connectionConfig());
  admin.on("error", () => {});
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${admin.escapeIdentifier(database)} with (force)`);
  } finally {
    await admin.end();
  }
}

export async function watchDocument(options: WatchOptions = {}): Promise<WatchSession> {
  const log = options.log ?? (() => {});
  const file = options.file ?? "app.sql.md";
  const absolute = resolve(file);
  const settleMs = options.settleMs ?? 100;
  const wantTests = options.tests ?? true;
  const compileOptions = { fileName: file, includeFixtures: options.fixtures ?? true };

  // The proxy first: a port in use fails before anything else starts.
  const proxy: FrontProxy = await startFrontProxy(options.port ?? 3000);
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
  let lastAttemptedCode: string | undefined;

  const compile = () =>
    compileMarkdown(readFileSync(absolute), { ...compileOptions, includeTests: testsAvailable });

  /** Loads the document as a new version; returns the outcome. */
  const loadVersion = async (): Promise<ReloadOutcome> => {
    const started = performance.now();
    const ms = () => Math.round(performance.now() - started);
    let doc: ReturnType<typeof compileMarkdown>;
    try {
      doc = compile();
    } catch (error) {
      return { kind: "load-failed", report: (error as Error).message, ms: ms() };
    }
    // Compare code only: a prose edit that moves lines is still the same program.
    const code = includedCode(doc);
    if (code === lastAttemptedCode) return { kind: "unchanged", ms: ms() };
    lastAttemptedCode = code;
    const version = ++versionCounter;
    const database = `app_${version}`;
    await createDatabase(cluster, database);
    try {
      // The API switches as soon as PostgREST is ready, without waiting for
      // the pgTAP suite, which reports in the same reload line when done.
      await loadDocument(cluster, database, doc);
    } catch (error) {
      await dropDatabase(cluster, database);
      const failure = error as { report?: string; message: string };
      return { kind: "load-failed", report: failure.report ?? failure.message, ms: ms() };
    }
    // The suite runs in its own rolled-back transaction, beside PostgREST.
    const pgtapRun: Promise<PgTapRun | undefined> =
      testsAvailable && doc.blocks.some((block) => block.tag === "tests")
        ? runDatabaseTests(cluster, database).catch((error: Error) => {
            log(`pgTAP run failed: ${error.message}`);
            return undefined;
          })
        : Promise.resolve(undefined);
    const postgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-${version}.log`,
    });
    const previous = served;
    served = { version, database, sql: doc.sql, postgrest };
    proxy.setTarget(postgrest.port);
    if (previous) {
      await proxy.drained(previous.postgrest.port);
      await previous.postgrest.stop();
      await dropDatabase(cluster, previous.database);
    }
    const pgtap = await pgtapRun;
    return { kind: "loaded", version, database, ms: ms(), ...(pgtap ? { pgtap } : {}) };
  };

  const report = (outcome: ReloadOutcome) => {
    const at = `[${timestamp()}]`;
    if (outcome.kind === "unchanged") {
      log(`${at} ${file}: compiled SQL unchanged (prose only), not reloaded (${outcome.ms} ms)`);
    } else if (outcome.kind === "load-failed") {
      log(outcome.report);
      const still = served ? `still serving version ${served.version}` : "nothing served";
      log(`${at} ${file}: load FAILED, ${still} (${outcome.ms} ms)`);
    } else {
      const tests = outcome.pgtap
        ? outcome.pgtap.ok
          ? `pgTAP ${outcome.pgtap.passed} passed`
          : `pgTAP ${outcome.pgtap.passed} passed, ${outcome.pgtap.failed} FAILED`
        : "pgTAP not run";
      if (outcome.pgtap && !outcome.pgtap.ok) {
        for (const line of describeFailures(outcome.pgtap)) log(line);
      }
      const mark = outcome.pgtap && !outcome.pgtap.ok ? " (serving, but FAILING its tests)" : "";
      log(
        `${at} ${file}: loaded version ${outcome.version} into ${outcome.database}, ${tests}${mark} (${outcome.ms} ms)`,
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
    const probe = new pg.Client(cluster.connectionConfig());
    probe.on("error", () => {});
    await probe.connect();
    testsAvailable = wantTests && (await hasPgTap(probe).finally(() => probe.end()));
    if (wantTests && !testsAvailable) log("pgTAP is not installed: test blocks are not loaded");
    // A first version that fails to load is reported like any other; the
    // proxy answers 503 until a save fixes it.
    report(await loadVersion());
  } catch (error) {
    await proxy.close();
    await served?.postgrest.stop();
    await cluster.stop();
    throw error;
  }

  // Watch the directory, not the file: editors that save by renaming a new
  // file over the old one, and git checkout/stash, replace the inode.
  const watcher = chokidar.watch(dirname(absolute), {
    depth: 0,
    ignoreInitial: true,
  });
  watcher.on("all", (_event, changed) => {
    if (resolve(changed) === absolute || basename(changed) === basename(absolute)) {
      scheduleReload();
    }
  });
  await new Promise<void>((r) => watcher.once("ready", () => r()));

  let stopping: Promise<void> | undefined;
  return {
    url: proxy.url,
    cluster,
    currentDatabase: () => served?.database ?? "",
    idle: () =>
      !running && !settleTimer ? Promise.resolve() : new Promise((r) => idleWaiters.push(r)),
    stop: () => {
      stopping ??= (async () => {
        if (settleTimer) clearTimeout(settleTimer);
        await watcher.close();
        await running?.catch(() => {});
        await proxy.close();
        await served?.postgrest.stop();
        await cluster.stop();
      })();
      return stopping;
    },
  };
}
