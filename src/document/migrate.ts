// migrate: the document, then literate migrations, applied to a persistent
// database with postgres-migrations.
//
// Migration 1 is the document itself (app.sql.md); migrations/NNN-name.sql.md
// follow, NNN counting on from 2. Each is compiled with md2sql and handed to
// postgres-migrations as `<N>_<name>.sql`, which applies each once, in its own
// transaction, and records it with a hash.
//
// Two details make that fit literate documents:
//
// - What postgres-migrations sees is the code only: the included blocks'
//   lines, without prose or blank prose lines. So the recorded hash changes
//   when the SQL changes and not when the prose does, even when a prose edit
//   moves every line. A line map keeps each code line's place in the
//   Markdown.
// - postgres-migrations rethrows a failing migration's error as a new Error,
//   dropping PostgreSQL's position. The client we give it keeps the original
//   error, which is mapped through the line map exactly as deploy-local maps
//   a failed load: file.sql.md:LINE:COL, the line, a caret, detail, hint.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { migrate as runMigrations } from "postgres-migrations";
import { withConnectionHint } from "../postgres/connection-hints.js";
import {
  locateError,
  type PgErrorFields,
  type SchemaLoadError,
  schemaLoadError,
} from "./loader.js";
import { type BlockTag, type CompiledDocument, compileFile } from "./md2sql.js";
import { describeFailures, type PgTapRun, runPgTap } from "./pgtap.js";
import { type ProjectDocument, projectDocuments } from "./project.js";

export interface MigrateOptions {
  /** postgres:// URL of the target database. */
  databaseUrl: string;
  /** One document (migration 1) instead of the project's list. */
  file?: string;
  /** The project's directory, with its package.json (default: the working directory). */
  cwd?: string;
  /** Further migrations, NNN-name.sql.md (default: the project's). */
  migrationsDir?: string;
  /** Also load the ```sql tests blocks and run the pgTAP suite, then roll them back. */
  withTests?: boolean;
  /** Only report what would be applied. */
  dryRun?: boolean;
  /** Where the dry run's plan goes, a line each (default: the log). */
  plan?: (line: string) => void;
  log?: (line: string) => void;
}

export interface PlannedMigration {
  id: number;
  /** The file postgres-migrations records, e.g. "2_add-tags.sql". */
  fileName: string;
  /** The literate source, e.g. "migrations/002-add-tags.sql.md". */
  source: string;
  /** sha1 of fileName + SQL, as postgres-migrations computes it. */
  hash: string;
  applied: boolean;
}

export interface MigrateResult {
  plan: PlannedMigration[];
  applied: PlannedMigration[];
  pgtap: PgTapRun | undefined;
}

/** The code of some blocks, one line per code line, and where each came from. */
interface CodeOnly {
  sql: string;
  /** lineMap[i] = the Markdown line of code line i + 1. */
  lineMap: number[];
}

function codeOnly(doc: CompiledDocument, tags: BlockTag[]): CodeOnly {
  const lines = doc.sql.split("\n");
  const out: string[] = [];
  const lineMap: number[] = [];
  for (const block of doc.blocks) {
    if (!tags.includes(block.tag)) continue;
    for (let n = block.startLine; n <= block.endLine; n++) {
      out.push(lines[n - 1] as string);
      lineMap.push(n);
    }
  }
  return { sql: `${out.join("\n")}\n`, lineMap };
}

interface Compiled extends ProjectDocument {
  doc: CompiledDocument;
  code: CodeOnly;
  fileName: string;
  hash: string;
}

async function compileSources(list: ProjectDocument[]): Promise<Compiled[]> {
  const { createHash } = await import("node:crypto");
  const compiled: Compiled[] = [];
  for (const source of list) {
    const doc = await compileFile(source.path, { includeTests: false, includeFixtures: false });
    const code = codeOnly(doc, ["app"]);
    const fileName = `${source.id}_${source.name}.sql`;
    const hash = createHash("sha1")
      .update(fileName + code.sql, "utf8")
      .digest("hex");
    compiled.push({ ...source, doc, code, fileName, hash });
  }
  return compiled;
}

interface Recorded {
  name: string;
  hash: string;
}

async function appliedMigrations(client: pg.Client): Promise<Map<number, Recorded>> {
  const exists = await client.query("select to_regclass('migrations') is not null as present");
  if (!exists.rows[0]?.present) return new Map();
  const rows = await client.query<{ id: number; name: string; hash: string }>(
    "select id, name, hash from migrations",
  );
  return new Map(rows.rows.map((r) => [r.id, { name: r.name, hash: r.hash }]));
}

/**
 * Refuses, before anything changes, a project whose list no longer matches
 * what the database recorded: a document or migration now in another place
 * (a list reordered, a document added in the middle or split), or an applied
 * one whose code changed.
 */
function refuseChangedHistory(compiled: Compiled[], recorded: Map<number, Recorded>): void {
  const moved = compiled.filter((m) => {
    const at = recorded.get(m.id);
    return at !== undefined && at.name !== m.name;
  });
  if (moved.length > 0) {
    const first = moved[0] as Compiled;
    throw new Error(
      `the project's list no longer matches this database: its migration ${first.id} is ` +
        `"${recorded.get(first.id)?.name}", but the project now has ${first.path} in that place. ` +
        "Applied documents stay in the list, in their order; new ones go after them, as migrations. " +
        "A project that adopted sessions.sql.md before single sign-on and the doors became documents " +
        "of their own keeps its copy: see docs/upgrading.md",
    );
  }
  const changed = compiled.filter((m) => {
    const at = recorded.get(m.id);
    return at !== undefined && at.hash !== m.hash;
  });
  if (changed.length > 0) {
    throw new Error(
      changed
        .map(
          (m) =>
            `${m.path}: its SQL changed after it was applied to this database (prose edits are fine; ` +
            "code is not). Put the change in a new migration, migrations/NNN-name.sql.md " +
            "(a newer sessions.sql.md from the toolkit too: see docs/upgrading.md)",
        )
        .join("\n"),
    );
  }
}

/** The compiler-style report for an error raised by a migration's code. */
function reportFor(migration: Compiled, error: PgErrorFields, completed: number): SchemaLoadError {
  const inCode = locateError(migration.code.sql, error, completed);
  const line = inCode ? migration.code.lineMap[inCode.line - 1] : undefined;
  const location = inCode && line !== undefined ? { line, column: inCode.column } : undefined;
  return schemaLoadError({ sql: migration.doc.sql, fileName: migration.path }, error, location);
}

/**
 * A pg client that remembers the last database error and how many
 * statements of the failing query completed, because postgres-migrations
 * replaces the error with one that has lost its position.
 */
function errorKeepingClient(client: pg.Client): {
  lastError: () => { error: PgErrorFields; completed: number } | undefined;
} {
  let last: { error: PgErrorFields; completed: number } | undefined;
  const connection = (client as unknown as { connection: NodeJS.EventEmitter }).connection;
  let completed = 0;
  connection.on("commandComplete", () => {
    completed++;
  });
  const original = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
  (client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (
    ...args: unknown[]
  ) => {
    completed = 0;
    try {
      return await original(...args);
    } catch (error) {
      if ((error as PgErrorFields).code) last = { error: error as PgErrorFields, completed };
      throw error;
    }
  };
  return { lastError: () => last };
}

export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const log = options.log ?? (() => {});
  const compiled = await compileSources(projectDocuments(options));

  const client = new pg.Client({ connectionString: options.databaseUrl });
  client.on("error", () => {});
  await client.connect().catch((error: unknown) => {
    throw withConnectionHint(error, options.databaseUrl);
  });
  const dir = mkdtempSync(join(tmpdir(), "pgs-migrations-"));
  try {
    const recorded = await appliedMigrations(client);
    const plan: PlannedMigration[] = compiled.map((m) => ({
      id: m.id,
      fileName: m.fileName,
      source: m.path,
      hash: m.hash,
      applied: recorded.has(m.id),
    }));
    refuseChangedHistory(compiled, recorded);
    const pending = plan.filter((m) => !m.applied);
    if (options.dryRun) {
      const report = options.plan ?? log;
      for (const m of plan) {
        report(
          `${m.applied ? "applied      " : "would apply  "} ${m.source} as ${m.fileName} (${m.hash.slice(0, 12)})`,
        );
      }
      if (pending.length === 0) report("nothing to apply");
      return { plan, applied: [], pgtap: undefined };
    }

    let pgtap: PgTapRun | undefined;
    if (options.withTests) {
      const pendingIds = new Set(pending.map((m) => m.id));
      pgtap = await rehearse(
        client,
        compiled.filter((m) => pendingIds.has(m.id)),
        compiled,
        log,
      );
      if (!pgtap.ok) {
        log(
          pending.length === 0
            ? "the database is up to date, and its tests FAIL"
            : `not applied: with ${pending.length} pending migration(s) the tests FAIL, so nothing was changed`,
        );
        return { plan, applied: [], pgtap };
      }
    }

    for (const m of compiled) writeFileSync(join(dir, m.fileName), m.code.sql);
    const keeper = errorKeepingClient(client);
    const started = performance.now();
    try {
      await runMigrations({ client }, dir, { logger: () => {} });
    } catch (error) {
      const failure = keeper.lastError();
      const failed = compiled.find((m) => (error as Error).message.includes(`'${m.name}'`));
      if (failure && failed) throw reportFor(failed, failure.error, failure.completed);
      throw error;
    }
    for (const m of pending) log(`applied ${m.source} as ${m.fileName}`);
    log(
      pending.length === 0
        ? "nothing to apply: the database is up to date"
        : `applied ${pending.length} migration(s) in ${Math.round(performance.now() - started)} ms`,
    );
    return { plan, applied: pending, pgtap };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await client.end().catch(() => {});
  }
}

/**
 * A dress rehearsal: in one transaction that is always rolled back, applies
 * the pending migrations, loads the test blocks of every document and runs
 * the pgTAP suite. A migration is applied for real only when this passes, so
 * a change whose tests fail never reaches the database.
 */
async function rehearse(
  client: pg.Client,
  pending: Compiled[],
  all: Compiled[],
  log: (line: string) => void,
): Promise<PgTapRun> {
  const started = performance.now();
  await client.query("begin");
  try {
    const run = async (m: Compiled, code: CodeOnly, doc: CompiledDocument) => {
      try {
        await client.query(code.sql);
      } catch (error) {
        if (!(error as PgErrorFields).code) throw error;
        throw reportFor({ ...m, doc, code }, error as PgErrorFields, 0);
      }
    };
    for (const m of pending) await run(m, m.code, m.doc);
    const withTests: CompiledDocument[] = [];
    for (const m of all) {
      const doc = await compileFile(m.path, { includeTests: true, includeFixtures: false });
      withTests.push(doc);
      const tests = codeOnly(doc, ["tests"]);
      if (tests.lineMap.length > 0) await run(m, tests, doc);
    }
    const result = await runPgTap(client, { inOpenTransaction: true, sources: withTests });
    const what =
      pending.length > 0
        ? `with ${pending.length} pending migration(s), rolled back`
        : "rolled back";
    log(
      `pgTAP (${what}): ${result.passed} passed, ${result.failed} failed (${Math.round(performance.now() - started)} ms)`,
    );
    if (!result.ok) for (const line of describeFailures(result)) log(line);
    return result;
  } finally {
    await client.query("rollback").catch(() => {});
  }
}
