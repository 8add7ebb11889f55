// The database doors: psql and node-postgres through the gateway log in with
// the app's users and sessions, see what the API shows them and no more,
// cannot become anyone else, and are shown the door when their session ends.
// pgweb's connect backend is exercised with the exact request pgweb sends.

import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startGateway } from "../src/gateway/server.js";
import { freePort } from "../src/net.js";
import { AUDIT_TABLE, expect2xx, expectStatus } from "./support/app.js";
import { selfSignedCertificate } from "./support/certificate.js";
import { TestClient } from "./support/client.js";
import { query, withDatabase } from "./support/database.js";
import { spawnCli, waitForReady } from "./support/deploy-local-process.js";
import {
  connectPg,
  doorUser,
  firstColumns,
  frontend,
  livePsql,
  loginError,
  providedDoors,
  RawClient,
  runPsql,
  runPsqlAt,
  sendCancel,
} from "./support/gateway.js";

const api = inject("apiUrl");
const provided = providedDoors(inject("doors"), "test/gateway.test.ts");
const doors = provided ?? { host: "", port: 0, pgwebUrl: "", pgwebToken: "" };
const suite = provided ? describe : describe.skip;
const test = provided ? it : it.skip;
const door = { host: doors.host, port: doors.port };

/** Descriptions of the todos GET /todos shows this user, sorted. */
async function todosOverHttp(client: TestClient): Promise<string[]> {
  const response = await client.get("/todos?select=description");
  expectStatus(response, 200);
  return (response.body as { description: string }[]).map((t) => t.description).sort();
}

/** Waits until `condition` holds, up to `ms`; returns how long it took. */
async function within(ms: number, condition: () => boolean | Promise<boolean>): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < ms) {
    if (await condition()) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`not within ${ms} ms`);
}

async function auditCount(event: string, userAgentLike: string): Promise<number> {
  const [row] = await query<{ n: number }>(
    `select count(*)::int as n from ${AUDIT_TABLE} where event = $1 and user_agent like $2`,
    [event, userAgentLike],
  );
  return row?.n ?? 0;
}

suite("logging in through the gateway", () => {
  it("psql with the account password sees exactly the rows the API shows", async () => {
    const user = await doorUser(api, "door-psql");
    const other = await doorUser(api, "door-psql-other");
    expectStatus(
      await user.client.post("/todos", { description: "mine, private", public: false }),
      201,
    );
    expectStatus(
      await other.client.post("/todos", { description: "theirs, private", public: false }),
      201,
    );
    expectStatus(
      await other.client.post("/todos", { description: "theirs, public", public: true }),
      201,
    );

    const result = await runPsql(door, user.email, user.password, [
      "-At",
      "-c",
      "select description from api.todos order by 1",
    ]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const overGateway = result.stdout.trim().split("\n").sort();
    expect(overGateway).toEqual(await todosOverHttp(user.client));
    expect(overGateway).toContain("mine, private");
    expect(overGateway).not.toContain("theirs, private");
  });

  it("a live session token logs in as that session, opening no new one", async () => {
    const user = await doorUser(api, "door-token");
    const before = (await user.client.get("/session_details")).body as unknown[];
    const result = await runPsql(door, user.email, user.client.sessionToken as string, [
      "-At",
      "-c",
      "select auth.current_user_id()",
    ]);
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe(String(user.userId));
    const after = (await user.client.get("/session_details")).body as unknown[];
    expect(after).toHaveLength(before.length);
  });

  it("a password login opens a session of its own, listed while connected and ended on disconnect", async () => {
    const user = await doorUser(api, "door-listed");
    const client = await connectPg(door, user.email, user.password, {
      application_name: "a BI tool",
    });
    const details = (await user.client.get("/session_details")).body as {
      via: string;
      client: string;
      session_id: number;
    }[];
    const mine = details.find((d) => d.via === "database: password");
    expect(mine?.client).toBe("a BI tool from 127.0.0.1");
    const sessions = (await user.client.get("/sessions")).body as { session_id: number }[];
    expect(sessions.map((s) => s.session_id)).toContain(mine?.session_id);
    await client.end();
    await within(5000, async () => {
      const now = (await user.client.get("/sessions")).body as { session_id: number }[];
      return !now.some((s) => s.session_id === mine?.session_id);
    });
  });

  it("node-postgres: parameterized and concurrent queries on a pool", async () => {
    const user = await doorUser(api, "door-pool");
    const pool = new pg.Pool({
      ...door,
      database: "app",
      user: user.email,
      password: user.client.sessionToken as string,
      max: 4,
    });
    try {
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          pool.query<{ n: number; who: string }>(
            "select $1::int * 2 as n, auth.current_user_id()::text as who",
            [i],
          ),
        ),
      );
      expect(answers.map((a) => a.rows[0]?.n)).toEqual(Array.from({ length: 40 }, (_, i) => i * 2));
      expect(new Set(answers.map((a) => a.rows[0]?.who))).toEqual(new Set([String(user.userId)]));
    } finally {
      await pool.end();
    }
  });

  it("pipelined messages arrive intact, in order", async () => {
    const user = await doorUser(api, "door-pipeline");
    const raw = await RawClient.login(door, user.email, user.client.sessionToken as string);
    try {
      // Three simple queries and an extended-protocol query in one write.
      raw.write(
        frontend.query("select 'one'"),
        frontend.query("select 'two'; select 'three'"),
        frontend.parse("select $1::text || '!'"),
        frontend.bind(["four"]),
        frontend.execute(),
        frontend.sync(),
        frontend.query(`select repeat('x', 100000)`),
      );
      const messages = await raw.untilReady(4);
      const values = firstColumns(messages);
      expect(values.slice(0, 4)).toEqual(["one", "two", "three", "four!"]);
      expect(values[4]).toHaveLength(100_000);
      expect(messages.filter((m) => m.type === "E")).toEqual([]);
    } finally {
      raw.close();
    }
  });
});

suite("psql works as it does against PostgreSQL", () => {
  it("describes objects, runs transactions and copies data", async () => {
    const user = await doorUser(api, "door-features");
    const script = [
      "\\d api.todos",
      "begin;",
      "insert into api.todos (description) values ('rolled back');",
      "rollback;",
      "select count(*) from api.todos where description = 'rolled back';",
      "create temp table numbers (n int);",
      "\\copy numbers from stdin",
      "1",
      "2",
      "3",
      "\\.",
      "select sum(n) from numbers;",
      "copy (select n from numbers order by n) to stdout;",
    ].join("\n");
    const result = await runPsql(
      door,
      user.email,
      user.password,
      ["-Atq", "-v", "ON_ERROR_STOP=1"],
      `${script}\n`,
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/description\|text/);
    const lines = result.stdout.trim().split("\n");
    expect(lines.slice(-5)).toEqual(["0", "6", "1", "2", "3"]);
  });

  it("Ctrl-C sends a cancel request through the gateway and stops the query", async () => {
    const user = await doorUser(api, "door-cancel");
    const psql = livePsql(door, user.email, user.client.sessionToken as string);
    let stderr = "";
    let stdout = "";
    psql.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    psql.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    const closed = new Promise((r) => psql.on("close", r));
    psql.stdin.write("select 'started';\nselect pg_sleep(30);\n");
    await within(10_000, () => stdout.includes("started"));
    await new Promise((r) => setTimeout(r, 300));
    const interrupted = performance.now();
    psql.kill("SIGINT");
    // psql stops a script after Ctrl-C; the query must have been cancelled,
    // not waited out.
    await closed;
    expect(stderr).toContain("Cancel request sent");
    expect(stderr).toContain("canceling statement due to user request");
    expect(performance.now() - interrupted).toBeLessThan(10_000);
  });

  it("a cancel request with the gateway's key stops a query and the connection goes on", async () => {
    const user = await doorUser(api, "door-cancel-pg");
    const client = await connectPg(door, user.email, user.password);
    // Caught at once: the cancel may land before its socket closes.
    const sleeping = client.query("select pg_sleep(30)").then(
      () => undefined,
      (error: unknown) => error,
    );
    await new Promise((r) => setTimeout(r, 300));
    await sendCancel(door, client);
    expect(await sleeping).toMatchObject({ code: "57014" });
    const after = await client.query<{ ok: number }>("select 1 as ok");
    expect(after.rows[0]?.ok).toBe(1);
    await client.end();
  });
});

suite("refusals", () => {
  it("wrong passwords, dead, revoked and foreign session tokens are refused and audited", async () => {
    const user = await doorUser(api, "door-refused");
    const other = await doorUser(api, "door-refused-other");
    const wrong = await loginError(door, user.email, "not the password");
    expect(wrong?.code).toBe("28P01");
    expect(wrong?.message).toBe(`password authentication failed for user "${user.email}"`);

    expect((await loginError(door, user.email, other.client.sessionToken as string))?.code).toBe(
      "28P01",
    );
    const token = user.client.sessionToken as string;
    expect2xx(await user.client.post("/rpc/logout", {}));
    expect((await loginError(door, user.email, token))?.code).toBe("28P01");
    expect((await loginError(door, "nobody@example.com", "whatever it is"))?.code).toBe("28P01");
    const [row] = await query<{ n: number }>(
      `select count(*)::int as n from ${AUDIT_TABLE} where event = 'door_failed' and email = lower($1)`,
      [user.email],
    );
    expect(row?.n).toBe(3);
  });

  it("throttles like /rpc/login: the 6th attempt is refused even with the right password", async () => {
    const user = await doorUser(api, "door-throttle");
    for (let i = 0; i < 5; i++) {
      expect((await loginError(door, user.email, `guess ${i}`))?.code).toBe("28P01");
    }
    const throttled = await loginError(door, user.email, user.password);
    expect(throttled?.code).toBe("28000");
    expect(throttled?.message).toBe("too many failed attempts for this email");
    // The same throttle as HTTP: the API refuses the right password too.
    const http = await new TestClient(api).login(user.email, user.password);
    expectStatus(http, 429);
  });

  it("refuses startup options, replication and other databases before asking for a password", async () => {
    const user = await doorUser(api, "door-startup");
    const options = await loginError(door, user.email, user.password, {
      options: `-c auth.user_id=1 -c auth.identified=yes`,
    });
    expect(options?.message).toMatch(/startup options/);
    const database = await loginError(door, user.email, user.password, { database: "postgres" });
    expect(database?.code).toBe("3D000");
    const replication = await loginError(door, user.email, user.password, {
      replication: "database",
    } as pg.ClientConfig);
    expect(replication?.message).toMatch(/replication/);
  });
});

suite("identity that SQL cannot change", () => {
  it("every escape attempt fails and the identity stays the same", async () => {
    const user = await doorUser(api, "door-escape");
    const victim = await doorUser(api, "door-victim");
    const client = await connectPg(door, user.email, user.password);
    const who = async () =>
      (await client.query<{ id: string }>("select auth.current_user_id()::text as id")).rows[0]?.id;
    const attempts: Array<[string, string]> = [
      ["SET ROLE anonymous", "set role anonymous"],
      ["SET ROLE authenticator", "set role authenticator"],
      ["SET ROLE gateway", "set role gateway"],
      ["SET ROLE postgres", "set role postgres"],
      ["SET SESSION AUTHORIZATION", "set session authorization postgres"],
      [
        "SET SESSION AUTHORIZATION of the victim's role",
        `set session authorization pgs_user_0_${victim.userId}`,
      ],
      ["reading sessions", "select * from auth.sessions"],
      ["reading password hashes", "select password_hash from auth.users"],
      ["changing settings", "update auth.settings set jwt_user_id_role = current_user"],
      ["creating a role", "create role sneaky login"],
      ["a door_admin function", "select auth.door_login_role(1, 'SCRAM-SHA-256$1:a$b:c')"],
      ["the gateway's functions", "select * from auth.door_open('password', 'x', 'y', 'z', 'w')"],
      ["granting itself webuser's owner", "grant api_owner to current_user"],
    ];
    const failures: string[] = [];
    for (const [name, sql] of attempts) {
      try {
        await client.query(sql);
        failures.push(`${name} succeeded`);
      } catch {
        // refused, as it should be
      }
      if ((await who()) !== String(user.userId)) failures.push(`${name} changed the identity`);
    }
    // Statements that succeed but must not matter.
    const harmless = [
      `set auth.identified = 'yes'`,
      `set auth.user_id = '${victim.userId}'`,
      `select set_config('auth.user_id', '${victim.userId}', false)`,
      `set auth.session_id = '1'`,
      "set role webuser",
      "reset role",
      `set request.cookies = '{"session_token": "${victim.client.sessionToken}"}'`,
      `set request.method = 'POST'`,
      // Names the deployment's settings once had: read from auth.settings now.
      "set sessions.idle_timeout = '10 years'",
      "set sessions.oidc_link_by_email = 'on'",
      `set app.user_id = '${victim.userId}'`,
    ];
    for (const sql of harmless) {
      await client.query(sql);
      if ((await who()) !== String(user.userId)) failures.push(`${sql} changed the identity`);
    }
    // Forged claims: login_with_token must not take the client's word.
    await client.query(`select set_config('request.jwt.claims', $1, false)`, [
      JSON.stringify({
        iss: "https://idp.example",
        sub: "forged",
        aud: "todo-app",
        exp: 4102444800,
        email: victim.email,
        email_verified: true,
      }),
    ]);
    const forged = await client.query<{ answer: { message: string } }>(
      "select api.login_with_token() as answer",
    );
    expect(forged.rows[0]?.answer.message).toMatch(/not from a database connection/);
    // No second identity through the HTTP endpoints either: they are for HTTP.
    for (const sql of ["select api.login($1, $2)", "select api.register($1, 'Twin', $2)"]) {
      await expect(client.query(sql, [victim.email, victim.password])).rejects.toThrow(
        /for the HTTP API, not for a database connection/,
      );
    }
    const ownSession = await client.query<{ days: number }>(
      "select extract(epoch from max(expires) - now()) / 86400 as days from api.session_details",
    );
    const days = ownSession.rows[0]?.days;
    expect(days).not.toBeNull();
    expect(Number(days)).toBeGreaterThan(0);
    expect(Number(days)).toBeLessThan(31);
    // The victim's todos stay invisible, logout ends nothing of the victim's.
    expectStatus(
      await victim.client.post("/todos", { description: "victim's secret", public: false }),
      201,
    );
    const seen = await client.query(
      "select * from api.todos where description = 'victim''s secret'",
    );
    expect(seen.rowCount).toBe(0);
    await expect(client.query("select api.logout()")).rejects.toThrow(/for the HTTP API/);
    expectStatus(await victim.client.get("/rpc/current_user"), 200);
    await client.end();
    expect(failures).toEqual([]);
  });
});

suite("revocation", () => {
  /** A psql that runs a query every 0.1 s until its connection ends. */
  async function liveUntilGone(user: { email: string }, password: string) {
    const psql = livePsql(door, user.email, password);
    let stdout = "";
    let stderr = "";
    let exitedAt = 0;
    psql.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    psql.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const closed = new Promise<void>((resolve) =>
      psql.on("close", () => {
        exitedAt = performance.now();
        resolve();
      }),
    );
    psql.stdin.write("select 'connected';\nselect 1 \\watch 0.1\n");
    await within(10_000, () => stdout.includes("connected") || exitedAt > 0);
    if (!stdout.includes("connected")) throw new Error(`psql did not connect: ${stderr}`);
    return { closed, exitedAt: () => exitedAt, psql };
  }

  it.each([
    ["logout", async (c: TestClient) => c.post("/rpc/logout", {})],
    ["logout everywhere", async (c: TestClient) => c.post("/rpc/logout_everywhere", {})],
    [
      "DELETE /sessions",
      async (c: TestClient) => {
        const [current] = (
          (await c.get("/sessions")).body as { session_id: number; current: boolean }[]
        ).filter((s) => s.current);
        return c.delete(`/sessions?session_id=eq.${current?.session_id}`);
      },
    ],
  ])(
    "%s ends a live psql on that session within a second, and its token no longer works",
    async (_, revoke) => {
      const user = await doorUser(api, "door-revoke");
      const token = user.client.sessionToken as string;
      const live = await liveUntilGone(user, token);
      const revokedAt = performance.now();
      expect2xx(await revoke(user.client));
      await live.closed;
      const took = live.exitedAt() - revokedAt;
      console.log(`revocation ended the psql session in ${took.toFixed(0)} ms`);
      expect(took).toBeLessThan(1500);
      expect((await loginError(door, user.email, token))?.code).toBe("28P01");
    },
  );

  it("a password change ends password connections, and the old password no longer works", async () => {
    const user = await doorUser(api, "door-change");
    const live = await liveUntilGone(user, user.password);
    const changedAt = performance.now();
    expect2xx(
      await user.client.post("/rpc/change_password", {
        current_password: user.password,
        new_password: "a brand new password",
      }),
    );
    await live.closed;
    expect(live.exitedAt() - changedAt).toBeLessThan(1500);
    expect((await loginError(door, user.email, user.password))?.code).toBe("28P01");
    expect(await loginError(door, user.email, "a brand new password")).toBeUndefined();
  });

  it("an expired session's connection is ended too", async () => {
    const user = await doorUser(api, "door-expire");
    const live = await liveUntilGone(user, user.client.sessionToken as string);
    await withDatabase((db) =>
      db.query(
        "update auth.sessions set expires = now() - interval '1 second' where user_id = $1",
        [user.userId],
      ),
    );
    await live.closed;
    expect(live.exitedAt()).toBeGreaterThan(0);
  });
});

suite("pgweb's connect backend", () => {
  /** The request exactly as pgweb's connect.Backend.FetchCredential sends it. */
  function pgwebRequest(ticket: string, token: string, headers?: Record<string, string>) {
    const body: { resource: string; token: string; headers?: Record<string, string> } = {
      resource: ticket,
      token,
    };
    // Go's encoding/json with `omitempty`: no "headers" key when none are passed.
    if (headers && Object.keys(headers).length > 0) body.headers = headers;
    return fetch(doors.pgwebUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "Go-http-client/1.1",
        "accept-encoding": "gzip",
      },
      body: JSON.stringify(body),
    });
  }

  async function ticketFor(client: TestClient): Promise<string> {
    const response = await client.post("/rpc/pgweb_ticket", {});
    expectStatus(response, 200);
    const { ticket, expires_in } = response.body as { ticket: string; expires_in: number };
    expect(ticket).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(expires_in).toBe(60);
    return ticket;
  }

  it("turns a ticket into a database URL that logs in as the user, once", async () => {
    const user = await doorUser(api, "door-pgweb");
    const ticket = await ticketFor(user.client);
    const response = await pgwebRequest(ticket, doors.pgwebToken);
    expect(response.status).toBe(200);
    const { database_url } = (await response.json()) as { database_url: string };
    expect(database_url).toMatch(/^postgres:\/\//);
    const client = new pg.Client({ connectionString: database_url });
    await client.connect();
    const { rows } = await client.query<{ id: string }>(
      "select auth.current_user_id()::text as id",
    );
    expect(rows[0]?.id).toBe(String(user.userId));
    await client.end();
    const details = (await user.client.get("/session_details")).body as { via: string }[];
    expect(details.map((d) => d.via)).toContain("pgweb");

    // With headers passed through (pgweb --connect-headers), too; but never twice.
    const again = await pgwebRequest(ticket, doors.pgwebToken, { "x-forwarded-for": "10.0.0.1" });
    expect(again.status).toBe(404);
  });

  it("refuses a wrong connect token, an expired ticket and anything but a JSON POST", async () => {
    const user = await doorUser(api, "door-pgweb-refused");
    const ticket = await ticketFor(user.client);
    expect((await pgwebRequest(ticket, "not the connect token")).status).toBe(401);
    await withDatabase((db) =>
      db.query(
        "update auth.door_tickets set expires = now() - interval '1 second' where user_id = $1",
        [user.userId],
      ),
    );
    expect((await pgwebRequest(ticket, doors.pgwebToken)).status).toBe(404);
    expect((await fetch(doors.pgwebUrl)).status).toBe(405);
    const form = await fetch(doors.pgwebUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "resource=x",
    });
    expect(form.status).toBe(415);
    expectStatus(await new TestClient(api).post("/rpc/pgweb_ticket", {}), 401);
  });

  it("a revoked pgweb session's URL no longer logs in", async () => {
    const user = await doorUser(api, "door-pgweb-revoked");
    const response = await pgwebRequest(await ticketFor(user.client), doors.pgwebToken);
    const { database_url } = (await response.json()) as { database_url: string };
    const [pgwebSession] = (
      (await user.client.get("/session_details")).body as {
        via: string;
        session_id: number;
      }[]
    ).filter((d) => d.via === "pgweb");
    expect2xx(await user.client.delete(`/sessions?session_id=eq.${pgwebSession?.session_id}`));
    const url = new URL(database_url);
    const refused = await loginError(
      { host: url.hostname, port: Number(url.port) },
      decodeURIComponent(url.username),
      decodeURIComponent(url.password),
    );
    expect(refused?.code).toBe("28P01");
  });
});

suite("TLS", () => {
  let certDir: string;
  let address: string | undefined;

  beforeAll(() => {
    certDir = mkdtempSync(join(tmpdir(), "pgs-gateway-tls-"));
    selfSignedCertificate("gateway.test", {
      key: join(certDir, "key.pem"),
      cert: join(certDir, "cert.pem"),
    });
    address = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === "IPv4" && !i.internal)?.address;
  });

  afterAll(() => {
    rmSync(certDir, { recursive: true, force: true });
  });

  it("from another host, passwords travel only over TLS", async () => {
    if (!address) {
      throw new Error("this machine has no non-loopback IPv4 address to test a remote client from");
    }
    const database = inject("database");
    const gateway = await startGateway({
      control: { ...database, user: "postgres" },
      upstream: {
        socketPath: `${database.host}/.s.PGSQL.${database.port}`,
        port: Number(database.port),
        database: String(database.database),
      },
      host: "0.0.0.0",
      tls: {
        key: readFileSync(join(certDir, "key.pem")),
        cert: readFileSync(join(certDir, "cert.pem")),
      },
    });
    try {
      const user = await doorUser(api, "door-tls");
      const remote = { host: address, port: gateway.port };
      const plain = await loginError(remote, user.email, user.password, { ssl: false });
      expect(plain?.message).toBe("this gateway accepts passwords and tokens only over TLS");
      const secure = await connectPg(remote, user.email, user.password, {
        ssl: { rejectUnauthorized: false },
      });
      const { rows } = await secure.query<{ ssl: boolean }>(
        "select auth.current_user_id() is not null as ssl",
      );
      expect(rows[0]?.ssl).toBe(true);

      // A cancel request may come over TLS too (libpq 17's cancel functions
      // negotiate it first): it still stops the query.
      const { processID, secretKey } = secure as unknown as {
        processID: number;
        secretKey: number;
      };
      const sleeping = secure.query("select pg_sleep(30)").then(
        () => undefined,
        (error: unknown) => error,
      );
      await new Promise((r) => setTimeout(r, 300));
      const socket = createConnection(gateway.port, address);
      await once(socket, "connect");
      const sslRequest = Buffer.alloc(8);
      sslRequest.writeInt32BE(8, 0);
      sslRequest.writeInt32BE(80877103, 4);
      socket.write(sslRequest);
      const [answer] = (await once(socket, "data")) as [Buffer];
      expect(answer.toString("latin1", 0, 1)).toBe("S");
      const encrypted = tlsConnect({ socket, rejectUnauthorized: false });
      await once(encrypted, "secureConnect");
      const cancel = Buffer.alloc(16);
      cancel.writeInt32BE(16, 0);
      cancel.writeInt32BE(80877102, 4);
      cancel.writeInt32BE(processID, 8);
      cancel.writeInt32BE(secretKey, 12);
      encrypted.write(cancel);
      await once(encrypted, "close");
      expect(await sleeping).toMatchObject({ code: "57014" });
      await secure.end();
      // Loopback clients may skip TLS (the same machine sees the traffic anyway).
      expect(
        await loginError({ host: "127.0.0.1", port: gateway.port }, user.email, user.password),
      ).toBeUndefined();
    } finally {
      await gateway.close();
    }
  });
});

test("audits door logins with the client they came from", async () => {
  const user = await doorUser(api, "door-audit");
  await runPsql(door, user.email, user.password, ["-c", "select 1"]);
  expect(await auditCount("door_login", "psql from 127.0.0.1")).toBeGreaterThan(0);
});

test("npm start's printed gateway command logs a fixture user in", async () => {
  const run = spawnCli(["deploy-local", "--port", String(await freePort()), "--no-tests"]);
  try {
    await waitForReady(run);
    const line = run
      .stdout()
      .split("\n")
      .find((l) => l.startsWith("gateway:"));
    const command = /psql "([^"]+)"/.exec(line ?? "")?.[1];
    expect(command, run.stdout()).toMatch(/user=alice@example\.com/);
    const result = await runPsqlAt(command as string, "correct horse battery", [
      "-At",
      "-c",
      'select name from api."current_user"()',
    ]);
    expect(result.stdout.trim(), result.stderr).toBe("Alice");
    expect(result.code).toBe(0);
  } finally {
    run.child.kill("SIGINT");
    await run.exited;
  }
});

suite("the gateway command, on its own", () => {
  const database = inject("database");
  const urlOf = (name: string) =>
    `postgres://gateway@/${name}?host=${encodeURIComponent(String(database.host))}&port=${database.port}`;

  async function failure(databaseUrl: string): Promise<{ code: number | null; stderr: string }> {
    const run = spawnCli([
      "gateway",
      "--database-url",
      databaseUrl,
      "--listen",
      `127.0.0.1:${await freePort()}`,
    ]);
    const code = await run.exited;
    return { code, stderr: run.stderr() };
  }

  it("stops with the reason when the database cannot serve doors", async () => {
    const withoutDoors = await failure(urlOf("postgres"));
    expect(withoutDoors.code).not.toBe(0);
    expect(withoutDoors.stderr).toMatch(/has no database doors .*load doors\.sql\.md/);
    const missing = await failure(urlOf("no_such_database"));
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/does not exist[\s\S]*hint: create it first/);
  });

  it("lets a user in with psql, as deploy-local's gateway does", async () => {
    const port = await freePort();
    const run = spawnCli([
      "gateway",
      "--database-url",
      urlOf(String(database.database)),
      "--listen",
      `127.0.0.1:${port}`,
    ]);
    try {
      await within(15_000, () => run.stderr().includes("gateway: listening on"));
      const user = await doorUser(api, "door-standalone");
      const result = await runPsql({ host: "127.0.0.1", port }, user.email, user.password, [
        "-At",
        "-c",
        "select auth.current_user_id()",
      ]);
      expect(result.stdout.trim(), result.stderr).toBe(String(user.userId));
    } finally {
      run.child.kill("SIGINT");
    }
    expect(await run.exited).toBe(0);
  });
});
