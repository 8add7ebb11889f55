// Sessions live in the database, not in PostgREST: they must survive a
// PostgREST restart and a PostgreSQL restart, work across several PostgREST
// instances (horizontal scaling), and hold up under concurrent logins and
// registrations. This file restarts things, so it runs its own deploy-local
// instance instead of the shared one the other test files use in parallel.

import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { type PostgrestProcess, startPostgrest } from "../src/serving/postgrest.js";
import { expect2xx, expectStatus, SESSIONS_TABLE, shown, USERS_TABLE } from "./support/app.js";
import { newUser, PASSWORD, TestClient, type TestResponse, uniqueEmail } from "./support/client.js";
import { withDatabase } from "./support/database.js";

let deployment: LocalDeployment;
/** The PostgREST currently serving `deployment`'s port (replaced by the restart test). */
let postgrest: PostgrestProcess;
/** Extra PostgREST processes a test started; stopped after the file. */
const extraPostgrests: PostgrestProcess[] = [];
let database: pg.ClientConfig;

beforeAll(async () => {
  deployment = await deployLocal({ port: await freePort(), tests: false });
  postgrest = deployment.postgrest;
  database = deployment.cluster.connectionConfig(deployment.database);
});

afterAll(async () => {
  for (const extra of extraPostgrests) await extra.stop();
  await postgrest?.stop();
  await deployment?.stop();
});

const api = () => deployment.url;

/** A PostgREST on the same database as `deployment`, as a second node behind a load balancer would be. */
async function startSecondPostgrest(port?: number): Promise<PostgrestProcess> {
  const server = await startPostgrest({
    dbUri: deployment.cluster.uri("authenticator", deployment.database),
    port: port ?? (await freePort()),
    logFile: `${deployment.cluster.dir}/postgrest-${extraPostgrests.length + 2}.log`,
  });
  extraPostgrests.push(server);
  return server;
}

/**
 * Repeats `send` until it gives `status` or `timeoutMs` runs out. After a
 * restart, PostgREST may refuse connections or answer 503 for a moment while
 * it reconnects; that is expected, anything else at the end is a failure.
 */
async function eventually(
  send: () => Promise<TestResponse>,
  status: number,
  timeoutMs = 15_000,
): Promise<TestResponse> {
  const deadline = Date.now() + timeoutMs;
  let last: TestResponse | Error | undefined;
  while (Date.now() < deadline) {
    try {
      last = await send();
      if (last.status === status) return last;
    } catch (error) {
      last = error as Error; // connection refused or reset while restarting
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `no ${status} within ${timeoutMs} ms; last: ${last instanceof Error ? last.message : last && shown(last)}`,
  );
}

describe("restarts", () => {
  it("sessions survive a PostgREST restart", async () => {
    const { client } = await newUser(api(), "restart-postgrest");
    const port = postgrest.port;
    await postgrest.stop();
    postgrest = await startPostgrest({
      dbUri: deployment.cluster.uri("authenticator", deployment.database),
      port,
      logFile: `${deployment.cluster.dir}/postgrest.log`,
    });
    await eventually(() => client.currentUser(), 200);
    expect2xx(await client.post("/rpc/refresh_session"));
  });

  it("sessions survive a PostgreSQL restart once PostgREST has reconnected", async () => {
    const { client, email } = await newUser(api(), "restart-postgres");
    await deployment.cluster.restart();
    const me = await eventually(() => client.currentUser(), 200);
    expect(me.body).toMatchObject({ email });
    // New logins work too, not just reads of old sessions.
    expect2xx(await new TestClient(api()).login(email, PASSWORD));
  });
});

describe("deployment settings", () => {
  // CONTRACT.md: timeouts, Secure and the allowed origins are settings a
  // deployment changes without editing function bodies. They live in a
  // table (auth.settings), so a change reaches every
  // connection PostgREST already has open, with no restart.
  async function updateSettings(assignments: string): Promise<void> {
    await withDatabase((db) => db.query(`update auth.settings set ${assignments}`), database);
  }

  it("idle timeout, Secure and allowed origins take effect on the next request, without a restart", async () => {
    const pid = postgrest.pid;
    // Warm PostgREST's pool first, so the change has open connections to reach.
    const warm = new TestClient(api());
    for (let i = 0; i < 5; i++) await warm.get("/todos");
    await updateSettings(
      "idle_timeout = '10 minutes', cookie_secure = true, allowed_origins = '{https://partner.example}'",
    );
    try {
      const client = new TestClient(api());
      const registered = await client.register(uniqueEmail("settings"), "Settings", PASSWORD);
      expect2xx(registered);
      const cookie = registered.setCookies.find((c) => c.name === "__Host-session_token");
      expect(cookie, registered.text).toMatchObject({ maxAge: 600, secure: true, path: "/" });
      // The test client is not a browser on https: hand the cookie over by name.
      const partner = await client.post(
        "/todos",
        { description: "from an allowed origin" },
        { Origin: "https://partner.example", Cookie: `__Host-session_token=${cookie?.value}` },
      );
      expectStatus(partner, 201);
      const evil = await client.post(
        "/todos",
        { description: "from elsewhere" },
        { Origin: "https://evil.example" },
      );
      expectStatus(evil, 403);
      expect(postgrest.pid).toBe(pid);
    } finally {
      // Back to what deploy-local set, for the other tests in this file.
      await updateSettings(
        "idle_timeout = '30 minutes', cookie_secure = false, allowed_origins = '{}'",
      );
    }
  });
});

describe("two PostgREST instances on one database", () => {
  it("accept each other's sessions, and a logout on one is a logout on both", async () => {
    const second = await startSecondPostgrest();
    const user = await newUser(api(), "two-nodes");
    // One browser behind a load balancer: the same cookie jar, two servers.
    const viaSecond = new TestClient(second.url, { jar: user.client.jar });
    expectStatus(await viaSecond.currentUser(), 200);

    const fresh = new TestClient(second.url);
    expect2xx(await fresh.login(user.email, user.password));
    const viaFirst = new TestClient(api(), { jar: fresh.jar });
    expectStatus(await viaFirst.currentUser(), 200);

    expect2xx(await viaSecond.logout());
    expectStatus(await user.client.currentUser(), 401);
    expectStatus(await viaFirst.currentUser(), 200);
  });
});

describe("concurrency", () => {
  it("50 concurrent logins all succeed, each with its own session", async () => {
    const users = await Promise.all(
      Array.from({ length: 5 }, (_, i) => newUser(api(), `concurrent-login-${i}`)),
    );
    // Half the logins are for the same user, the rest spread over the others.
    const logins = Array.from({ length: 50 }, (_, i) =>
      i % 2 === 0 ? users[0] : users[1 + (i % 4)],
    ).map(async (user) => {
      const client = new TestClient(api());
      // Fifty at once are more than this machine's one password window
      // serves within the line's bound: a "come back in a second" (429 with
      // Retry-After: 1) is taken as a browser would take it. Ten at once
      // never need it (test/contract.test.ts).
      let response = await client.login(user?.email ?? "", PASSWORD);
      for (let tries = 1; response.status === 429 && tries < 10; tries++) {
        expect(response.headers["retry-after"]).toBe("1");
        await new Promise((r) => setTimeout(r, 1000));
        response = await client.login(user?.email ?? "", PASSWORD);
      }
      return { response, token: client.sessionToken };
    });
    const results = await Promise.all(logins);
    for (const { response } of results) expect2xx(response);
    expect(new Set(results.map((r) => r.token)).size).toBe(50);

    // 50 logins plus the 5 sessions from registering, none lost, none extra.
    const sessions = await withDatabase(async (db) => {
      const { rows } = await db.query<{ n: number }>(
        `select count(*)::int as n from ${SESSIONS_TABLE} where user_id = any($1)`,
        [users.map((u) => u.userId)],
      );
      return rows[0]?.n;
    }, database);
    expect(sessions).toBe(55);
  });

  it("50 concurrent registrations, some for the same email, give one account per email", async () => {
    // 30 distinct emails; 10 of them are sent three times, some upper-cased.
    const distinct = Array.from({ length: 30 }, () => uniqueEmail("concurrent-register"));
    const attempts = [
      ...distinct,
      ...distinct.slice(0, 10),
      ...distinct.slice(0, 10).map((e) => e.toUpperCase()),
    ];
    expect(attempts).toHaveLength(50);
    const responses = await Promise.all(
      attempts.map((email) => new TestClient(api()).register(email, "Concurrent", PASSWORD)),
    );
    for (const response of responses) {
      expect([200, 204, 409], shown(response)).toContain(response.status);
    }
    const successes = responses.filter((r) => r.status < 300);
    expect(successes).toHaveLength(30);
    for (const email of distinct) {
      const forThisEmail = responses.filter((_, i) => attempts[i]?.toLowerCase() === email);
      expect(
        forThisEmail.filter((r) => r.status < 300),
        email,
      ).toHaveLength(1);
    }

    const stored = await withDatabase(async (db) => {
      const { rows } = await db.query<{ email: string; n: number }>(
        `select lower(email::text) as email, count(*)::int as n from ${USERS_TABLE}
          where lower(email::text) = any($1) group by 1`,
        [distinct],
      );
      return rows;
    }, database);
    expect(stored).toHaveLength(30);
    for (const row of stored) expect(row.n, row.email).toBe(1);
  });
});
