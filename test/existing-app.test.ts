// README "Add sessions to an existing database", step by step, on an
// application as it was before: its own users table with bcrypt hashes, a
// policy reading JWT claims, a PostgREST configured with a shared JWT
// secret. After `migrate` with the session module and the adoption
// document, its users log in with their old passwords and see what they saw.

import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT } from "jose";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postgrestConf } from "../src/commands/postgrest-conf.js";
import { migrate } from "../src/document/migrate.js";
import { describeFailures, type PgTapRun } from "../src/document/pgtap.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";
import { TestClient } from "./support/client.js";
import { ROOT } from "./support/deploy-local-process.js";
import { postgrestOnConfigFile, type RunningPostgrest } from "./support/postgrest-file.js";

const FIXTURE = join(import.meta.dirname, "fixtures", "existing-app");
const OLD_SECRET = "a-shared-secret-of-the-old-auth-service-32+";
let cluster: Cluster;
let work: string;

beforeAll(async () => {
  cluster = await startCluster();
  work = mkdtempSync(join(tmpdir(), "existing-app-"));
  const admin = new pg.Client(cluster.connectionConfig());
  await admin.connect();
  await admin.query("create database legacy");
  await admin.end();
  const db = new pg.Client(cluster.connectionConfig("legacy"));
  await db.connect();
  await db.query(readFileSync(join(FIXTURE, "schema.sql"), "utf8"));
  await db.end();
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** PostgREST on a configuration file, as an operator runs it, against the legacy database. */
function postgrestWith(configFile: string): Promise<RunningPostgrest> {
  return postgrestOnConfigFile(configFile, cluster.uri("authenticator", "legacy"));
}

describe("adding sessions to an existing application", () => {
  let oldToken: string;

  it("works with its JWTs before", async () => {
    oldToken = await new SignJWT({ role: "web_user", user_id: 1 })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(OLD_SECRET));
    const before = await postgrestWith(join(FIXTURE, "postgrest.conf"));
    try {
      const notes = await fetch(`${before.url}/notes`, {
        headers: { authorization: `Bearer ${oldToken}` },
      });
      expect(await notes.json()).toEqual([{ id: 1, owner_id: 1, body: "grace's note" }]);
      expect(await (await fetch(`${before.url}/announcements`)).json()).toEqual([
        { id: 1, body: "we are open" },
      ]);
    } finally {
      before.stop();
    }
  });

  it("migrates: the module and the adoption document, in one project", async () => {
    const project = join(work, "project");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(project);
    copyFileSync(join(ROOT, "sessions.sql.md"), join(project, "sessions.sql.md"));
    copyFileSync(
      join(ROOT, "examples", "existing-app", "adopt-sessions.sql.md"),
      join(project, "adopt-sessions.sql.md"),
    );
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({
        name: "legacy",
        private: true,
        "postgrest-sessions": { documents: ["sessions.sql.md", "adopt-sessions.sql.md"] },
      }),
    );
    const result = await migrate({
      databaseUrl: cluster.uri("postgres", "legacy"),
      cwd: project,
      withTests: true,
    });
    expect(result.applied.map((m) => m.fileName)).toEqual([
      "1_sessions.sql",
      "2_adopt-sessions.sql",
    ]);
    expect(result.pgtap?.ok, describeFailures(result.pgtap as PgTapRun).join("\n")).toBe(true);
  });

  it("lets existing users log in with their old passwords and see what they saw", async () => {
    const configFile = join(work, "postgrest.conf");
    writeFileSync(configFile, await postgrestConf());
    const after = await postgrestWith(configFile);
    try {
      const grace = new TestClient(after.url);
      const login = await grace.login("grace@example.com", "grace old password");
      expect(login.status, login.text).toBe(200);
      // Production defaults: a Secure cookie; this client carries it over plain http.
      expect(login.setCookies.map((c) => c.name)).toContain("__Host-session_token");
      const cookie = `__Host-session_token=${login.setCookies.find((c) => c.name === "__Host-session_token")?.value}`;
      const notes = await grace.get("/notes", { Cookie: cookie });
      expect(notes.body).toEqual([{ id: 1, owner_id: 1, body: "grace's note" }]);
      const wrote = await grace.post(
        "/notes",
        { body: "written with a session" },
        { Cookie: cookie },
      );
      expect(wrote.status, wrote.text).toBe(201);

      const linus = new TestClient(after.url);
      expect((await linus.login("linus@example.com", "wrong")).status).toBe(401);
      expect((await linus.login("linus@example.com", "linus old password")).status).toBe(200);

      // What strangers could read, they still can, and logged-in users too.
      const announcements = await fetch(`${after.url}/announcements`);
      expect(announcements.status).toBe(200);
      expect(await announcements.json()).toEqual([{ id: 1, body: "we are open" }]);
      expect(await (await fetch(`${after.url}/rpc/opening_hours`)).json()).toBe("9 to 5");
      expect((await grace.get("/announcements", { Cookie: cookie })).status).toBe(200);
      expect((await grace.get("/rpc/opening_hours", { Cookie: cookie })).body).toBe("9 to 5");

      // Old tokens no longer open anything.
      const withOldToken = await fetch(`${after.url}/notes`, {
        headers: { authorization: `Bearer ${oldToken}` },
      });
      expect(withOldToken.status).toBe(401);

      // New accounts work too, with the same table.
      const newcomer = new TestClient(after.url);
      const registered = await newcomer.register("new@example.com", "New", "a new password 1");
      expect(registered.status, registered.text).toBe(200);
      const newCookie = `__Host-session_token=${registered.setCookies.find((c) => c.name === "__Host-session_token")?.value}`;
      expect(
        (await newcomer.post("/notes", { body: "a newcomer's note" }, { Cookie: newCookie }))
          .status,
      ).toBe(201);
      expect((await newcomer.get("/notes", { Cookie: newCookie })).body).toEqual([
        expect.objectContaining({ body: "a newcomer's note" }),
      ]);
    } finally {
      after.stop();
    }
    const db = new pg.Client(cluster.connectionConfig("legacy"));
    await db.connect();
    const { rows } = await db.query<{ cost: string }>(
      "select substring(password_hash from '^\\$2[abxy]\\$(\\d+)\\$') as cost from auth.users where email = 'grace@example.com'",
    );
    await db.end();
    expect(rows[0]?.cost).toBe("10");
  });
});
