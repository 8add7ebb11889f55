// migrate: the document and literate migrations applied to a persistent
// database, once each, with changed history refused and errors mapped to
// the Markdown.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SchemaLoadError } from "../src/document/loader.js";
import { migrate } from "../src/document/migrate.js";
import { freePort } from "../src/net.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";
import { deployLocal } from "../src/serving/deploy.js";
import { startPostgrest } from "../src/serving/postgrest.js";
import { ROOT, spawnCli } from "./support/deploy-local-process.js";
import { type ProjectDatabase, projectDatabase } from "./support/project-database.js";

let cluster: Cluster;
let work: string;
let counter = 0;

beforeAll(async () => {
  cluster = await startCluster();
  work = mkdtempSync(join(tmpdir(), "migrate-test-"));
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** A fresh database and a project directory of its own. */
function project(): Promise<ProjectDatabase> {
  return projectDatabase(cluster, work, `migrate_${++counter}`);
}

const APP = `# Notes app

A table for notes.

\`\`\`sql
create table notes (id int primary key, body text not null);
\`\`\`

And a function.

\`\`\`sql
create function note_count() returns bigint language sql as $$ select count(*) from notes $$;
\`\`\`

\`\`\`sql tests
create extension if not exists pgtap;
create schema tests;
create function tests.test_notes() returns setof text language plpgsql as $t$
begin
  return next is(note_count(), 0::bigint, 'no notes yet');
end
$t$;
\`\`\`

\`\`\`sql fixtures
insert into notes values (1, 'demo');
\`\`\`
`;

const ADD_TAGS = `# Tags

Notes get tags.

\`\`\`sql
alter table notes add column tags text[] not null default '{}';
\`\`\`
`;

async function tables(query: (sql: string) => Promise<pg.QueryResult>): Promise<string[]> {
  const { rows } = await query(
    "select table_name from information_schema.tables where table_schema = 'public' order by 1",
  );
  return rows.map((r) => r.table_name as string);
}

describe("migrate", () => {
  it("applies the document once, then only new migrations", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    const first = await migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") });
    expect(first.applied.map((m) => m.fileName)).toEqual(["1_app.sql"]);
    expect(await tables(query)).toEqual(["migrations", "notes"]);
    // Fixtures and tests are not applied to a real database.
    expect((await query("select count(*)::int as n from notes")).rows[0]?.n).toBe(0);
    expect((await query("select to_regnamespace('tests') as t")).rows[0]?.t).toBeNull();

    const again = await migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") });
    expect(again.applied).toEqual([]);

    writeFileSync(join(dir, "migrations", "002-add-tags.sql.md"), ADD_TAGS);
    const third = await migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") });
    expect(third.applied.map((m) => m.fileName)).toEqual(["2_add-tags.sql"]);
    const columns = await query(
      "select column_name from information_schema.columns where table_name = 'notes' order by ordinal_position",
    );
    expect(columns.rows.map((r) => r.column_name)).toEqual(["id", "body", "tags"]);
  });

  it("accepts prose-only edits, even ones that move every line", async () => {
    const { url, dir } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    await migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") });
    writeFileSync(
      file,
      APP.replace("A table for notes.", "A table for notes.\n\nIt has\nmany more\nwords now."),
    );
    const result = await migrate({
      databaseUrl: url,
      file,
      migrationsDir: join(dir, "migrations"),
    });
    expect(result.applied).toEqual([]);
  });

  it("refuses an applied migration whose code changed, naming the file, and changes nothing", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    writeFileSync(join(dir, "migrations", "002-add-tags.sql.md"), ADD_TAGS);
    await migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") });
    writeFileSync(file, APP.replace("body text not null", "body text"));
    writeFileSync(
      join(dir, "migrations", "003-more.sql.md"),
      "```sql\ncreate table more_things (id int);\n```\n",
    );
    await expect(
      migrate({ databaseUrl: url, file, migrationsDir: join(dir, "migrations") }),
    ).rejects.toThrow(`${file}: its SQL changed after it was applied`);
    expect(await tables(query)).not.toContain("more_things");
  });

  it("reports a failing migration at its Markdown line and column, and rolls it back", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    const broken = join(dir, "migrations", "002-broken.sql.md");
    writeFileSync(
      broken,
      [
        "# Broken", // 1
        "", // 2
        "Some prose.", // 3
        "", // 4
        "```sql", // 5
        "create table half_done (id int);", // 6
        "alter table notes add column tagz text", // 7
        "  referencs other;", // 8
        "```", // 9
      ].join("\n"),
    );
    const error = await migrate({
      databaseUrl: url,
      file,
      migrationsDir: join(dir, "migrations"),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SchemaLoadError);
    expect((error as SchemaLoadError).report.split("\n")[0]).toBe(
      `${broken}:8:3: error 42601: syntax error at or near "referencs"`,
    );
    expect((error as SchemaLoadError).report).toContain("  8 |   referencs other;\n    |   ^");
    // Migration 1 went in; the broken one left nothing and is not recorded.
    expect(await tables(query)).toEqual(["migrations", "notes"]);
    const recorded = await query("select id from migrations order by id");
    expect(recorded.rows.map((r) => r.id)).toEqual([0, 1]);
  });

  it("prints the plan with --dry-run and changes nothing", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    const run = spawnCli([
      "migrate",
      "--dry-run",
      "--database-url",
      url,
      "--file",
      file,
      "--migrations-dir",
      join(dir, "migrations"),
    ]);
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toMatch(/would apply +.*app\.sql\.md as 1_app\.sql/);
    expect(await tables(query)).toEqual([]);
  });

  it("runs the pgTAP suite with --with-tests and keeps no trace of it", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    const result = await migrate({
      databaseUrl: url,
      file,
      migrationsDir: join(dir, "migrations"),
      withTests: true,
    });
    expect(result.pgtap?.ok).toBe(true);
    expect(result.pgtap?.passed).toBe(1);
    expect((await query("select to_regnamespace('tests') as t")).rows[0]?.t).toBeNull();
  });

  it("applies nothing when the tests fail with the pending migrations (--with-tests)", async () => {
    const { url, dir, query } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    await migrate({ databaseUrl: url, file });
    writeFileSync(
      join(dir, "migrations", "002-drop-notes.sql.md"),
      "A migration that breaks the app's tests.\n\n```sql\ndrop function note_count();\n```\n",
    );
    const lines: string[] = [];
    const result = await migrate({
      databaseUrl: url,
      file,
      withTests: true,
      log: (l) => lines.push(l),
    });
    expect(result.pgtap?.ok).toBe(false);
    expect(result.applied).toEqual([]);
    expect(lines.join("\n")).toMatch(/not applied: with 1 pending migration\(s\) the tests FAIL/);
    const fn = await query("select to_regprocedure('note_count()') is not null as present");
    expect(fn.rows[0]?.present).toBe(true);
    expect((await query("select max(id) as top from migrations")).rows[0]?.top).toBe(1);
  });

  it("refuses files in the migrations directory that look like migrations but are not NNN-name.sql.md", async () => {
    const { url, dir } = await project();
    const file = join(dir, "app.sql.md");
    writeFileSync(file, APP);
    writeFileSync(join(dir, "migrations", "002-good.sql.md"), ADD_TAGS);
    writeFileSync(join(dir, "migrations", "003-plain.md"), ADD_TAGS);
    writeFileSync(join(dir, "migrations", "004-raw.sql"), "select 1;");
    writeFileSync(join(dir, "migrations", "NOTES.md"), "not a migration");
    const error = await migrate({ databaseUrl: url, file }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(error).toContain("003-plain.md: a migration must be named NNN-name.sql.md");
    expect(error).toContain("004-raw.sql: a migration must be named NNN-name.sql.md");
    expect(error).not.toContain("NOTES.md");
  });

  it("says what to do when the database does not exist", async () => {
    writeFileSync(join(work, "nothing.sql.md"), APP);
    const run = spawnCli([
      "migrate",
      "--database-url",
      cluster.uri("postgres", "no_such_database"),
      "--file",
      join(work, "nothing.sql.md"),
    ]);
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toContain('database "no_such_database" does not exist');
    expect(run.stderr()).toContain("hint: create it first");
    // Where and as whom, so that the command can be pasted as it is.
    expect(run.stderr()).toContain(`-p ${cluster.port} -U postgres no_such_database`);
  });

  it("says which option is missing, with exit code 2", async () => {
    const run = spawnCli(["migrate"], { DATABASE_URL: "" });
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain("--database-url is required (or set DATABASE_URL)");
  });
});

describe("the worked example in migrations/README.md", () => {
  const example = join(
    import.meta.dirname,
    "..",
    "migrations",
    "examples",
    "007-todo-due-date.sql.md",
  );

  /** A project directory like this repository's, with or without the example migration. */
  function scratchProject(dir: string, withExample: boolean): string {
    const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    for (const file of ["package.json", ...manifest["postgrest-sessions"].documents]) {
      writeFileSync(join(dir, file), readFileSync(join(ROOT, file)));
    }
    if (withExample) {
      writeFileSync(join(dir, "migrations", "007-todo-due-date.sql.md"), readFileSync(example));
    }
    return dir;
  }

  it("upgrades a deployed database, keeping its data, and its tests pass", async () => {
    const { url, dir, query } = await project();
    const cwd = scratchProject(dir, false);
    await migrate({ databaseUrl: url, cwd });
    await query(`insert into auth.users (email, name) values ('kept@example.com', 'Kept')`);
    scratchProject(dir, true);
    const upgrade = await migrate({ databaseUrl: url, cwd, withTests: true });
    expect(upgrade.pgtap?.ok).toBe(true);
    expect(upgrade.pgtap?.functions.map((f) => f.functionName)).toContain(
      "tests.test_todo_due_date",
    );
    expect(upgrade.applied.map((m) => m.fileName)).toEqual(["7_todo-due-date.sql"]);
    const due = await query("select due from api.todos limit 0");
    expect(due.fields.map((f) => f.name)).toContain("due");
    const kept = await query(
      "select count(*)::int as n from auth.users where email = 'kept@example.com'",
    );
    expect(kept.rows[0]?.n).toBe(1);
  });

  it("gives a fresh database the same schema in one go", async () => {
    const { url, dir, query } = await project();
    const cwd = scratchProject(dir, true);
    const result = await migrate({ databaseUrl: url, cwd });
    expect(result.applied.map((m) => m.fileName)).toEqual([
      "1_sessions.sql",
      "2_sso.sql",
      "3_doors.sql",
      "4_device.sql",
      "5_email.sql",
      "6_app.sql",
      "7_todo-due-date.sql",
    ]);
    const due = await query("select due from api.todos limit 0");
    expect(due.fields.map((f) => f.name)).toContain("due");
  });

  it("is what deploy-local serves, tests included", async () => {
    const { dir } = await project();
    const cwd = scratchProject(dir, true);
    const deployment = await deployLocal({ cwd, port: await freePort() });
    try {
      const pgtap = await deployment.pgtap;
      expect(pgtap?.ok).toBe(true);
      expect(pgtap?.functions.map((f) => f.functionName)).toContain("tests.test_todo_due_date");
      const login = await fetch(`${deployment.url}/rpc/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
      });
      const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] as string;
      const todos = await fetch(`${deployment.url}/todos?select=description,due&limit=1`, {
        headers: { cookie },
      });
      expect(todos.status).toBe(200);
      expect(Object.keys(((await todos.json()) as object[])[0] ?? {})).toEqual([
        "description",
        "due",
      ]);
    } finally {
      await deployment.stop();
    }
  });
});

describe("migrate with the real application", () => {
  it("serves it through PostgREST, and sessions survive a later migration", async () => {
    const { url, dir, database } = await project();
    await migrate({ databaseUrl: url, cwd: ROOT, migrationsDir: join(dir, "migrations") });
    const postgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      logFile: join(dir, "postgrest.log"),
    });
    try {
      const registered = await fetch(`${postgrest.url}/rpc/register`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "mig@example.com", name: "Mig", password: "migration test" }),
      });
      expect(registered.status).toBe(200);
      const cookie = registered.headers.get("set-cookie") ?? "";
      // Production defaults: the cookie is Secure.
      expect(cookie).toContain("; Secure");
      // Production defaults: Secure, so the name has the __Host- prefix.
      const token = /^__Host-session_token=([^;]+)/.exec(cookie)?.[1];
      const me = async () =>
        (
          await fetch(`${postgrest.url}/rpc/current_user`, {
            headers: { cookie: `__Host-session_token=${token}` },
          })
        ).status;
      expect(await me()).toBe(200);

      writeFileSync(
        join(dir, "migrations", "007-todo-priority.sql.md"),
        "Todos get a priority.\n\n```sql\nalter table app.todos add column priority int not null default 0;\n```\n",
      );
      const upgrade = await migrate({
        databaseUrl: url,
        cwd: ROOT,
        migrationsDir: join(dir, "migrations"),
      });
      expect(upgrade.applied.map((m) => m.fileName)).toEqual(["7_todo-priority.sql"]);
      await postgrest.reloadSchema();
      expect(await me()).toBe(200);
    } finally {
      await postgrest.stop();
    }
  });

  it("works for a database owner with CREATEROLE (not a superuser) where the roles already exist", async () => {
    const { dir, database } = await project();
    const admin = new pg.Client(cluster.connectionConfig("postgres"));
    await admin.connect();
    await admin.query(`do $$ begin
      if not exists (select from pg_roles where rolname = 'deployer') then
        create role deployer login createrole;
      end if; end $$`);
    // From PostgreSQL 16 on, CREATEROLE manages only the roles it made or
    // was given ADMIN on: a deployer that meets the module's roles already
    // made (by another load here) needs them granted so, as the guide says.
    await admin.query(`do $$ declare r text; begin
      if current_setting('server_version_num')::int >= 160000 then
        for r in select rolname from pg_roles where rolname in ('authenticator', 'anonymous', 'webuser',
          'auth_owner', 'api_owner', 'app_owner', 'gateway', 'door_admin', 'door_guard', 'door_users',
          'mailer') loop
          execute format('grant %I to deployer with admin option', r);
        end loop;
      end if; end $$`);
    await admin.query(`alter database ${database} owner to deployer`);
    await admin.end();
    const url = cluster.uri("deployer", database);
    const result = await migrate({
      databaseUrl: url,
      cwd: ROOT,
      migrationsDir: join(dir, "migrations"),
      withTests: true,
    });
    expect(result.applied).toHaveLength(6);
    // pgTAP is not superuser-only, and the tests need no superuser either.
    expect(result.pgtap?.ok, JSON.stringify(result.pgtap?.functions.filter((f) => !f.ok))).toBe(
      true,
    );
    const check = new pg.Client(cluster.connectionConfig(database));
    await check.connect();
    const { rows } = await check.query("select rolsuper from pg_roles where rolname = 'deployer'");
    expect(rows[0].rolsuper).toBe(false);
    const owner = await check.query(
      "select pg_get_userbyid(nspowner) as o from pg_namespace where nspname = 'auth'",
    );
    expect(owner.rows[0].o).toBe("auth_owner");
    await check.end();
    expect(readFileSync(join(ROOT, "sessions.sql.md"), "utf8")).toContain(
      "grant auth_owner, api_owner to current_user",
    );
  });
});
