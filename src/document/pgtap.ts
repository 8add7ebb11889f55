// Running the in-database pgTAP suite and reading its TAP output.
//
// Tests are pgTAP xUnit functions: `tests.test_*() returns setof text`.
// pgTAP's runtests() aborts the whole run when one test function raises, so
// each function runs on its own, inside a savepoint, through
// runtests('tests', '^name$'): a test that dies is reported as a failure
// and the others still run. Everything happens in a transaction that is
// rolled back, so the suite leaves no trace.

import type pg from "pg";
import { type FinalResults, Parser, type Result } from "tap-parser";
import { mapCallStack, type SqlSource } from "./loader.js";

export interface PgTapCheck {
  /** The assertion's description, e.g. "login sets a cookie". */
  name: string;
  ok: boolean;
  todo: boolean;
  skip: boolean;
  /** pgTAP's "# have: ... want: ..." lines that follow a failure. */
  diagnostics: string[];
}

export interface PgTapFunctionResult {
  /** Schema-qualified test function, e.g. "tests.test_login". */
  functionName: string;
  ok: boolean;
  checks: PgTapCheck[];
  /** Failures that are not a single check: the function died, a plan mismatch. */
  problems: string[];
  tap: string;
}

export interface PgTapRun {
  functions: PgTapFunctionResult[];
  passed: number;
  failed: number;
  ok: boolean;
}

export class PgTapMissing extends Error {}

/** Parses the TAP that runtests() prints for one test function. */
export function parsePgTap(functionName: string, tap: string): PgTapFunctionResult {
  const checks: PgTapCheck[] = [];
  const problems: string[] = [];
  let last: PgTapCheck | undefined;
  const parser = new Parser();
  parser.on("child", (child: Parser) => {
    child.on("assert", (result: Result) => {
      last = {
        name: result.name,
        ok: result.ok,
        todo: Boolean(result.todo),
        skip: Boolean(result.skip),
        diagnostics: [],
      };
      checks.push(last);
    });
    child.on("comment", (comment: string) => {
      const text = comment.replace(/^\s*#\s?/, "").trimEnd();
      if (/^Looks like you/.test(text)) return; // counted from the results instead
      if (last && !last.ok) last.diagnostics.push(text);
    });
    child.on("complete", (results: FinalResults) => {
      const { start, end } = results.plan;
      if (end === null) problems.push("no plan: the test function did not finish its TAP output");
      else if (end - (start ?? 1) + 1 !== results.count) {
        problems.push(
          `plan mismatch: planned ${end - (start ?? 1) + 1} checks, ran ${results.count}`,
        );
      }
      for (const failure of results.failures) {
        if ("tapError" in failure && failure.tapError) problems.push(String(failure.tapError));
      }
    });
  });
  parser.end(tap);
  const results = parser.results;
  if (checks.length === 0) problems.push("the test function emitted no checks");
  if (results && !results.ok && checks.every((c) => c.ok || c.todo) && problems.length === 0) {
    problems.push("the TAP stream reports a failure");
  }
  const ok = problems.length === 0 && checks.every((c) => c.ok || c.todo);
  return { functionName, ok, checks, problems, tap };
}

export async function hasPgTap(client: pg.Client): Promise<boolean> {
  const result = await client.query("select 1 from pg_available_extensions where name = 'pgtap'");
  return result.rowCount === 1;
}

/** Runs every `schema.pattern` test function; the database is unchanged afterwards. */
export async function runPgTap(
  client: pg.Client,
  options: {
    schema?: string;
    pattern?: string;
    /** The caller already opened a transaction it will roll back itself. */
    inOpenTransaction?: boolean;
    /** The compiled documents, so that a test that dies is reported at their lines. */
    sources?: SqlSource[];
  } = {},
): Promise<PgTapRun> {
  const schema = options.schema ?? "tests";
  const pattern = options.pattern ?? "^test_";
  const installed = await client.query("select 1 from pg_extension where extname = 'pgtap'");
  if (installed.rowCount !== 1) {
    throw new PgTapMissing("the pgTAP extension is not installed in this database");
  }
  const functions: PgTapFunctionResult[] = [];
  const own = options.inOpenTransaction !== true;
  if (own) await client.query("begin");
  try {
    const names = await client.query<{ name: string }>(
      `select p.proname as name
         from pg_proc p
         join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = $1 and p.proname ~ $2
        order by p.proname`,
      [schema, pattern],
    );
    for (const { name } of names.rows) {
      const functionName = `${schema}.${name}`;
      await client.query("savepoint pgtap_test");
      try {
        const rows = await client.query<{ line: string }>(
          "select * from runtests($1::name, $2) as line",
          [schema, `^${name}$`],
        );
        functions.push(parsePgTap(functionName, rows.rows.map((r) => r.line).join("\n")));
        await client.query("release savepoint pgtap_test");
      } catch (error) {
        await client.query("rollback to savepoint pgtap_test");
        functions.push({
          functionName,
          ok: false,
          checks: [],
          problems: [diedReport(error, options.sources)],
          tap: "",
        });
      }
    }
  } finally {
    if (own) await client.query("rollback");
  }
  let passed = 0;
  let failed = 0;
  for (const fn of functions) {
    for (const check of fn.checks) {
      if (check.ok || check.todo) passed++;
      else failed++;
    }
    failed += fn.problems.length;
  }
  return { functions, passed, failed, ok: failed === 0 && functions.length > 0 };
}

/**
 * "died: app.sql.md:412: error 22012: division by zero" and the call stack
 * mapped to the documents, instead of PostgreSQL's raw context (which for
 * a deep call runs to dozens of lines naming pgTAP's internals).
 */
function diedReport(error: unknown, sources: SqlSource[] | undefined): string {
  const fields = error as { message?: string; where?: string; code?: string };
  const message = `${fields.code ? `error ${fields.code}: ` : ""}${fields.message ?? String(error)}`;
  const stack = sources ? mapCallStack(fields.where, sources) : [];
  if (stack.length > 0) {
    const at = (stack[0] as string).replace(/ in .*$/, "");
    return [`died: ${at}: ${message}`, ...stack.map((frame) => `  at ${frame}`)].join("\n");
  }
  return `died: ${message}${fields.where ? `\n  context: ${fields.where}` : ""}`;
}

/** Human-readable lines for the failures of a run. */
export function describeFailures(run: PgTapRun): string[] {
  const lines: string[] = [];
  for (const fn of run.functions) {
    for (const check of fn.checks) {
      if (check.ok || check.todo) continue;
      lines.push(`not ok: ${fn.functionName}: ${check.name}`);
      for (const d of check.diagnostics) lines.push(`    ${d}`);
    }
    for (const problem of fn.problems) lines.push(`not ok: ${fn.functionName}: ${problem}`);
  }
  if (run.functions.length === 0) lines.push("no test functions found");
  return lines;
}
