// Clients for the database doors: the real psql binary, node-postgres, and a
// raw wire-protocol client for pipelining (what libraries do not show).

import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import pg from "pg";
import { type LoggedInUser, newUser } from "./client.js";
import { query } from "./database.js";

/** psql from PATH or Debian's newest PostgreSQL; a clear error when there is none. */
export function psqlPath(): string {
  try {
    return execFileSync("sh", ["-c", "command -v psql"], { encoding: "utf8" }).trim();
  } catch {
    // not on PATH
  }
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((m) => /^\d+$/.test(m))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const major of majors) {
    const candidate = join(root, major, "bin", "psql");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("the gateway tests need the real psql client: apt-get install postgresql-client");
}

export interface Door {
  host: string;
  port: number;
  database?: string;
  /** Connect from this local address (raw clients only): another client, to per-address limits. */
  localAddress?: string;
}

export function connectionString(door: Door, user: string): string {
  return `host=${door.host} port=${door.port} dbname=${door.database ?? "app"} user=${user} sslmode=disable`;
}

export interface PsqlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs psql to completion: `args` after the connection string, `input` on stdin. */
export function runPsql(
  door: Door,
  user: string,
  password: string,
  args: string[],
  input = "",
): Promise<PsqlResult> {
  return runPsqlAt(connectionString(door, user), password, args, input);
}

/** runPsql with a connection string of its own (as deploy-local prints one). */
export function runPsqlAt(
  conninfo: string,
  password: string,
  args: string[],
  input = "",
): Promise<PsqlResult> {
  return runPsqlOnce(conninfo, password, args, input);
}

function runPsqlOnce(
  conninfo: string,
  password: string,
  args: string[],
  input: string,
): Promise<PsqlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(psqlPath(), ["-X", conninfo, ...args], {
      env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: "10", PGOPTIONS: "" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** A psql that stays connected, reading commands from stdin. */
export function livePsql(
  door: Door,
  user: string,
  password: string,
): ChildProcessWithoutNullStreams {
  return spawn(psqlPath(), ["-X", "-v", "ON_ERROR_STOP=1", connectionString(door, user)], {
    env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: "10" },
  });
}

/** node-postgres through the gateway. */
export async function connectPg(
  door: Door,
  user: string,
  password: string,
  extra: pg.ClientConfig = {},
): Promise<pg.Client> {
  const client = new pg.Client({
    host: door.host,
    port: door.port,
    database: door.database ?? "app",
    user,
    password,
    ...extra,
  });
  client.on("error", () => {}); // surfaced through queries and the end event
  await client.connect();
  return client;
}

/** Sends a CancelRequest with a client's keys to `door`, as libpq does on Ctrl-C. */
export async function sendCancel(door: Door, client: pg.Client): Promise<void> {
  const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(80877102, 4);
  request.writeInt32BE(processID, 8);
  request.writeInt32BE(secretKey, 12);
  await new Promise<void>((resolve, reject) => {
    const socket = connect(door.port, door.host, () => socket.end(request));
    socket.on("close", () => resolve());
    socket.on("error", reject);
  });
}

/** A new account (over HTTP) that an administrator has given a database door. */
export async function doorUser(api: string, label: string): Promise<LoggedInUser> {
  const user = await newUser(api, label);
  await query("select auth.grant_door($1)", [user.userId]);
  return user;
}

/** The connect error of a login attempt (undefined when it succeeded). */
export async function loginError(
  door: Door,
  user: string,
  password: string,
  extra: pg.ClientConfig = {},
): Promise<{ code?: string; message: string } | undefined> {
  try {
    const client = await connectPg(door, user, password, extra);
    await client.end();
    return undefined;
  } catch (error) {
    return error as { code?: string; message: string };
  }
}

function typed(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const z = (text: string) => Buffer.from(`${text}\0`, "utf8");

/** Frontend messages for a raw client. */
export const frontend = {
  query: (sql: string) => typed("Q", z(sql)),
  parse: (sql: string) => typed("P", Buffer.concat([z(""), z(sql), Buffer.from([0, 0])])),
  bind: (values: string[]) => {
    const parts = [z(""), z(""), Buffer.from([0, 0])];
    const count = Buffer.alloc(2);
    count.writeInt16BE(values.length);
    parts.push(count);
    for (const value of values) {
      const data = Buffer.from(value, "utf8");
      const length = Buffer.alloc(4);
      length.writeInt32BE(data.length);
      parts.push(length, data);
    }
    parts.push(Buffer.from([0, 0]));
    return typed("B", Buffer.concat(parts));
  },
  execute: () => typed("E", Buffer.concat([z(""), Buffer.alloc(4)])),
  sync: () => typed("S", Buffer.alloc(0)),
  terminate: () => typed("X", Buffer.alloc(0)),
};

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** The code and message of an ErrorResponse body. */
export function errorFields(body: Buffer): { code: string; message: string } {
  const fields: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    fields[String.fromCharCode(body[i] as number)] = body.toString("utf8", i + 1, end);
    i = end + 1;
  }
  return { code: fields.C ?? "", message: fields.M ?? "" };
}

export class LoginRefused extends Error {
  readonly code: string;
  constructor(fields: { code: string; message: string }) {
    super(fields.message);
    this.code = fields.code;
  }
}

/**
 * A raw client: logs in with a cleartext password (as the gateway asks),
 * then sends bytes as given and collects the server's messages.
 */
export class RawClient {
  private buffer = Buffer.alloc(0);
  private readonly messages: BackendMessage[] = [];
  private waiter: (() => void) | undefined;
  /** The gateway closed the connection (at its login deadline, say). */
  private closed = false;

  private constructor(readonly socket: Socket) {
    const ended = () => {
      this.closed = true;
      this.waiter?.();
    };
    socket.on("close", ended);
    socket.on("error", ended);
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 5) {
        const length = this.buffer.readInt32BE(1);
        if (this.buffer.length < 1 + length) break;
        this.messages.push({
          type: String.fromCharCode(this.buffer[0] as number),
          body: this.buffer.subarray(5, 1 + length),
        });
        this.buffer = this.buffer.subarray(1 + length);
      }
      this.waiter?.();
    });
  }

  static async login(door: Door, user: string, password: string): Promise<RawClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(
        {
          port: door.port,
          host: door.host,
          ...(door.localAddress ? { localAddress: door.localAddress } : {}),
        },
        () => resolve(s),
      );
      s.once("error", reject);
    });
    const client = new RawClient(socket);
    const params = Buffer.concat([
      z("user"),
      z(user),
      z("database"),
      z(door.database ?? "app"),
      z(""),
    ]);
    const head = Buffer.alloc(8);
    head.writeInt32BE(8 + params.length, 0);
    head.writeInt32BE(196608, 4);
    socket.write(Buffer.concat([head, params]));
    const ask = await client.until((m) => m.type === "R" || m.type === "E");
    const asked = ask.at(-1);
    if (asked?.type !== "R") {
      socket.destroy();
      throw asked
        ? new LoginRefused(errorFields(asked.body))
        : new Error("the gateway did not ask for a password");
    }
    socket.write(typed("p", z(password)));
    const startup = await client.until((m) => m.type === "Z" || m.type === "E");
    const last = startup.at(-1);
    if (last?.type !== "Z") {
      client.socket.destroy();
      throw new LoginRefused(last ? errorFields(last.body) : { code: "", message: "no answer" });
    }
    return client;
  }

  write(...buffers: Buffer[]): void {
    this.socket.write(Buffer.concat(buffers));
  }

  /** Messages up to and including the first one matching `done`. */
  async until(done: (m: BackendMessage) => boolean, timeoutMs = 10_000): Promise<BackendMessage[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.messages.findIndex(done);
      if (index >= 0) return this.messages.splice(0, index + 1);
      if (this.closed) throw new Error("the gateway closed the connection");
      if (Date.now() > deadline) throw new Error("no answer from the gateway");
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  /** Messages until `count` ReadyForQuery have arrived. */
  async untilReady(count: number): Promise<BackendMessage[]> {
    const out: BackendMessage[] = [];
    for (let i = 0; i < count; i++) out.push(...(await this.until((m) => m.type === "Z")));
    return out;
  }

  close(): void {
    this.socket.end(frontend.terminate());
  }
}

/** The text of the first column of each DataRow. */
export function firstColumns(messages: BackendMessage[]): string[] {
  return messages
    .filter((m) => m.type === "D")
    .map((m) => {
      const length = m.body.readInt32BE(2);
      return m.body.toString("utf8", 6, 6 + length);
    });
}

/**
 * The doors the test deployment started, or undefined when the run tests a
 * deployment that is already running (TEST_API_URL), whose gateway it does
 * not know: then the file says loudly that it is skipped. Anything else
 * without doors is an error.
 */
export function providedDoors<T>(doors: T | undefined, file: string): T | undefined {
  if (doors) return doors;
  if (!process.env.TEST_API_URL) {
    throw new Error(
      "the database doors are not running: the test deployment must start them (deploy-local without --no-gateway)",
    );
  }
  process.stderr.write(
    `\n*** SKIPPED ${file}: testing the existing deployment at ${process.env.TEST_API_URL}, ` +
      "whose gateway this run does not know. ***\n\n",
  );
  return undefined;
}
