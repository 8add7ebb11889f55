// The weaknesses an outside security review found, one describe per finding
// (numbered as in the review), each through HTTP like the attacker went, and
// checked behind the API with a superuser connection. Findings whose proof
// lives elsewhere say where: pgTAP checks in app.sql.md, Chromium in
// test/e2e.test.ts, identity providers in test/single-sign-on.test.ts.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { Agent } from "undici";
import { describe, expect, inject, it } from "vitest";
import { loadSql } from "../src/document/loader.js";
import { compileFile } from "../src/document/md2sql.js";
import { freePort } from "../src/net.js";
import { startCluster } from "../src/postgres/cluster.js";
import { deployLocal } from "../src/serving/deploy.js";
import { startPostgrest } from "../src/serving/postgrest.js";
import { AUDIT_TABLE, expect2xx, expectStatus, SESSIONS_TABLE, shown } from "./support/app.js";
import {
  TestClient as Browser,
  newUser,
  PASSWORD,
  SESSION_COOKIE,
  uniqueEmail,
} from "./support/client.js";
import { withDatabase } from "./support/database.js";
import { spawnCli } from "./support/deploy-local-process.js";

const api = inject("apiUrl");
const browser = () => new Browser(api);

async function auditRows(where: string, params: unknown[] = []): Promise<number> {
  return withDatabase(async (db) => {
    const { rows } = await db.query<{ n: number }>(
      `select count(*)::int as n from ${AUDIT_TABLE} where ${where}`,
      params,
    );
    return rows[0]?.n ?? 0;
  });
}

/** Names that only the server should know: schemas, tables, indexes, internal addresses. */
const INTERNALS =
  /\bauth\.|\bapp\.|audit|_idx\b|_unique\b|_pkey\b|pg_|127\.0\.0\.1:\d+|btree|index row/i;

describe("1. one issuer per deployment", () => {
  it("deploy-local and postgrest-conf refuse a second issuer and say why", async () => {
    for (const command of ["deploy-local", "postgrest-conf"]) {
      const run = spawnCli([
        command,
        "--oidc-issuer",
        "https://a.example,https://b.example",
        "--oidc-audience",
        "app",
      ]);
      expect(await run.exited).toBe(2);
      expect(run.stderr()).toContain("names 2 issuers: one issuer per deployment");
      expect(run.stderr()).toContain("not which key verified it");
    }
  });
});

describe("4. a login flood cannot take every database connection, nor turn away the honest", () => {
  it("holds one client to its share of the password line while ten other people log in", async () => {
    const bystander = await newUser(api, "flood-bystander");
    const people = await Promise.all(
      Array.from({ length: 10 }, (_, i) => newUser(api, `flood-honest-${i}`)),
    );
    // Every flood request comes from one address, as from one machine.
    const floodAddress = new Agent({ localAddress: "127.66.66.66" });
    try {
      const flooder = () => new Browser(api, { dispatcher: floodAddress });
      const [flood, honest, read] = await Promise.all([
        Promise.all(
          Array.from({ length: 24 }, (_, i) =>
            flooder().login(uniqueEmail(`flood-${i}`), "not the password"),
          ),
        ),
        Promise.all(people.map((person) => new Browser(api).login(person.email, person.password))),
        bystander.client.get("/todos"),
      ]);
      const crowded = flood.filter((r) => r.status === 429);
      expect(crowded.length, flood.map((r) => r.status).join(",")).toBeGreaterThan(0);
      for (const response of crowded) {
        expect(response.headers["retry-after"]).toBe("1");
        expect(response.body).toMatchObject({
          message: "too many password checks from your address at once",
        });
      }
      expect(flood.every((r) => r.status === 401 || r.status === 429)).toBe(true);
      expect(honest.map((r) => r.status)).toEqual(Array(10).fill(200));
      expectStatus(read, 200);
    } finally {
      await floodAddress.close();
    }
  });
});

describe("5. change_password is no password oracle", () => {
  it("throttles and audits wrong current passwords like logins", async () => {
    const user = await newUser(api, "change-oracle");
    for (let guess = 1; guess <= 5; guess++) {
      const wrong = await user.client.post("/rpc/change_password", {
        current_password: `guess number ${guess}`,
        new_password: "a new password",
      });
      expectStatus(wrong, 403);
    }
    const right = await user.client.post("/rpc/change_password", {
      current_password: PASSWORD,
      new_password: "a new password",
    });
    expectStatus(right, 429);
    expect(
      await auditRows("event = 'password_change_failed' and user_id = $1", [user.userId]),
    ).toBe(5);
  });
});

describe("6. cookie tossing", () => {
  it("a request carrying two session cookies (one planted by a sibling subdomain) is anonymous", async () => {
    const victim = await newUser(api, "tossing-victim");
    const attacker = await newUser(api, "tossing-attacker");
    const both = `${SESSION_COOKIE}=${attacker.client.sessionToken}; ${SESSION_COOKIE}=${victim.client.sessionToken}`;
    for (const cookie of [both, both.split("; ").reverse().join("; ")]) {
      expectStatus(await browser().get("/rpc/current_user", { Cookie: cookie }), 401);
    }
    // One cookie alone still works.
    expectStatus(
      await browser().get("/rpc/current_user", {
        Cookie: `${SESSION_COOKIE}=${victim.client.sessionToken}`,
      }),
      200,
    );
  });
  // Secure deployments name the cookie __Host-session_token and ignore a plain
  // session_token: pgTAP tests.test_cookie_names and the resilience test of
  // settings; the browser's side: test/e2e.test.ts.
});

describe("7. cross-site request forgery", () => {
  it("refuses writes marked same-site, and Origins that differ in scheme or port", async () => {
    const user = await newUser(api, "csrf-more");
    const origin = user.client.origin;
    const attempts: Array<Record<string, string>> = [
      { "Sec-Fetch-Site": "same-site" },
      { Origin: origin.replace(/^http:/, "https:") },
      { Origin: origin.replace(/:(\d+)$/, (_, port) => `:${Number(port) + 1}`) },
    ];
    for (const headers of attempts) {
      const response = await user.client.post("/todos", { description: "forged" }, headers);
      expect(response.status, JSON.stringify(headers)).toBe(403);
    }
    expectStatus(
      await user.client.post(
        "/todos",
        { description: "mine" },
        { Origin: origin, "Sec-Fetch-Site": "same-origin" },
      ),
      201,
    );
  });
});

describe("8. the throttle holds under parallel guesses", () => {
  it("evaluates exactly 5 of 50 wrong passwords sent at once", async () => {
    const user = await newUser(api, "throttle-race");
    const guesses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => browser().login(user.email, `parallel guess ${i}`)),
    );
    expect(guesses.filter((r) => r.status === 401)).toHaveLength(5);
    expect(guesses.filter((r) => r.status === 429)).toHaveLength(45);
    expect(await auditRows("event = 'login_failed' and user_id = $1", [user.userId])).toBe(5);
  });
});

describe("10. an anonymous client cannot grow the audit trail without bound", () => {
  it("token logins without a token and throttled logins write at most one row", async () => {
    const email = uniqueEmail("audit-flood");
    // Other test files write audit rows meanwhile: count only this client's,
    // recognised by a User-Agent of its own.
    const agent = `audit-flood-${randomUUID()}`;
    const flooder = () => new Browser(api, { headers: { "User-Agent": agent } });
    for (let i = 0; i < 5; i++) await flooder().login(email, "wrong");
    const mine = "user_agent = $1";
    const before = await auditRows(mine, [agent]);
    expect(before).toBe(5);
    await Promise.all(
      Array.from({ length: 40 }, () => flooder().post("/rpc/login_with_token", {})),
    );
    for (let i = 0; i < 40; i++) expectStatus(await flooder().login(email, "wrong"), 429);
    expect((await auditRows(mine, [agent])) - before).toBeLessThanOrEqual(1);
  });
});

describe("11. one account per address, however it is spelled", () => {
  it("refuses ÉVE and a decomposed éve once éve is registered", async () => {
    const local = `eve-${Date.now()}`;
    expect2xx(await browser().register(`${local}é@example.com`, "Eve", PASSWORD));
    expectStatus(
      await browser().register(`${local.toUpperCase()}É@EXAMPLE.COM`, "Eve 2", PASSWORD),
      409,
    );
    expectStatus(await browser().register(`${local}e\u0301@example.com`, "Eve 3", PASSWORD), 409);
  });
});

describe("13. error bodies never name internals", () => {
  it("an 8 kB email at login is an ordinary 401", async () => {
    const response = await browser().login(`${"x".repeat(8000)}@example.com`, "whatever");
    expectStatus(response, 401);
    expect(response.text).not.toMatch(INTERNALS);
  });

  it("nor do oversized or malformed inputs elsewhere", async () => {
    const user = await newUser(api, "internals");
    const responses = [
      await browser().register(`${"x".repeat(8000)}@example.com`, "X", PASSWORD),
      await browser().register(uniqueEmail("long-name"), "n".repeat(5000), PASSWORD),
      await user.client.post("/todos", { description: "d".repeat(5000) }),
      await user.client.post("/todos", { description: "" }),
      await browser().get("/favicon.ico"),
    ];
    for (const response of responses) {
      expect(response.status, shown(response)).toBeGreaterThanOrEqual(400);
      expect(response.status, shown(response)).toBeLessThan(500);
      expect(response.text, shown(response)).not.toMatch(INTERNALS);
    }
  });
});

describe("14. endpoints that change state refuse GET before doing any work", () => {
  it("GET /rpc/login is 405 and checks no password", async () => {
    const user = await newUser(api, "get-login");
    const query = new URLSearchParams({ email: user.email, password: "a guess" });
    const response = await browser().get(`/rpc/login?${query}`);
    expectStatus(response, 405);
    expect(await auditRows("event = 'login_failed' and user_id = $1", [user.userId])).toBe(0);
    expectStatus(await browser().get(`/rpc/register?${query}&name=X`), 405);
  });
});

describe("15. the API description", () => {
  it("names the address clients use, not PostgREST's internal one", async () => {
    const response = await browser().get("/", { Accept: "application/openapi+json" });
    expectStatus(response, 200);
    expect((response.body as { host: string }).host).toBe(new URL(api).host);
  });

  it("is turned off in the production configuration", () => {
    const conf = readFileSync(join(import.meta.dirname, "..", "deploy", "postgrest.conf"), "utf8");
    expect(conf).toMatch(/^openapi-mode = "disabled"$/m);
    expect(conf).toMatch(/^db-tx-end = "commit"$/m);
  });
});

describe("16. a bearer token where no identity provider is configured", () => {
  it("is 401, never 500, even next to a valid cookie", async () => {
    const user = await newUser(api, "bearer");
    const response = await user.client.get("/todos", { Authorization: "Bearer abc.def.ghi" });
    expectStatus(response, 401);
  });
});

describe("17. the sessions list only lists and deletes", () => {
  it("POST and PATCH /sessions are 405 with a message", async () => {
    const user = await newUser(api, "sessions-405");
    const posted = await user.client.post("/sessions", { session_id: 1 });
    expectStatus(posted, 405);
    expect(posted.body).toMatchObject({
      message: expect.stringContaining("only listed and deleted"),
    });
    expectStatus(await user.client.patch("/sessions", { expires: "2099-01-01T00:00:00Z" }), 405);
  });
});

describe("18. login_with_token without a token", () => {
  it("says what is missing", async () => {
    const response = await browser().post("/rpc/login_with_token", {});
    expectStatus(response, 401);
    expect(response.body).toMatchObject({
      message: expect.stringContaining("Authorization: Bearer"),
    });
  });
});

describe("19. refusals of logged-in users are 403", () => {
  it("logging in or registering while logged in is 403, not 401", async () => {
    const user = await newUser(api, "already-in");
    expectStatus(await user.client.login(user.email, PASSWORD), 403);
    expectStatus(await user.client.register(uniqueEmail("again"), "Again", PASSWORD), 403);
  });

  it("a stranger is told they are not logged in", async () => {
    const response = await browser().get("/rpc/current_user");
    expectStatus(response, 401);
    expect(response.body).toMatchObject({ message: "you are not logged in" });
  });
});

describe("20. password changes and logins racing", () => {
  it("two changes with the same old password: one wins, the other is refused", async () => {
    const user = await newUser(api, "change-race");
    const other = browser();
    expect2xx(await other.login(user.email, PASSWORD));
    const [first, second] = await Promise.all([
      user.client.post("/rpc/change_password", {
        current_password: PASSWORD,
        new_password: "first new one",
      }),
      other.post("/rpc/change_password", {
        current_password: PASSWORD,
        new_password: "second new one",
      }),
    ]);
    // The loser is refused either way: 403 when it waited for the winner and
    // then found the old password wrong, 401 when it arrived after the
    // winner had already ended every other session of the user.
    const statuses = [first.status, second.status].sort();
    expect(statuses[0]).toBe(200);
    expect([401, 403]).toContain(statuses[1]);
    const [winner, loser] =
      first.status === 200
        ? ["first new one", "second new one"]
        : ["second new one", "first new one"];
    expectStatus(await browser().login(user.email, loser), 401);
    expect2xx(await browser().login(user.email, winner));
  });

  it("no session opened with the old password outlives the change", async () => {
    const user = await newUser(api, "login-race");
    const logins = Array.from({ length: 6 }, () => browser().login(user.email, PASSWORD));
    const change = user.client.post("/rpc/change_password", {
      current_password: PASSWORD,
      new_password: "changed meanwhile",
    });
    const [changed] = await Promise.all([change, ...logins]);
    expectStatus(changed, 200);
    const live = await withDatabase(async (db) => {
      const { rows } = await db.query<{ n: number }>(
        `select count(*)::int as n from ${SESSIONS_TABLE} where user_id = $1 and revoked is null`,
        [user.userId],
      );
      return rows[0]?.n;
    });
    // Only the session the change itself created.
    expect(live).toBe(1);
  });
});

describe("21. the throttle's memory cannot be rolled back", () => {
  it("refuses Prefer: tx=rollback on a PostgREST that would honour it", async () => {
    const database = inject("database");
    const clusterDir = inject("clusterDir");
    const dbName = String(database.database);
    const postgrest = await startPostgrest({
      dbUri: `postgresql:///${dbName}?host=${encodeURIComponent(String(database.host))}&port=${database.port}&user=authenticator`,
      port: await freePort(),
      logFile: `${clusterDir}/postgrest-tx-override.log`,
      extraEnv: { PGRST_DB_TX_END: "commit-allow-override" },
    });
    try {
      const user = await newUser(postgrest.url, "tx-rollback");
      const client = new Browser(postgrest.url);
      const response = await client.post(
        "/rpc/login",
        { email: user.email, password: "a guess" },
        { Prefer: "tx=rollback" },
      );
      expectStatus(response, 400);
      expect(response.body).toMatchObject({ message: expect.stringContaining("tx=rollback") });
    } finally {
      await postgrest.stop();
    }
  });
});

describe("22. no password or token reaches the server log", () => {
  it("with log_statement = all and every duration logged", async () => {
    const deployment = await deployLocal({ port: await freePort(), tests: false });
    try {
      const db = await deployment.connect();
      await db.query("alter system set log_statement = 'all'");
      await db.query("alter system set log_min_duration_statement = 0");
      await db.query("select pg_reload_conf()");
      await db.end();
      // New connections see the new settings: restart PostgREST's pool.
      await deployment.postgrest.stop();
      const postgrest = await startPostgrest({
        dbUri: deployment.cluster.uri("authenticator", deployment.database),
        port: await freePort(),
        logFile: `${deployment.cluster.dir}/postgrest-2.log`,
      });
      try {
        const password = `log probe ${Date.now()} secret`;
        const client = new Browser(postgrest.url);
        expect2xx(await client.register(uniqueEmail("log-probe"), "Logged", password));
        expectStatus(await client.get("/todos"), 200);
        const token = client.sessionToken as string;
        expect(token).toBeDefined();
        const log = readFileSync(deployment.cluster.logFile, "utf8");
        expect(log).toContain("statement:"); // the logging is really on
        expect(log).not.toContain(password);
        expect(log).not.toContain(token);
      } finally {
        await postgrest.stop();
      }
    } finally {
      await deployment.stop();
    }
  });
});

describe("23. one request cannot hold a connection for long", () => {
  it("every request runs under a statement timeout", async () => {
    const database = inject("database");
    const client = new pg.Client({ ...database, user: "authenticator" });
    await client.connect();
    try {
      await client.query("set role webuser");
      const { rows } = await client.query<{ statement_timeout: string }>("show statement_timeout");
      expect(rows[0]?.statement_timeout).toBe("5s");
      await expect(client.query("select pg_sleep(6)")).rejects.toThrow(/statement timeout/);
    } finally {
      await client.end();
    }
  });
});

/**
 * Runs `work` on a throwaway cluster of its own (roles are cluster-wide) with
 * a superuser connection to its postgres database, and stops it afterwards.
 */
async function onOwnCluster(work: (admin: pg.Client) => Promise<void>): Promise<void> {
  const cluster = await startCluster();
  const admin = new pg.Client(cluster.connectionConfig());
  try {
    await admin.connect();
    await work(admin);
  } finally {
    await admin.end().catch(() => {});
    await cluster.stop();
  }
}

/** Why loading sessions.sql.md fails, or undefined when it loads. */
async function loadFailure(admin: pg.Client): Promise<string | undefined> {
  return loadSql(admin, await compileFile("sessions.sql.md")).then(
    () => undefined,
    (e: { report?: string; message: string }) => e.report ?? e.message,
  );
}

describe("26. pre-existing roles are checked, not trusted", () => {
  it("refuses to load onto a cluster whose anonymous role can log in, saying why", async () => {
    await onOwnCluster(async (admin) => {
      await admin.query("create role anonymous login password 'known to someone'");
      expect(await loadFailure(admin)).toContain(
        "existing roles would break the security model: anonymous can log in",
      );
    });
  });
});

describe("the search path other people's requests use cannot be planted on", () => {
  it("the module refuses to load while request roles may create objects, naming the fix", async () => {
    await onOwnCluster(async (admin) => {
      // PostgreSQL 13 and 14 grant this by default.
      await admin.query("grant create on schema public to public");
      expect(await loadFailure(admin)).toContain(
        "webuser may create objects in schema public (run: revoke create on schema public from public)",
      );
      await admin.query("revoke create on schema public from public");
      expect(await loadFailure(admin)).toBeUndefined();
    });
  });
});

describe("a project with the session module alone (no doors, no single sign-on)", () => {
  it("has no door or single sign-on roles, tables, functions or settings in its database", async () => {
    await onOwnCluster(async (admin) => {
      expect(await loadFailure(admin)).toBeUndefined();
      const { rows } = await admin.query<{ what: string }>(`
        select 'role ' || rolname as what from pg_roles
         where rolname in ('gateway', 'door_admin', 'door_guard', 'door_users') or rolcreaterole and not rolsuper
        union all
        select 'function ' || p.oid::regprocedure from pg_proc p
         where p.pronamespace in ('auth'::regnamespace, 'api'::regnamespace)
           and (p.proname like '%door%' or p.proname like 'pgweb%' or p.proname like '%identit%'
                or p.proname like '%claims%' or p.proname = 'login_with_token')
        union all
        select 'relation ' || oid::regclass from pg_class
         where relnamespace in ('auth'::regnamespace, 'api'::regnamespace)
           and (relname like '%door%' or relname like '%identit%')
        union all
        select 'column ' || attname from pg_attribute
         where attrelid = 'auth.settings'::regclass and (attname like 'door%' or attname like 'oidc%')`);
      expect(rows.map((r) => r.what)).toEqual([]);
    });
  });
});

describe("27. renewals and identities", () => {
  it("a logged-in user lists their identities (none for a password account)", async () => {
    const user = await newUser(api, "identities");
    const response = await user.client.get("/identities");
    expectStatus(response, 200);
    expect(response.body).toEqual([]);
  });
  // Max-Age never beyond the absolute deadline: pgTAP tests.test_renewal.
});
