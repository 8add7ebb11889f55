// The database doors: a PostgreSQL wire-protocol gateway in front of the
// app's database. Clients (psql, BI tools, node-postgres, pgweb) log in with
// their email and an account password, a session token or an identity
// provider's access token; the gateway checks it in the database (as the
// `gateway` role, through auth.door_open), logs in upstream as the user's
// own door role with a one-minute password it made up, and from then on
// relays raw bytes both ways. See sessions.sql.md, "Database doors".
//
// pg-gateway handles the TLS negotiation and reads the startup message; the
// gateway takes the socket over from there (its own password exchange, then
// a byte relay: no per-message callbacks on the data path). Cancel and
// GSSAPI-encryption requests are answered before pg-gateway sees anything.

import { randomInt } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { createLocalJWKSet, type JWTPayload, jwtVerify } from "jose";
import pg from "pg";
import { PostgresConnection } from "pg-gateway";
import { listen } from "../postgrest.js";
import { randomPassword, scramVerifier } from "./scram.js";
import {
  cancelUpstream,
  openUpstream,
  type UpstreamAddress,
  type UpstreamConnection,
  UpstreamRefused,
} from "./upstream.js";
import {
  authenticationCleartextPassword,
  authenticationOk,
  backendKeyData,
  CANCEL_REQUEST,
  type ErrorFields,
  errorResponse,
  GSSENC_REQUEST,
  MessageReader,
} from "./wire.js";

export interface AccessTokenOptions {
  issuer: string;
  audience: string;
  /** The issuer's public keys (a JWKS, JSON text). */
  jwks: string;
}

export interface GatewayOptions {
  /** The gateway role's connection to the app's database (checks credentials). */
  control: pg.ClientConfig;
  /** Where door roles log in: the same database. */
  upstream: UpstreamAddress;
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Offered to clients that ask for TLS (sslmode=require). */
  tls?: { key: Buffer; cert: Buffer };
  /**
   * Refuse passwords and tokens sent in clear over TCP from anywhere but the
   * loopback interface (default true: only with `tls` can remote clients log in).
   */
  requireTls?: boolean;
  accessTokens?: AccessTokenOptions;
  /** How often the sessions of open connections are checked (default 250 ms). */
  pollIntervalMs?: number;
  log?: (line: string) => void;
}

export interface Gateway {
  readonly host: string;
  readonly port: number;
  /** Connections relayed right now. */
  connectionCount(): number;
  /** Redeems a pgweb ticket: the session's email and token (see pgweb.ts). */
  redeemTicket(
    ticket: string,
    client: string,
  ): Promise<{ email: string; token: string } | undefined>;
  readonly database: string;
  readonly tls: boolean;
  close(): Promise<void>;
}

/** Algorithms an access token may be signed with: asymmetric only, never "none" or HMAC. */
export const ACCESS_TOKEN_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
];

// Startup parameters passed on to PostgreSQL; anything else a client sends
// (options, replication, ...) is refused or dropped.
const FORWARDED_PARAMETERS = [
  "application_name",
  "client_encoding",
  "DateStyle",
  "TimeZone",
  "IntervalStyle",
  "extra_float_digits",
];

interface Relay {
  user: string;
  sessionId: number;
  client: Socket;
  upstream: UpstreamConnection;
  /** True while the bytes sent to the client end on a message boundary. */
  atBoundary: () => boolean;
  closed: boolean;
}

function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === "::1" || /^(::ffff:)?127\./.test(address);
}

/** Tracks message boundaries in a relayed byte stream without copying it. */
function boundaryTracker(): { feed(chunk: Buffer): void; atBoundary(): boolean } {
  const header = Buffer.alloc(5); // a header split across chunks
  let have = 0; // bytes of it so far
  let remaining = 0; // body bytes of the current message still to come
  return {
    feed(chunk: Buffer) {
      let i = 0;
      while (i < chunk.length) {
        if (remaining > 0) {
          const step = Math.min(remaining, chunk.length - i);
          remaining -= step;
          i += step;
        } else if (have === 0 && chunk.length - i >= 5) {
          // The common case: the whole header in this chunk, read in place.
          remaining = chunk.readInt32BE(i + 1) - 4;
          i += 5;
        } else {
          const copied = chunk.copy(header, have, i, i + 5 - have);
          have += copied;
          i += copied;
          if (have === 5) {
            remaining = header.readInt32BE(1) - 4;
            have = 0;
          }
        }
      }
    },
    atBoundary: () => remaining === 0 && have === 0,
  };
}

const REFUSALS: Record<string, (user: string) => ErrorFields> = {
  failed: (user) => ({
    severity: "FATAL",
    code: "28P01",
    message: `password authentication failed for user "${user}"`,
  }),
  throttled: () => ({
    severity: "FATAL",
    code: "28000",
    message: "too many failed attempts for this email",
    hint: "wait 15 minutes",
  }),
  busy: () => ({
    severity: "FATAL",
    code: "53300",
    message: "too many password checks at once",
    hint: "try again in a second",
  }),
  in_progress: () => ({
    severity: "FATAL",
    code: "53300",
    message: "another login for this email is in progress",
    hint: "try again in a second",
  }),
};

const looksLikeJwt = (secret: string) => /^eyJ[\w-]*\.[\w-]+\.[\w-]+$/.test(secret);

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log ?? (() => {});
  const control = new pg.Pool({ ...options.control, max: 4 });
  control.on("error", (error) => log(`gateway: database connection lost: ${error.message}`));
  const keys = options.accessTokens
    ? createLocalJWKSet(JSON.parse(options.accessTokens.jwks))
    : undefined;
  const requireTls = options.requireTls ?? true;
  const relays = new Set<Relay>();
  const cancelKeys = new Map<string, { pid: number; secret: number }>();
  // One door login per user at a time: each rotates the user's role password.
  const userLocks = new Map<string, Promise<unknown>>();
  const sockets = new Set<Socket>();

  async function withUserLock<T>(user: string, work: () => Promise<T>): Promise<T> {
    const key = user.toLowerCase();
    const before = userLocks.get(key) ?? Promise.resolve();
    const mine = before.then(work, work);
    const settled = mine.catch(() => {});
    userLocks.set(key, settled);
    try {
      return await mine;
    } finally {
      if (userLocks.get(key) === settled) userLocks.delete(key);
    }
  }

  async function verifyAccessToken(token: string): Promise<JWTPayload | undefined> {
    if (!keys || !options.accessTokens) return undefined;
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: options.accessTokens.issuer,
        audience: options.accessTokens.audience,
        algorithms: ACCESS_TOKEN_ALGORITHMS,
        requiredClaims: ["exp", "sub"],
      });
      return payload;
    } catch {
      return undefined;
    }
  }

  /** Checks the credential; opens the upstream connection as the user's door role. */
  async function admit(
    user: string,
    secret: string,
    client: string,
    parameters: Record<string, string>,
  ): Promise<{ upstream: UpstreamConnection; sessionId: number } | ErrorFields> {
    // An access token is verified here, once; a token that fails is checked
    // in the database with no claims, which refuses and audits it.
    const claims =
      keys && looksLikeJwt(secret) ? ((await verifyAccessToken(secret)) ?? {}) : undefined;
    return withUserLock(user, async () => {
      for (let attempt = 1; ; attempt++) {
        const password = randomPassword();
        const verifier = await scramVerifier(password);
        type DoorRow = { role_name: string | null; session_id: string | null; outcome: string };
        const {
          rows: [row],
        } = claims
          ? await control.query<DoorRow>(
              "select * from auth.door_open_with_claims($1, $2::jsonb, $3, $4)",
              [user, JSON.stringify(claims), verifier, client],
            )
          : await control.query<DoorRow>(
              "select * from auth.door_open('password', $1, $2, $3, $4)",
              [user, secret, verifier, client],
            );
        if (row?.outcome !== "ok" || !row.role_name || !row.session_id) {
          const refusal = REFUSALS[row?.outcome ?? "failed"] ?? REFUSALS.failed;
          return (refusal as (u: string) => ErrorFields)(user);
        }
        const sessionId = Number(row.session_id);
        try {
          const upstream = await openUpstream(
            options.upstream,
            row.role_name,
            password,
            parameters,
          );
          return { upstream, sessionId };
        } catch (error) {
          // The session this login opened for itself is of no use now.
          await control.query("select auth.door_closed($1)", [sessionId]);
          // Another gateway may have given the role a newer password between
          // our check and our login: check again, once.
          if (error instanceof UpstreamRefused && error.code === "28P01" && attempt < 2) continue;
          throw error;
        }
      }
    });
  }

  function refuse(socket: Socket, fields: ErrorFields): void {
    socket.end(errorResponse(fields));
  }

  async function serve(socket: Socket, parameters: Record<string, string>): Promise<void> {
    const remote = socket.remoteAddress;
    const secure = socket instanceof TLSSocket;
    if (!secure && requireTls && !isLoopback(remote)) {
      return refuse(socket, {
        severity: "FATAL",
        code: "28000",
        message: "this gateway accepts passwords and tokens only over TLS",
        hint: options.tls ? "connect with sslmode=require" : "the gateway has no TLS certificate",
      });
    }
    if (parameters.replication !== undefined) {
      return refuse(socket, {
        severity: "FATAL",
        code: "28000",
        message: "replication connections are not allowed through the gateway",
      });
    }
    if (parameters.options !== undefined) {
      return refuse(socket, {
        severity: "FATAL",
        code: "28000",
        message: "startup options (-c ...) are not accepted by the gateway",
        hint: "use SET after connecting",
      });
    }
    const user = parameters.user ?? "";
    const database = parameters.database ?? user;
    if (database !== options.upstream.database && database !== user) {
      return refuse(socket, {
        severity: "FATAL",
        code: "3D000",
        message: `this gateway serves the database "${options.upstream.database}", not "${database}"`,
      });
    }

    socket.write(authenticationCleartextPassword());
    const reader = new MessageReader(socket);
    const timeout = setTimeout(() => socket.destroy(), 30_000);
    let secret: string;
    try {
      const reply = await reader.next(10_000);
      if (reply.type !== "p") {
        reader.release();
        return refuse(socket, {
          severity: "FATAL",
          code: "08P01",
          message: "expected a password message",
        });
      }
      secret = reply.body.toString("utf8").replace(/\0$/, "");
    } catch {
      reader.release();
      socket.destroy();
      return;
    } finally {
      clearTimeout(timeout);
    }

    const forwarded: Record<string, string> = {};
    for (const name of FORWARDED_PARAMETERS) {
      const value = parameters[name] ?? parameters[name.toLowerCase()];
      if (value !== undefined) forwarded[name] = value;
    }
    const client = `${(parameters.application_name || "a client").slice(0, 60)} from ${remote ?? "?"}`;
    let admitted: Awaited<ReturnType<typeof admit>>;
    try {
      admitted = await admit(user, secret, client, forwarded);
    } catch (error) {
      reader.release();
      if (error instanceof UpstreamRefused) {
        log(`gateway: the database refused ${user}: ${error.message}`);
        socket.end(error.raw);
        return;
      }
      log(`gateway: ${user}: ${(error as Error).message}`);
      return refuse(socket, {
        severity: "FATAL",
        code: "08006",
        message: "the gateway cannot reach the database",
      });
    }
    if (!("upstream" in admitted)) {
      reader.release();
      log(`gateway: refused ${user} (${client}): ${admitted.message}`);
      return refuse(socket, admitted);
    }

    const { upstream, sessionId } = admitted;
    const pid = randomInt(1, 2 ** 31);
    const cancelSecret = randomInt(-(2 ** 31), 2 ** 31);
    const cancelKey = `${pid}:${cancelSecret}`;
    cancelKeys.set(cancelKey, { pid: upstream.pid, secret: upstream.secret });
    const tracker = boundaryTracker();
    const relay: Relay = {
      user,
      sessionId,
      client: socket,
      upstream,
      atBoundary: tracker.atBoundary,
      closed: false,
    };
    relays.add(relay);
    log(`gateway: ${user} connected (${client}), session ${sessionId}`);

    socket.write(
      Buffer.concat([
        authenticationOk(),
        ...upstream.parameterStatus,
        backendKeyData(pid, cancelSecret),
        upstream.readyForQuery,
      ]),
    );
    const toServer = upstream.socket;
    const early = reader.release();
    if (early.length > 0) toServer.write(early);
    if (upstream.rest.length > 0) {
      tracker.feed(upstream.rest);
      socket.write(upstream.rest);
    }

    // The relay: raw bytes, with backpressure both ways.
    socket.on("data", (chunk: Buffer) => {
      if (!toServer.write(chunk)) {
        socket.pause();
        toServer.once("drain", () => socket.resume());
      }
    });
    toServer.on("data", (chunk: Buffer) => {
      tracker.feed(chunk);
      if (!socket.write(chunk)) {
        toServer.pause();
        socket.once("drain", () => toServer.resume());
      }
    });
    const finish = () => {
      if (relay.closed) return;
      relay.closed = true;
      relays.delete(relay);
      cancelKeys.delete(cancelKey);
      // end(), not destroy(): what is already written to the client (the
      // server's last words, or ours) still reaches it.
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
      toServer.destroy();
      control.query("select auth.door_closed($1)", [sessionId]).catch((error: Error) => {
        log(`gateway: could not end session ${sessionId}: ${error.message}`);
      });
      log(`gateway: ${user} disconnected, session ${sessionId}`);
    };
    socket.on("close", finish);
    socket.on("error", finish);
    toServer.on("close", finish);
    toServer.on("error", finish);
  }

  /** Ends a relay whose session is gone: its query cancelled, the client told if possible. */
  function end(relay: Relay, why: string): void {
    if (relay.closed) return;
    void cancelUpstream(options.upstream, relay.upstream.pid, relay.upstream.secret);
    if (relay.atBoundary()) {
      relay.client.write(errorResponse({ severity: "FATAL", code: "57P01", message: why }));
    }
    relay.upstream.socket.destroy(); // and finish() closes the client's side
  }

  // Every quarter second: which sessions of open connections are still alive.
  let polling = false;
  const poller = setInterval(async () => {
    if (polling || relays.size === 0) return;
    polling = true;
    try {
      const ids = [...new Set([...relays].map((r) => r.sessionId))];
      const { rows } = await control.query<{ id: string }>(
        "select auth.door_alive($1::bigint[]) as id",
        [ids],
      );
      const alive = new Set(rows.map((r) => Number(r.id)));
      for (const relay of relays) {
        if (!alive.has(relay.sessionId)) {
          log(`gateway: session ${relay.sessionId} of ${relay.user} ended: closing its connection`);
          end(relay, "your session has ended (logged out, revoked or expired)");
        }
      }
    } catch (error) {
      log(`gateway: could not check sessions: ${(error as Error).message}`);
    } finally {
      polling = false;
    }
  }, options.pollIntervalMs ?? 250);
  poller.unref();

  async function handle(socket: Socket): Promise<void> {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    socket.on("error", () => socket.destroy());
    const reader = new MessageReader(socket);
    let packet: Buffer;
    try {
      for (;;) {
        packet = await reader.nextUntyped();
        const code = packet.readInt32BE(4);
        // pg-gateway would take a GSSAPI request for a startup message.
        if (code === GSSENC_REQUEST) {
          socket.write("N");
          continue;
        }
        break;
      }
    } catch (error) {
      log(
        `gateway: a connection from ${socket.remoteAddress} ended before its startup: ${(error as Error).message}`,
      );
      reader.release();
      socket.destroy();
      return;
    }
    // Hand the packet back and let pg-gateway negotiate TLS and read the
    // startup message; take the socket back as soon as it has. A cancel
    // request comes instead of a startup message, in the clear or (libpq 17's
    // new cancel functions) after TLS: onMessage sees it either way.
    const rest = reader.release();
    socket.pause();
    socket.unshift(Buffer.concat([packet, rest]));
    const connection: PostgresConnection = new PostgresConnection(socket, {
      authMode: "cleartextPassword",
      ...(options.tls ? { tls: options.tls } : {}),
      onMessage: async (message, state) => {
        const data = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
        if (state.hasStarted || data.length !== 16 || data.readInt32BE(4) !== CANCEL_REQUEST) {
          return false;
        }
        const target = cancelKeys.get(`${data.readInt32BE(8)}:${data.readInt32BE(12)}`);
        if (target) await cancelUpstream(options.upstream, target.pid, target.secret);
        connection.socket.destroy();
        return true;
      },
      onStartup: (state) => {
        const taken = connection.detach();
        sockets.add(taken);
        taken.on("close", () => sockets.delete(taken));
        serve(taken, state.clientInfo?.parameters ?? { user: "" }).catch((error: Error) => {
          log(`gateway: ${error.message}`);
          taken.destroy();
        });
        return true;
      },
    });
    // Paused above for the unshift; a new 'data' listener does not undo that.
    socket.resume();
  }

  const server: Server = createServer((socket) => {
    handle(socket).catch((error: Error) => {
      log(`gateway: ${error.message}`);
      socket.destroy();
    });
  });
  const host = options.host ?? "127.0.0.1";
  const port = await listen(server, host, options.port);

  return {
    host,
    port,
    database: options.upstream.database,
    tls: options.tls !== undefined,
    connectionCount: () => relays.size,
    async redeemTicket(ticket, client) {
      const { rows } = await control.query<{ email: string; token: string }>(
        "select email, token from auth.door_redeem_ticket($1, $2)",
        [ticket, client],
      );
      return rows[0];
    },
    async close() {
      clearInterval(poller);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      for (const relay of relays) relay.upstream.socket.destroy();
      await closed;
      await control.end();
    },
  };
}
