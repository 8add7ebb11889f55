// A door user is treated as hostile: what two outside reviews did with a
// real SQL login through the gateway, each attempt made again here against
// a gateway with short limits, and what must hold instead. Numbers in the
// describe names are the (20: door trust, 21: the gateway under abuse).

import { readFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DEFAULT_LIMITS } from "../src/gateway/limits.js";
import { type Gateway, startGateway } from "../src/gateway/server.js";
import { freePort } from "../src/net.js";
import { deployLocal } from "../src/serving/deploy.js";
import { expectStatus } from "./support/app.js";
import { backendAlive, backendPid, IGNORES_CANCEL, sleep, within } from "./support/backends.js";
import { newUser, TestClient } from "./support/client.js";
import { query } from "./support/database.js";
import {
  connectPg,
  type Door,
  doorUser,
  LoginRefused,
  loginError,
  providedDoors,
  RawClient,
} from "./support/gateway.js";

const api = inject("apiUrl");
const database = inject("database");
const clusterDir = inject("clusterDir");
const provided = providedDoors(inject("doors"), "test/door-abuse.test.ts");
const suite = provided ? describe : describe.skip;

const LIMITS = {
  maxStatementMs: 1500,
  maxTransactionMs: 4000,
  maxIdleInTransactionMs: 1000,
  authenticationTimeoutMs: 1500,
  maxConnectionsPerUser: 3,
  maxConnectionsPerAddress: 8,
  maxPending: 12,
  maxPendingPerAddress: 4,
};

function upstream() {
  return {
    socketPath: `${database.host}/.s.PGSQL.${database.port}`,
    port: Number(database.port),
    database: String(database.database),
  };
}

/** A gateway of this file's own, logging in as the gateway role (the socket trusts it). */
function ownGateway(limits: Partial<typeof LIMITS> = {}): Promise<Gateway> {
  return startGateway({
    control: { ...database, user: "gateway" },
    upstream: upstream(),
    limits: { ...LIMITS, ...limits },
    pollIntervalMs: 100,
    ...(process.env.DEBUG_GATEWAY
      ? { log: (line: string) => process.stderr.write(`${line}\n`) }
      : {}),
  });
}

let gateway: Gateway;
let door: Door;

beforeAll(async () => {
  if (!provided) return;
  gateway = await ownGateway();
  door = { host: gateway.host, port: gateway.port, database: String(database.database) };
});

afterAll(async () => {
  await gateway?.close();
});

suite("20: a door is a privilege", () => {
  it("a new account has none until it is granted, and revoking it ends its connections at once", async () => {
    const user = await newUser(api, "abuse-grant");
    const refused = await loginError(door, user.email, user.password);
    expect(refused).toMatchObject({
      code: "28000",
      message: "this account has no database access",
    });
    await query("select auth.grant_door($1)", [user.userId]);
    const client = await connectPg(door, user.email, user.password);
    const pid = await backendPid(client);
    const running = client.query(IGNORES_CANCEL).catch((error: Error) => error);
    await sleep(200);
    await query("select auth.revoke_door($1)", [user.userId]);
    await within(1000, async () => !(await backendAlive(pid)));
    expect(await running).toBeInstanceOf(Error);
    expect((await loginError(door, user.email, user.password))?.code).toBe("28000");
    await client.end().catch(() => {});
  });
});

suite("20.1: nothing can be planted where other people's requests look", () => {
  it("a door user may create objects in no schema", async () => {
    const user = await doorUser(api, "abuse-plant");
    const client = await connectPg(door, user.email, user.password);
    try {
      for (const sql of [
        "create function public.starts_with(name, text) returns boolean language sql as 'select true'",
        "create table public.planted (x int)",
        "create function api.planted() returns int language sql as 'select 1'",
        "create schema planted",
        "create function auth.planted() returns int language sql as 'select 1'",
      ]) {
        await expect(client.query(sql), sql).rejects.toMatchObject({ code: "42501" });
      }
    } finally {
      await client.end();
    }
  });
});

suite("20.2 and 21: logins depend on no lock a door user can take", () => {
  it("advisory locks held by a door user stop no login, and the windows are not theirs to lock", async () => {
    const attacker = await doorUser(api, "abuse-locks");
    const [webUser, doorPerson] = await Promise.all([
      newUser(api, "abuse-locks-web"),
      doorUser(api, "abuse-locks-door"),
    ]);
    const holder = await connectPg(door, attacker.email, attacker.password);
    try {
      await holder.query("select pg_advisory_lock(1936942960, n) from generate_series(1, 64) n");
      await holder.query("select pg_advisory_lock(n) from generate_series(1, 64) n");
      for (const table of ["password_slots", "password_places", "email_turns"]) {
        await expect(
          holder.query(`select from auth.${table} for update`),
          table,
        ).rejects.toMatchObject({ code: "42501" });
      }
      const [web, other] = await Promise.all([
        new TestClient(api).login(webUser.email, webUser.password),
        connectPg(door, doorPerson.email, doorPerson.password),
      ]);
      expectStatus(web, 200);
      await other.end();
    } finally {
      await holder.end();
    }
  });
});

suite("20.3 and 21.5: time limits no client can SET away", () => {
  it("a table locked for everyone is let go at the idle-in-transaction limit", async () => {
    const attacker = await doorUser(api, "abuse-lock-table");
    const bystander = await newUser(api, "abuse-bystander");
    const locker = await connectPg(door, attacker.email, attacker.password);
    await locker.query("set idle_in_transaction_session_timeout = 0");
    await locker.query("begin");
    await locker.query("lock table api.todos in access exclusive mode");
    // Waits for the lock, which the gateway takes away: not PostgREST's 5 s timeout.
    expectStatus(await bystander.client.get("/todos"), 200);
    await expect(locker.query("select 1")).rejects.toThrow();
    await locker.end().catch(() => {});
  });

  it("a statement that catches cancels is ended, and its backend with it", async () => {
    const user = await doorUser(api, "abuse-statement");
    const client = await connectPg(door, user.email, user.password);
    await client.query("set statement_timeout = 0");
    const pid = await backendPid(client);
    const error = (await client.query(IGNORES_CANCEL).catch((e: unknown) => e)) as {
      code?: string;
      message: string;
    };
    expect(error.message).toMatch(/statement ran longer than the gateway allows/);
    await within(1000, async () => !(await backendAlive(pid)));
    await client.end().catch(() => {});
  });

  it("a transaction of short statements is ended at the transaction limit", async () => {
    const user = await doorUser(api, "abuse-transaction");
    const client = await connectPg(door, user.email, user.password);
    // The gateway's FATAL may come between two statements, while the client
    // waits for nothing: node-postgres then reports it as a client error.
    const told: string[] = [];
    client.on("error", (error: Error) => told.push(error.message));
    const pid = await backendPid(client);
    await client.query("begin");
    let statements = 0;
    const error = await (async () => {
      for (let i = 0; i < 20; i++) {
        await client.query("select pg_sleep(0.4)");
        statements += 1;
      }
    })().catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    told.push((error as Error).message);
    expect(told.join("\n")).toMatch(/transaction lasted longer than the gateway allows/);
    expect(statements).toBeLessThan(20);
    await within(1000, async () => !(await backendAlive(pid)));
    await client.end().catch(() => {});
  });

  it("logging out everywhere ends a query that catches cancels", async () => {
    const user = await doorUser(api, "abuse-revoked-query");
    const client = await connectPg(door, user.email, user.client.sessionToken as string);
    const pid = await backendPid(client);
    const running = client.query("select pg_sleep(0.1)").then(() => client.query(IGNORES_CANCEL));
    const ended = running.catch((e: Error) => e);
    await sleep(200);
    await user.client.post("/rpc/logout_everywhere", {});
    await within(1000, async () => !(await backendAlive(pid)));
    expect(await ended).toBeInstanceOf(Error);
  });
});

suite("20.4: no password guessing with a stolen session through a door", () => {
  it("change_password refuses a door connection, whatever request it pretends to be", async () => {
    const user = await doorUser(api, "abuse-guess");
    const client = await connectPg(door, user.email, user.client.sessionToken as string);
    try {
      await client.query("begin");
      await client.query("select set_config('request.method', 'POST', true)");
      await expect(
        client.query("select api.change_password('a guess 12', 'a new password 1')"),
      ).rejects.toThrow(/for the HTTP API, not for a database connection/);
      await client.query("rollback");
    } finally {
      await client.end();
    }
  });

  it("no device sign-in through a door: it cannot approve a code, ask for one or fetch a token", async () => {
    const user = await doorUser(api, "abuse-device");
    const client = await connectPg(door, user.email, user.password);
    try {
      await client.query("select set_config('request.method', 'POST', false)");
      for (const call of [
        "select api.device_lookup('BCDFGHJK')",
        "select api.device_decide('BCDFGHJK', true)",
        "select api.device_authorization('psql')",
        "select api.oauth_token('urn:ietf:params:oauth:grant-type:device_code', 'x', 'psql')",
      ]) {
        await expect(client.query(call), call).rejects.toThrow(
          /for the HTTP API, not for a database connection/,
        );
      }
    } finally {
      await client.end();
    }
  });
});

suite("20.5: door secrets stay out of the server log", () => {
  it("with every statement's duration logged", async () => {
    const user = await doorUser(api, "abuse-log");
    const secret = `a secret of ${Date.now()} ok`;
    expectStatus(
      await user.client.post("/rpc/change_password", {
        current_password: user.password,
        new_password: secret,
      }),
      200,
    );
    const token = user.client.sessionToken as string;
    const db = String(database.database);
    await query(`alter role gateway in database "${db}" set log_min_duration_statement = 0`);
    const fresh = await ownGateway(); // new connections: the setting applies to them
    try {
      const byPassword = await connectPg(
        { host: fresh.host, port: fresh.port, database: db },
        user.email,
        secret,
      );
      await byPassword.end();
      const byToken = await connectPg(
        { host: fresh.host, port: fresh.port, database: db },
        user.email,
        token,
      );
      await byToken.end();
    } finally {
      await fresh.close();
      await query(`alter role gateway in database "${db}" reset log_min_duration_statement`);
    }
    const log = readFileSync(join(clusterDir, "postgres.log"), "utf8");
    expect(log).toMatch(/duration: .*auth\.door_open/);
    expect(log).not.toContain(secret);
    expect(log).not.toContain(token);
  });
});

describe("20.6: a door role logs in only through the gateway", () => {
  it("not with a password it set itself, and not to another database", async () => {
    if (!provided) return;
    const pgPort = await freePort();
    const deployment = await deployLocal({ port: await freePort(), pgPort, tests: false });
    try {
      const doors = deployment.doors;
      if (!doors) throw new Error("deploy-local started no gateway");
      const alice = await connectPg(
        { host: doors.gateway.host, port: doors.gateway.port, database: deployment.database },
        "alice@example.com",
        "correct horse battery",
      );
      const { rows } = await alice.query<{ role: string }>("select session_user as role");
      const role = rows[0]?.role as string;
      await alice.query("alter role current_user password 'chosen by me 123'");
      await alice.end();
      for (const dbname of [deployment.database, "postgres"]) {
        const direct = new pg.Client({
          host: "127.0.0.1",
          port: pgPort,
          user: role,
          password: "chosen by me 123",
          database: dbname,
        });
        direct.on("error", () => {});
        await expect(direct.connect(), dbname).rejects.toMatchObject({ code: "28000" });
      }
      const admin = await deployment.connect();
      const sealed = await admin.query<{ sealed: boolean }>(
        "select rolvaliduntil = '-infinity' as sealed from pg_roles where rolname = $1",
        [role],
      );
      await admin.end();
      expect(sealed.rows[0]?.sealed).toBe(true);
    } finally {
      await deployment.stop();
    }
  }, 60_000);
});

suite("20.8: a door user cannot make PostgREST reload", () => {
  it("NOTIFY pgrst reaches nobody; PostgREST listens on a channel nobody can guess", async () => {
    const user = await doorUser(api, "abuse-notify");
    const postgrestLog = join(clusterDir, "postgrest.log");
    const loads = () =>
      (readFileSync(postgrestLog, "utf8").match(/Schema cache loaded/g) ?? []).length;
    const before = loads();
    const client = await connectPg(door, user.email, user.password);
    await client.query("notify pgrst, 'reload schema'");
    await client.query("select pg_notify('pgrst', 'reload config')");
    await client.end();
    await sleep(1500);
    expect(loads()).toBe(before);
    // The test can fail: the channel PostgREST does listen on reloads it.
    const channel = /Listening for notifications on the (\S+) channel/.exec(
      readFileSync(postgrestLog, "utf8"),
    )?.[1];
    expect(channel).toMatch(/^pgrst_[0-9a-f]{24}$/);
    await query(`notify ${channel}, 'reload schema'`);
    await within(10_000, () => loads() > before);
  });
});

suite("21.1: connection caps", () => {
  it("a user holds at most maxConnectionsPerUser connections", async () => {
    const user = await doorUser(api, "abuse-cap");
    const token = user.client.sessionToken as string;
    const held = [];
    for (let i = 0; i < LIMITS.maxConnectionsPerUser; i++) {
      held.push(await connectPg(door, user.email, token));
    }
    const refused = await loginError(door, user.email, token);
    expect(refused).toMatchObject({ code: "53300" });
    expect(refused?.message).toMatch(/too many connections for user/);
    await held.pop()?.end();
    await within(2000, () => gateway.connectionCount() < LIMITS.maxConnectionsPerUser + 10);
    const again = await connectPg(door, user.email, token);
    await Promise.all([again, ...held].map((c) => c.end()));
  });
});

/** A raw socket to the gateway, from `localAddress`. */
async function rawSocket(localAddress = "127.0.0.1"): Promise<Socket> {
  const socket = createConnection({ host: door.host, port: door.port, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return socket;
}

/** Resolves when the gateway has closed the socket (what it sent is read and dropped). */
function closed(socket: Socket): Promise<void> {
  socket.resume();
  return socket.destroyed
    ? Promise.resolve()
    : new Promise((resolve) => socket.once("close", () => resolve()));
}

suite("21.3 and 21.4: bounded before anyone logs in", () => {
  it("a startup packet over 10,000 bytes is refused at once, before or after SSLRequest", async () => {
    const huge = Buffer.alloc(1024);
    huge.writeInt32BE(64 * 1024 * 1024, 0);
    huge.writeInt32BE(196608, 4);
    const plain = await rawSocket();
    plain.write(huge);
    await closed(plain);

    const negotiated = await rawSocket();
    const sslRequest = Buffer.alloc(8);
    sslRequest.writeInt32BE(8, 0);
    sslRequest.writeInt32BE(80877103, 4);
    negotiated.write(sslRequest);
    const [answer] = await new Promise<Buffer[]>((resolve) =>
      negotiated.once("data", (d: Buffer) => resolve([d])),
    );
    expect(answer?.toString("latin1")).toBe("N"); // this gateway has no certificate
    negotiated.write(huge);
    await closed(negotiated);
  });

  it("connections that never finish logging in are let go, and few may wait at once", async () => {
    const silent = await rawSocket();
    const half = await rawSocket();
    half.write(Buffer.from([0, 0, 0]));
    const sslThenNothing = await rawSocket();
    const sslRequest = Buffer.alloc(8);
    sslRequest.writeInt32BE(8, 0);
    sslRequest.writeInt32BE(80877103, 4);
    sslThenNothing.write(sslRequest);
    await Promise.all([closed(silent), closed(half), closed(sslThenNothing)]);

    // One that sent its startup message but never its password is told why,
    // as PostgreSQL tells it.
    const slow = await loginError(door, "abuse-never-answers@example.com", "unused", {
      password: () => new Promise<string>(() => {}),
    });
    expect(slow).toMatchObject({
      code: "57014",
      message: "canceling authentication due to timeout",
    });

    const address = "127.0.0.88";
    const waiting = await Promise.all(
      Array.from({ length: LIMITS.maxPendingPerAddress }, () => rawSocket(address)),
    );
    const extra = await rawSocket(address);
    const reply = await new Promise<Buffer>((resolve) => extra.once("data", resolve));
    expect(reply.toString("latin1", 0, 1)).toBe("E");
    expect(reply.toString("utf8")).toContain("too many connections are logging in");
    // Another address is not held up by that one.
    const other = await doorUser(api, "abuse-pending-other");
    const client = await connectPg(door, other.email, other.password);
    await client.end();
    for (const socket of [...waiting, extra]) socket.destroy();
  });
});

suite("21.2: an anonymous password flood", () => {
  it("does not keep a real user out, through the gateway or over HTTP", async () => {
    // The real user waits in the password line behind the flood's share of
    // it: a few bcrypt runs. This file's other gateway lets a login take
    // only 1.5 s, which a loaded machine can spend on that wait; this one
    // has the gateway's default time to log in.
    const floodGateway = await ownGateway({
      authenticationTimeoutMs: DEFAULT_LIMITS.authenticationTimeoutMs,
    });
    const floodDoor = {
      host: floodGateway.host,
      port: floodGateway.port,
      database: String(database.database),
    };
    const user = await doorUser(api, "abuse-flood-real");
    const webPeople = await Promise.all(
      Array.from({ length: 5 }, (_, i) => newUser(api, `abuse-flood-web-${i}`)),
    );
    let flooding = true;
    const flooder = { ...floodDoor, localAddress: "127.0.0.77" };
    let attempts = 0;
    const flood = Array.from({ length: 20 }, async (_, worker) => {
      while (flooding) {
        attempts += 1;
        await RawClient.login(
          flooder,
          `nobody-${worker}-${attempts}@example.com`,
          "a guess 123",
        ).catch((error: unknown) => {
          if (!(error instanceof LoginRefused) && !/ECONNRESET|closed|EPIPE/.test(String(error))) {
            throw error;
          }
        });
      }
    });
    try {
      await sleep(300);
      for (let i = 0; i < 5; i++) {
        const client = await connectPg(floodDoor, user.email, user.password);
        await client.end();
      }
      const web = await Promise.all(
        webPeople.map((person) => new TestClient(api).login(person.email, person.password)),
      );
      expect(web.map((r) => r.status)).toEqual(Array(5).fill(200));
    } finally {
      flooding = false;
      await Promise.all(flood);
      await floodGateway.close();
    }
    expect(attempts).toBeGreaterThan(20);
  });
});

suite("21.7: a busy connection keeps its session alive", () => {
  it("activity through a door renews the session once half of it is gone", async () => {
    const user = await doorUser(api, "abuse-renew");
    const token = user.client.sessionToken as string;
    const client = await connectPg(door, user.email, token);
    try {
      await query(
        "update auth.sessions set expires = now() + interval '1 minute' where token_hash = auth.hash_token($1)",
        [token],
      );
      await client.query("select 1");
      await within(2000, async () => {
        const [row] = await query<{ renewed: boolean }>(
          "select expires > now() + interval '29 minutes' as renewed from auth.sessions where token_hash = auth.hash_token($1)",
          [token],
        );
        return row?.renewed === true;
      });
    } finally {
      await client.end();
    }
  });
});
