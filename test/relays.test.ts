// The gateway's two relays (src/gateway/relay.ts): the native one
// (native/relay.c, built by npm run build when a C compiler is installed)
// and the JavaScript one (TLS connections, --relay javascript, no compiler).
// Everything a relay must do is checked against each: bytes both ways in
// order and intact under backpressure, the gateway's time limits and
// revocations ending a connection with the right message, and nothing held
// once a client or the gateway goes.

import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { nativeRelay } from "../src/gateway/native.js";
import { type Gateway, startGateway } from "../src/gateway/server.js";
import { expect2xx } from "./support/app.js";
import { backendAlive, backendPid, IGNORES_CANCEL, sleep, within } from "./support/backends.js";
import { query } from "./support/database.js";
import {
  connectPg,
  type Door,
  doorUser,
  errorFields,
  frontend,
  providedDoors,
  RawClient,
} from "./support/gateway.js";

const api = inject("apiUrl");
const database = inject("database");
const provided = providedDoors(inject("doors"), "test/relays.test.ts");

const native = nativeRelay();
if (!native.module) {
  const say = `test/relays.test.ts: the native relay is not here (${native.why})`;
  // A CI machine installs a compiler (.ci/run): there, a missing relay is a failure.
  if (process.env.CI) throw new Error(say);
  console.warn(`${say}: its tests are SKIPPED; the JavaScript relay's run`);
}
const kinds = (["native", "javascript"] as const).filter(
  (kind) => kind === "javascript" || native.module,
);

const LIMITS = { maxStatementMs: 1500, maxTransactionMs: 4000, maxIdleInTransactionMs: 1000 };

/** The error a client gets when the gateway ends its connection, with the client's end. */
function endedWith(client: pg.Client): Promise<{ code?: string; message: string }> {
  return new Promise((resolve) => {
    client.once("error", (error: Error & { code?: string }) =>
      resolve({ code: error.code, message: error.message }),
    );
  });
}

const suite = provided ? describe.each(kinds) : describe.skip.each(kinds);

suite("the %s relay", (kind) => {
  let gateway: Gateway;
  let door: Door;
  const logged: string[] = [];

  beforeAll(async () => {
    gateway = await startGateway({
      control: { ...database, user: "gateway" },
      upstream: {
        socketPath: `${database.host}/.s.PGSQL.${database.port}`,
        port: Number(database.port),
        database: String(database.database),
      },
      limits: LIMITS,
      pollIntervalMs: 100,
      relay: kind,
      log: (line) => logged.push(line),
    });
    door = { host: gateway.host, port: gateway.port, database: String(database.database) };
  });

  afterAll(async () => {
    await gateway?.close();
  });

  it("is the one the gateway uses, for every plain connection", async () => {
    expect(gateway.relay.kind).toBe(kind);
    const user = await doorUser(api, `relay-${kind}-which`);
    const client = await connectPg(door, user.email, user.password);
    await client.end();
    const connected = logged.filter((line) => line.includes(`gateway: ${user.email} connected`));
    expect(connected).toHaveLength(1);
    expect(connected[0]).toContain(`, ${kind} relay)`);
  });

  it("carries queries, parameters and concurrent connections", async () => {
    const user = await doorUser(api, `relay-${kind}-pool`);
    const pool = new pg.Pool({ ...door, user: user.email, password: user.password, max: 4 });
    try {
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          pool.query<{ n: number }>("select $1::int * 2 as n", [i]),
        ),
      );
      expect(answers.map((a) => a.rows[0]?.n)).toEqual(Array.from({ length: 40 }, (_, i) => i * 2));
    } finally {
      await pool.end();
    }
  });

  it("delivers a large result to a client that stops reading for a while, byte for byte", async () => {
    const user = await doorUser(api, `relay-${kind}-slow-reader`);
    const client = await connectPg(door, user.email, user.password);
    try {
      const stream = (client as unknown as { connection: { stream: Socket } }).connection.stream;
      const rows = 200_000;
      const running = client.query<{ g: number; h: string }>(
        "select g, md5(g::text) as h from generate_series(1, $1::int) g",
        [rows],
      );
      // Megabytes the client does not read yet: the relay's writes to it
      // back up while the server goes on sending.
      stream.pause();
      await sleep(300);
      stream.resume();
      const result = await running;
      expect(result.rows.length).toBe(rows);
      const wrong = result.rows.filter(
        (row, i) =>
          row.g !== i + 1 || row.h !== createHash("md5").update(String(row.g)).digest("hex"),
      );
      expect(wrong.slice(0, 3)).toEqual([]);
      expect((await client.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await client.end();
    }
    // (A relay that lost or overwrote queued bytes garbles the stream and the
    // client waits for a message that never ends: this limit says so sooner.)
  }, 30_000);

  it("delivers a large statement from the client intact", async () => {
    const user = await doorUser(api, `relay-${kind}-big-statement`);
    const client = await connectPg(door, user.email, user.password);
    try {
      const text = "ab".repeat(8 * 1024 * 1024); // 16 MiB one way, 32 bytes back
      const { rows } = await client.query<{ n: number; h: string }>(
        "select length($1) as n, md5($1) as h",
        [text],
      );
      expect(rows[0]).toEqual({ n: text.length, h: createHash("md5").update(text).digest("hex") });
    } finally {
      await client.end();
    }
  }, 30_000);

  it("ends a statement that catches cancels at the statement limit, telling the client why", async () => {
    const user = await doorUser(api, `relay-${kind}-statement`);
    const client = await connectPg(door, user.email, user.password);
    await client.query("set statement_timeout = 0");
    const pid = await backendPid(client);
    client.on("error", () => {});
    const failed = (await client.query(IGNORES_CANCEL).catch((error: unknown) => error)) as {
      code?: string;
      message: string;
    };
    expect({ code: failed.code, message: failed.message }).toEqual({
      code: "57014",
      message: "a statement ran longer than the gateway allows (1.5 s)",
    });
    await within(2000, async () => !(await backendAlive(pid)));
  });

  it("tells a client that is still sending why its connection ends (no reset in place of the message)", async () => {
    const user = await doorUser(api, `relay-${kind}-still-sending`);
    const raw = await RawClient.login(door, user.email, user.password);
    try {
      raw.write(frontend.query("set statement_timeout = 0"));
      await raw.untilReady(1);
      // The statement the limit ends, then megabytes more that the busy
      // server does not read: they back up in the relay and in the kernel,
      // unread when the connection ends.
      raw.write(frontend.query(IGNORES_CANCEL));
      const more = frontend.query(`select '${"x".repeat(8000)}'`);
      for (let i = 0; i < 2000; i++) raw.socket.write(more);
      // Nor does it read for a while: the message waits in the kernel.
      raw.socket.pause();
      await new Promise((r) => setTimeout(r, 2500));
      raw.socket.resume();
      const [error] = (await raw.until((m) => m.type === "E", 10_000)).filter(
        (m) => m.type === "E",
      );
      expect(errorFields(error?.body as Buffer)).toEqual({
        code: "57014",
        message: "a statement ran longer than the gateway allows (1.5 s)",
      });
    } finally {
      raw.socket.destroy();
    }
  });

  it("ends a transaction left idle at the idle-in-transaction limit, telling the client why", async () => {
    const user = await doorUser(api, `relay-${kind}-idle`);
    const client = await connectPg(door, user.email, user.password);
    const pid = await backendPid(client);
    const ended = endedWith(client);
    await client.query("begin");
    expect(await ended).toMatchObject({
      code: "25P03",
      message: "a transaction sat idle longer than the gateway allows (1 s)",
    });
    await within(2000, async () => !(await backendAlive(pid)));
  });

  it("ends the connection of a session that logs out, telling the client why", async () => {
    const user = await doorUser(api, `relay-${kind}-logout`);
    const client = await connectPg(door, user.email, user.client.sessionToken as string);
    const pid = await backendPid(client);
    const ended = endedWith(client);
    expect2xx(await user.client.post("/rpc/logout", {}));
    expect(await ended).toMatchObject({ code: "57P01", message: /your session has ended/ });
    await within(2000, async () => !(await backendAlive(pid)));
  });

  it("lets go of everything when the client goes: its place, and its backend", async () => {
    const user = await doorUser(api, `relay-${kind}-leaves`);
    const before = gateway.connectionCount();
    const client = await connectPg(door, user.email, user.password);
    const pid = await backendPid(client);
    expect(gateway.connectionCount()).toBe(before + 1);
    await client.end();
    await within(2000, () => gateway.connectionCount() === before);
    await within(2000, async () => !(await backendAlive(pid)));
  });

  it("renews the session of a connection in use (the client's activity is seen)", async () => {
    const user = await doorUser(api, `relay-${kind}-active`);
    const client = await connectPg(door, user.email, user.client.sessionToken as string);
    const expires = async () =>
      (
        await query<{ left: number }>(
          `select extract(epoch from min(expires) - now())::float8 as left
             from auth.sessions where user_id = $1 and revoked is null`,
          [user.userId],
        )
      )[0]?.left as number;
    try {
      // A minute left: well past half-way gone, so activity renews it.
      await query(
        "update auth.sessions set expires = now() + interval '1 minute' where user_id = $1 and revoked is null",
        [user.userId],
      );
      expect(await expires()).toBeLessThan(61);
      await client.query("select 1");
      await within(3000, async () => (await expires()) > 120);
    } finally {
      await client.end();
    }
  });
});

describe("a gateway's close", () => {
  it.each(kinds)("ends every connection the %s relay carries", async (kind) => {
    if (!provided) return;
    const gateway = await startGateway({
      control: { ...database, user: "gateway" },
      upstream: {
        socketPath: `${database.host}/.s.PGSQL.${database.port}`,
        port: Number(database.port),
        database: String(database.database),
      },
      relay: kind,
    });
    const door = { host: gateway.host, port: gateway.port, database: String(database.database) };
    const user = await doorUser(api, `relay-${kind}-close`);
    const client = await connectPg(door, user.email, user.password);
    const pid = await backendPid(client);
    const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
    client.on("error", () => {});
    await gateway.close();
    await ended;
    await within(2000, async () => !(await backendAlive(pid)));
  });
});
