// Schema loading against a real throwaway cluster: errors point at the
// Markdown line and column, and a failed load leaves nothing behind.

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSql, SchemaLoadError } from "../src/document/loader.js";
import { compileMarkdown } from "../src/document/md2sql.js";
import { describeFailures, runPgTap } from "../src/document/pgtap.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";

let cluster: Cluster;
let databaseCounter = 0;

beforeAll(async () => {
  cluster = await startCluster();
});

afterAll(async () => {
  await cluster?.stop();
});

async function freshDatabase(): Promise<pg.Client> {
  const name = `loader_${++databaseCounter}`;
  const admin = new pg.Client(cluster.connectionConfig("postgres"));
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const client = new pg.Client(cluster.connectionConfig(name));
  await client.connect();
  return client;
}

/** Loads a Markdown document and returns the SchemaLoadError it must raise. */
async function loadError(markdown: string): Promise<{ error: SchemaLoadError; client: pg.Client }> {
  const client = await freshDatabase();
  const doc = compileMarkdown(markdown, { fileName: "broken.sql.md" });
  const error = await loadSql(client, doc).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SchemaLoadError);
  return { error: error as SchemaLoadError, client };
}

describe("loadSql error mapping", () => {
  it("maps a syntax error to the Markdown line and column", async () => {
    const { error, client } = await loadError(
      [
        "# Title", // 1
        "", // 2
        "```sql", // 3
        "create table ok_table (id int);", // 4
        "```", // 5
        "", // 6
        "Prose in between.", // 7
        "", // 8
        "```sql", // 9
        "create table t (", // 10
        "  id int,,", // 11
        ");", // 12
        "```", // 13
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toBe(
      'broken.sql.md:11:10: error 42601: syntax error at or near ","',
    );
    expect(error.report).toContain("  11 |   id int,,\n     |          ^");
    // Nothing of the document was kept: the first table is gone too.
    const tables = await client.query("select 1 from pg_tables where tablename = 'ok_table'");
    expect(tables.rowCount).toBe(0);
    await client.end();
  });

  it("maps a missing column to its line and column", async () => {
    const { error, client } = await loadError(
      [
        "Intro.", // 1
        "```sql", // 2
        "create table sessions (token text);", // 3
        "create view v as", // 4
        "  select tokn", // 5
        "    from sessions;", // 6
        "```", // 7
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toBe(
      'broken.sql.md:5:10: error 42703: column "tokn" does not exist',
    );
    expect(error.report).toContain("hint:");
    await client.end();
  });

  it("maps an error inside an SQL function body", async () => {
    const { error, client } = await loadError(
      [
        "```sql", // 1
        "create table users (name text);", // 2
        "create function f() returns text", // 3
        "language sql", // 4
        "as $$", // 5
        "  select nme", // 6
        "    from users", // 7
        "$$;", // 8
        "```", // 9
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toBe(
      'broken.sql.md:6:10: error 42703: column "nme" does not exist',
    );
    await client.end();
  });

  it("maps a PL/pgSQL syntax error inside a function body", async () => {
    const { error, client } = await loadError(
      [
        "Text.", // 1
        "", // 2
        "```sql", // 3
        "create function g() returns int", // 4
        "language plpgsql", // 5
        "as $body$", // 6
        "begin", // 7
        "  retrun 1;", // 8
        "end", // 9
        "$body$;", // 10
        "```", // 11
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toBe(
      'broken.sql.md:8:3: error 42601: syntax error at or near "retrun"',
    );
    await client.end();
  });

  it("maps a run-time error in a DO block through the PL/pgSQL line", async () => {
    const { error, client } = await loadError(
      [
        "```sql", // 1
        "create table a (id int);", // 2
        "```", // 3
        "", // 4
        "```sql", // 5
        "do $$", // 6
        "begin", // 7
        "  perform 1;", // 8
        "  perform 1 / 0;", // 9
        "end", // 10
        "$$;", // 11
        "```", // 12
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toMatch(
      /^broken\.sql\.md:9:\d+: error 22012: division by zero$/,
    );
    await client.end();
  });

  it("maps a run-time error inside a named PL/pgSQL function called later", async () => {
    const { error, client } = await loadError(
      [
        "```sql", // 1
        "create function app_fail() returns int", // 2
        "language plpgsql", // 3
        "as $$", // 4
        "begin", // 5
        "  return 1 / 0;", // 6
        "end", // 7
        "$$;", // 8
        "select app_fail();", // 9
        "```", // 10
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toMatch(
      /^broken\.sql\.md:6:\d+: error 22012: division by zero$/,
    );
    expect(error.report).toContain("context: ");
    await client.end();
  });

  it("points at the failing statement when the error has no position", async () => {
    const { error, client } = await loadError(
      [
        "```sql", // 1
        "create table t (n int check (n > 0));", // 2
        "insert into t values (1);", // 3
        "", // 4
        "insert into t", // 5
        "  values (-1);", // 6
        "```", // 7
      ].join("\n"),
    );
    expect(error.report.split("\n")[0]).toMatch(/^broken\.sql\.md:5:1: error 23514: /);
    expect(error.report).toContain("detail: Failing row contains (-1).");
    await client.end();
  });

  it("loads a good document and commits it", async () => {
    const client = await freshDatabase();
    const doc = compileMarkdown("```sql\ncreate table kept (id int);\n```\n", {
      fileName: "good.sql.md",
    });
    await loadSql(client, doc);
    const tables = await client.query("select 1 from pg_tables where tablename = 'kept'");
    expect(tables.rowCount).toBe(1);
    await client.end();
  });
});

describe("a test that dies at run time", () => {
  it("is reported at the document's lines, frame by frame, without pgTAP's internals", async () => {
    const client = await freshDatabase();
    const markdown = [
      "# Dies", // 1
      "", // 2
      "```sql", // 3
      "create function divide(n int) returns int language plpgsql as $$", // 4
      "begin", // 5
      "  return 10 / n;", // 6
      "end", // 7
      "$$;", // 8
      "```", // 9
      "", // 10
      "```sql tests", // 11
      "create extension if not exists pgtap;", // 12
      "create schema tests;", // 13
      "create function tests.test_divide() returns setof text language plpgsql as $$", // 14
      "begin", // 15
      "  return next is(divide(0), 1, 'divides');", // 16
      "end", // 17
      "$$;", // 18
      "```", // 19
    ].join("\n");
    const doc = compileMarkdown(markdown, { fileName: "dies.sql.md", includeTests: true });
    await loadSql(client, doc);
    const run = await runPgTap(client, { sources: [doc] });
    await client.end();
    expect(run.ok).toBe(false);
    const problem = run.functions[0]?.problems[0] ?? "";
    expect(problem.split("\n")).toEqual([
      "died: dies.sql.md:6: error 22012: division by zero",
      "  at dies.sql.md:6 in divide(integer)",
      "  at dies.sql.md:16 in tests.test_divide()",
    ]);
    expect(describeFailures(run).join("\n")).not.toMatch(/_runner|runtests/);
  });
});
