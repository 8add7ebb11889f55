// docs/upgrading.md, followed step by step: a project that adopted the
// session module while it was one document (test/fixtures/single-document/,
// the release of 2026-11-27, with single sign-on and the doors inside it).

import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../src/document/migrate.js";
import { randomPassword, scramVerifier } from "../src/gateway/scram.js";
import { freePort } from "../src/net.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";
import { startPostgrest } from "../src/serving/postgrest.js";
import { ROOT } from "./support/deploy-local-process.js";
import { projectDatabase } from "./support/project-database.js";

const FIXTURE = join(ROOT, "test", "fixtures", "single-document");
const MODULE_ROLES = [
  "authenticator",
  "anonymous",
  "webuser",
  "auth_owner",
  "api_owner",
  "app_owner",
  "gateway",
  "door_admin",
];

let cluster: Cluster;
let work: string;
let counter = 0;

beforeAll(async () => {
  // A cluster of its own: roles are cluster-wide, and the first test checks
  // that a project without doors leaves none of theirs.
  cluster = await startCluster();
  work = mkdtempSync(join(tmpdir(), "upgrading-test-"));
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

interface Project {
  dir: string;
  database: string;
  url: string;
  query: <T extends pg.QueryResultRow>(sql: string, values?: unknown[]) => Promise<T[]>;
  /** Writes package.json with this document list. */
  list: (documents: string[]) => void;
}

/** A fresh database, and a project directory holding the given files. */
async function project(files: Record<string, string>): Promise<Project> {
  const base = await projectDatabase(cluster, work, `upgrading_${++counter}`);
  const { dir, database } = base;
  for (const [name, from] of Object.entries(files)) copyFileSync(from, join(dir, name));
  const query = async <T extends pg.QueryResultRow>(sql: string, values: unknown[] = []) =>
    (await base.query<T>(sql, values)).rows;
  const list = (documents: string[]) =>
    writeFileSync(
      join(dir, "package.json"),
      JSON.stringify({
        name: database,
        "postgrest-sessions": { documents, migrations: "migrations" },
      }),
    );
  return { dir, database, url: base.url, query, list };
}

/** An adopter's production database: the single document and the app it started with. */
async function adopter(): Promise<Project> {
  const p = await project({
    "sessions.sql.md": join(FIXTURE, "sessions.sql.md"),
    "app.sql.md": join(FIXTURE, "app.sql.md"),
  });
  p.list(["sessions.sql.md", "app.sql.md"]);
  const result = await migrate({ databaseUrl: p.url, cwd: p.dir });
  expect(result.applied.map((m) => m.fileName)).toEqual(["1_sessions.sql", "2_app.sql"]);
  return p;
}

/** PostgREST on the project's database: register, log in, read the notes. */
async function servesNotes(p: Project): Promise<void> {
  const postgrest = await startPostgrest({
    dbUri: cluster.uri("authenticator", p.database),
    port: await freePort(),
    logFile: join(p.dir, "postgrest.log"),
  });
  try {
    const email = `notes-${counter}@example.com`;
    const registered = await fetch(`${postgrest.url}/rpc/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, name: "Notes", password: "upgrading test" }),
    });
    expect(registered.status, await registered.clone().text()).toBe(200);
    const cookie = (registered.headers.get("set-cookie") ?? "").split(";")[0] as string;
    expect(cookie).toMatch(/^__Host-session_token=/);
    const written = await fetch(`${postgrest.url}/notes`, {
      method: "POST",
      headers: { cookie, "content-type": "application/json", prefer: "return=representation" },
      body: JSON.stringify({ body: "still here" }),
    });
    expect(written.status, await written.clone().text()).toBe(201);
    const notes = await fetch(`${postgrest.url}/notes`, { headers: { cookie } });
    expect(await notes.json()).toMatchObject([{ body: "still here" }]);
    expect((await fetch(`${postgrest.url}/notes`)).status).toBe(401);
  } finally {
    await postgrest.stop();
  }
}

describe("a project not deployed anywhere yet", () => {
  it("takes the new sessions.sql.md: its app loads and passes its tests on the core without doors", async () => {
    const p = await project({
      "sessions.sql.md": join(ROOT, "sessions.sql.md"),
      "app.sql.md": join(FIXTURE, "app.sql.md"),
    });
    p.list(["sessions.sql.md", "app.sql.md"]);
    const result = await migrate({ databaseUrl: p.url, cwd: p.dir, withTests: true });
    expect(result.pgtap?.ok, JSON.stringify(result.pgtap?.functions.filter((f) => !f.ok))).toBe(
      true,
    );
    // The app's own pgTAP test ran, on the new core's helpers.
    expect(result.pgtap?.functions.map((f) => f.functionName)).toContain(
      "tests.test_notes_are_private",
    );
    const doorRoles = await p.query<{ rolname: string }>(
      "select rolname from pg_roles where rolname in ('gateway', 'door_admin', 'door_guard', 'door_users')",
    );
    expect(doorRoles).toEqual([]);
    const doorFunctions = await p.query<{ f: string }>(
      `select p.oid::regprocedure::text as f from pg_proc p
        where p.pronamespace in ('auth'::regnamespace, 'api'::regnamespace)
          and (p.proname like '%door%' or p.proname like '%pgweb%')`,
    );
    expect(doorFunctions).toEqual([]);
    await servesNotes(p);
  }, 120_000);
});

describe("a database built from the single document", () => {
  it("refuses the new documents in place of the applied one, changes nothing, and says where to read on", async () => {
    const p = await adopter();
    // The new core copied over the adopted document, under the same name.
    copyFileSync(join(ROOT, "sessions.sql.md"), join(p.dir, "sessions.sql.md"));
    await expect(migrate({ databaseUrl: p.url, cwd: p.dir })).rejects.toThrow(
      /sessions\.sql\.md: its SQL changed after it was applied[\s\S]*docs\/upgrading\.md/,
    );
    // The split list: sso.sql.md where the database recorded the app.
    for (const document of ["sso.sql.md", "doors.sql.md"]) {
      copyFileSync(join(ROOT, document), join(p.dir, document));
    }
    p.list(["sessions.sql.md", "sso.sql.md", "doors.sql.md", "app.sql.md"]);
    await expect(migrate({ databaseUrl: p.url, cwd: p.dir })).rejects.toThrow(
      /its migration 2 is "app", but the project now has \S*sso\.sql\.md in that place[\s\S]*docs\/upgrading\.md/,
    );
    const recorded = await p.query<{ name: string }>(
      "select name from migrations where id > 0 order by id",
    );
    expect(recorded.map((r) => r.name)).toEqual(["sessions", "app"]);
  }, 120_000);

  it("closes the doors with the toolkit's migration: no door login, no CREATEROLE, no pgweb, and the app serves on", async () => {
    const p = await adopter();
    // Someone came through a door, and someone through pgweb, before.
    const [user] = await p.query<{ user_id: string }>(
      `insert into auth.users (email, name, password_hash)
       values ('door@example.com', 'Door', crypto.crypt('door password', crypto.gen_salt('bf', 4)))
       returning user_id::text`,
    );
    const userId = Number(user?.user_id);
    const verifier = await scramVerifier(randomPassword());
    const [door] = await p.query<{ role: string }>("select auth.door_enter($1, $2) as role", [
      userId,
      verifier,
    ]);
    expect(door?.role).toMatch(/^pgs_user_\d+_\d+$/);
    await p.query("select auth.create_session($1, 'pgweb'), auth.create_session($1, 'web')", [
      userId,
    ]);
    await p.query("select auth.door_new_ticket($1)", [userId]);

    copyFileSync(
      join(ROOT, "migrations", "examples", "close-doors.sql.md"),
      join(p.dir, "migrations", "003-close-doors.sql.md"),
    );
    const result = await migrate({ databaseUrl: p.url, cwd: p.dir });
    expect(result.applied.map((m) => m.fileName)).toEqual(["3_close-doors.sql"]);

    const roles = await p.query<{ rolname: string; rolcanlogin: boolean; rolcreaterole: boolean }>(
      "select rolname, rolcanlogin, rolcreaterole from pg_roles where rolname = any($1) order by 1",
      [MODULE_ROLES],
    );
    expect(roles.find((r) => r.rolname === "gateway")).toMatchObject({ rolcanlogin: false });
    expect(roles.filter((r) => r.rolcreaterole).map((r) => r.rolname)).toEqual([]);
    expect(await p.query("select rolname from pg_roles where rolname like 'pgs_user_%'")).toEqual(
      [],
    );
    expect(
      await p.query("select 1 from auth.door_roles union all select 1 from auth.door_tickets"),
    ).toEqual([]);
    const [ticket] = await p.query<{ f: string | null }>(
      "select to_regprocedure('api.pgweb_ticket()')::text as f",
    );
    expect(ticket?.f).toBeNull();
    const sessions = await p.query<{ via: string; revoked: boolean }>(
      "select via, revoked is not null as revoked from auth.sessions where user_id = $1 order by via",
      [userId],
    );
    expect(sessions).toEqual([
      { via: "pgweb", revoked: true },
      { via: "web", revoked: false },
    ]);
    await servesNotes(p);
    // Running migrate again changes nothing.
    expect((await migrate({ databaseUrl: p.url, cwd: p.dir })).applied).toEqual([]);
  }, 120_000);
});
