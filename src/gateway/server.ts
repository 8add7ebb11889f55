// The database doors: a PostgreSQL wire-protocol gateway in front of the
// app's database. Clients (psql, BI tools, node-postgres, pgweb) log in with
// their email and an account password, a session token or an identity
// provider's access token; the gateway checks it in the database (as the
// `gateway` role, through auth.door_open), logs in upstream as the user's
// own door role, and from then on relays raw bytes both ways. See
// doors.sql.md and the README.
//
// Every SQL login is treated as hostile: what one client may hold (sockets
// that are still logging in, relayed connections, time in a statement or a
// transaction) is bounded here, where no client can SET it away, and a
// connection that must end has its backend terminated, not merely cancelled.

import { randomInt } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import pg from "pg";
import { listen } from "../net.js";
import { type AccessTokenOptions, admission } from "./admission.js";
import { readOpening } from "./handshake.js";
import { addressKey, Counter, DEFAULT_LIMITS, type GatewayLimits } from "./limits.js";
import { Relay } from "./relay.js";
import { cancelUpstream, type UpstreamAddress, UpstreamRefused } from "./upstream.js";
import {
  authenticationCleartextPassword,
  authenticationOk,
  backendKeyData,
  type ErrorFields,
  errorResponse,
  MessageReader,
  negotiateProtocolVersion,
} from "./wire.js";

export { ACCESS_TOKEN_ALGORITHMS, type AccessTokenOptions } from "./admission.js";
export { DEFAULT_LIMITS, type GatewayLimits } from "./limits.js";

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
  /** What one client may hold, and for how long (see limits.ts for the defaults). */
  limits?: Partial<GatewayLimits>;
  /** How often sessions and time limits are checked (default 250 ms). */
  pollIntervalMs?: number;
  log?: (line: string) => void;
}

export interface Gateway {
  readonly host: string;
  readonly port: number;
  readonly limits: GatewayLimits;
  /** Connections relayed right now. */
  connectionCount(): number;
  /** Redeems a pgweb ticket: the session's email and token (see pgweb.ts). */
  redeemTicket(
    ticket: string,
    client: string,
    address?: string,
  ): Promise<{ email: string; token: string } | undefined>;
  readonly database: string;
  readonly tls: boolean;
  close(): Promise<void>;
}

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

/** A password message may carry an access token: a few kilobytes, never megabytes. */
const MAX_PASSWORD_MESSAGE = 16 * 1024;

function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === "::1" || /^(::ffff:)?127\./.test(address);
}

const fatal = (code: string, message: string, hint?: string): ErrorFields => ({
  severity: "FATAL",
  code,
  message,
  ...(hint ? { hint } : {}),
});

/** Why a startup is refused before any password is asked for, if it is. */
function startupProblem(
  socket: Socket,
  parameters: Record<string, string>,
  options: GatewayOptions,
): ErrorFields | undefined {
  const requireTls = options.requireTls ?? true;
  if (!(socket instanceof TLSSocket) && requireTls && !isLoopback(socket.remoteAddress)) {
    return fatal(
      "28000",
      "this gateway accepts passwords and tokens only over TLS",
      options.tls ? "connect with sslmode=require" : "the gateway has no TLS certificate",
    );
  }
  if (parameters.replication !== undefined) {
    return fatal("28000", "replication connections are not allowed through the gateway");
  }
  if (parameters.options !== undefined) {
    return fatal(
      "28000",
      "startup options (-c ...) are not accepted by the gateway",
      "use SET after connecting",
    );
  }
  const user = parameters.user ?? "";
  const database = parameters.database ?? user;
  if (database !== options.upstream.database && database !== user) {
    return fatal(
      "3D000",
      `this gateway serves the database "${options.upstream.database}", not "${database}"`,
    );
  }
  return undefined;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log ?? (() => {});
  const limits: GatewayLimits = { ...DEFAULT_LIMITS, ...options.limits };
  // Logins may wait in the database's password line; session checks and
  // terminations have a connection of their own, never queued behind them.
  const control = new pg.Pool({ ...options.control, max: 8 });
  const housekeeping = new pg.Pool({ ...options.control, max: 1 });
  for (const pool of [control, housekeeping]) {
    pool.on("error", (error) => log(`gateway: database connection lost: ${error.message}`));
  }
  const doors = admission(control, options.upstream, options.accessTokens);
  const relays = new Set<Relay>();
  const cancelKeys = new Map<string, { pid: number; secret: number }>();
  const sockets = new Set<Socket>();
  const pending = new Counter(limits.maxPendingPerAddress, limits.maxPending);
  const byAddress = new Counter(limits.maxConnectionsPerAddress, limits.maxConnections);
  const byUser = new Counter(limits.maxConnectionsPerUser, Number.POSITIVE_INFINITY);

  function track(socket: Socket): void {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  }

  /** Ends a relay: its backend terminated (a cancel can be caught), the client told why. */
  function endRelay(relay: Relay, fields: ErrorFields): void {
    if (relay.closed) return;
    const { pid, secret } = relay.upstream;
    housekeeping
      .query("select auth.door_end($1)", [pid])
      .catch(() => cancelUpstream(options.upstream, pid, secret));
    relay.end(fields);
  }

  async function serve(
    socket: Socket,
    address: string,
    minor: number,
    parameters: Record<string, string>,
    early: Buffer,
  ): Promise<void> {
    const refused = (fields: ErrorFields) => {
      log(`gateway: refused ${parameters.user ?? "?"} from ${address}: ${fields.message}`);
      socket.end(errorResponse(fields));
    };
    const problem = startupProblem(socket, parameters, options);
    if (problem) return refused(problem);
    const user = parameters.user ?? "";
    // Options of a newer protocol (3.2, _pq_.*): we speak 3.0 and say so.
    if (minor > 0) {
      const unknown = Object.keys(parameters).filter((name) => name.startsWith("_pq_."));
      socket.write(negotiateProtocolVersion(0, unknown));
    }
    // The relayed connection's place is taken before any password work, so
    // that a full gateway refuses at once and the caps cannot be raced.
    const userKey = user.toLowerCase();
    const releaseUser = byUser.take(userKey);
    if (!releaseUser) {
      return refused(
        fatal("53300", `too many connections for user "${user}"`, "close some of yours first"),
      );
    }
    const releaseAddress = byAddress.take(address);
    if (!releaseAddress) {
      releaseUser();
      return refused(
        byAddress.count(address) >= limits.maxConnectionsPerAddress
          ? fatal("53300", "too many connections from your address")
          : fatal("53300", "the gateway has as many connections as it allows", "try again later"),
      );
    }
    const release = () => {
      releaseUser();
      releaseAddress();
    };

    socket.write(authenticationCleartextPassword());
    const reader = new MessageReader(socket, early);
    let secret: string;
    try {
      const reply = await reader.next(MAX_PASSWORD_MESSAGE);
      if (reply.type !== "p") {
        reader.release();
        release();
        return refused(fatal("08P01", "expected a password message"));
      }
      secret = reply.body.toString("utf8").replace(/\0$/, "");
    } catch {
      reader.release();
      release();
      socket.destroy();
      return;
    }

    const forwarded: Record<string, string> = {};
    for (const name of FORWARDED_PARAMETERS) {
      const value = parameters[name] ?? parameters[name.toLowerCase()];
      if (value !== undefined) forwarded[name] = value;
    }
    const label = `${(parameters.application_name || "a client").slice(0, 60)} from ${address}`;
    let admitted: Awaited<ReturnType<typeof doors.admit>>;
    try {
      admitted = await doors.admit(user, secret, { label, address }, forwarded);
    } catch (error) {
      reader.release();
      release();
      if (error instanceof UpstreamRefused) {
        log(`gateway: the database refused ${user}: ${error.message}`);
        socket.end(error.raw);
        return;
      }
      log(`gateway: ${user}: ${(error as Error).message}`);
      return refused(fatal("08006", "the gateway cannot reach the database"));
    }
    if (!("upstream" in admitted)) {
      reader.release();
      release();
      return refused(admitted);
    }
    if (socket.destroyed) {
      // The deadline passed while the database checked: nobody to relay to.
      reader.release();
      release();
      admitted.upstream.socket.destroy();
      void control.query("select auth.door_closed($1)", [admitted.sessionId]).catch(() => {});
      return;
    }

    const { upstream, sessionId } = admitted;
    const pid = randomInt(1, 2 ** 31);
    const cancelSecret = randomInt(-(2 ** 31), 2 ** 31);
    const cancelKey = `${pid}:${cancelSecret}`;
    cancelKeys.set(cancelKey, { pid: upstream.pid, secret: upstream.secret });
    const relay = new Relay(socket, upstream, user, sessionId);
    relays.add(relay);
    log(`gateway: ${user} connected (${label}), session ${sessionId}`);
    socket.write(
      Buffer.concat([
        authenticationOk(),
        ...upstream.parameterStatus,
        backendKeyData(pid, cancelSecret),
        upstream.readyForQuery,
      ]),
    );
    relay.start(reader.release(), () => {
      relays.delete(relay);
      cancelKeys.delete(cancelKey);
      release();
      control.query("select auth.door_closed($1)", [sessionId]).catch((error: Error) => {
        log(`gateway: could not end session ${sessionId}: ${(error as Error).message}`);
      });
      log(`gateway: ${user} disconnected, session ${sessionId}`);
    });
  }

  async function handle(raw: Socket): Promise<void> {
    track(raw);
    raw.setNoDelay(true);
    raw.on("error", () => raw.destroy());
    const address = addressKey(raw.remoteAddress);
    const releasePending = pending.take(address);
    if (!releasePending) {
      log(`gateway: too many connections logging in (from ${address}): refused`);
      raw.end(
        errorResponse(fatal("53300", "too many connections are logging in", "try again later")),
      );
      return;
    }
    let current: Socket = raw;
    // The whole authentication phase has a deadline, like PostgreSQL's
    // authentication_timeout: a client that sends half a packet, or
    // nothing, is let go.
    const deadline = setTimeout(() => {
      log(`gateway: a connection from ${address} did not log in within the time allowed`);
      current.destroy();
      raw.destroy();
    }, limits.authenticationTimeoutMs);
    try {
      const opening = await readOpening(raw, options.tls);
      if (opening.kind === "cancel") {
        const target = cancelKeys.get(`${opening.pid}:${opening.secret}`);
        if (target) await cancelUpstream(options.upstream, target.pid, target.secret);
        raw.destroy();
        return;
      }
      current = opening.socket;
      if (current !== raw) track(current);
      if (opening.kind === "refused") {
        log(`gateway: refused a connection from ${address}: ${opening.reason}`);
        current.destroy();
        return;
      }
      await serve(current, address, opening.minor, opening.parameters, opening.rest);
    } catch (error) {
      log(
        `gateway: a connection from ${address} ended while logging in: ${(error as Error).message}`,
      );
      current.destroy();
      raw.destroy();
    } finally {
      clearTimeout(deadline);
      releasePending();
    }
  }

  // Every quarter second: the time limits, and which sessions of open
  // connections are still alive (activity since the last look renews them).
  let polling = false;
  const poller = setInterval(async () => {
    if (polling || relays.size === 0) return;
    polling = true;
    try {
      const now = performance.now();
      for (const relay of relays) {
        const why = relay.overLimit(now, limits);
        if (why) {
          log(`gateway: ${relay.user}, session ${relay.sessionId}: ${why}: ending the connection`);
          endRelay(relay, fatal(relay.state.ready ? "25P03" : "57014", why));
        }
      }
      const ids = new Set<number>();
      const active = new Set<number>();
      for (const relay of relays) {
        if (relay.closed) continue;
        ids.add(relay.sessionId);
        if (relay.state.active) active.add(relay.sessionId);
        relay.state.active = false;
      }
      if (ids.size === 0) return;
      const { rows } = await housekeeping.query<{ id: string }>(
        "select auth.door_alive($1::bigint[], $2::bigint[]) as id",
        [[...ids], [...active]],
      );
      const alive = new Set(rows.map((r) => Number(r.id)));
      for (const relay of relays) {
        if (!alive.has(relay.sessionId)) {
          log(`gateway: session ${relay.sessionId} of ${relay.user} ended: closing its connection`);
          endRelay(
            relay,
            fatal("57P01", "your session has ended (logged out, revoked, expired or no door)"),
          );
        }
      }
    } catch (error) {
      log(`gateway: could not check sessions: ${(error as Error).message}`);
    } finally {
      polling = false;
    }
  }, options.pollIntervalMs ?? 250);
  poller.unref();

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
    limits,
    database: options.upstream.database,
    tls: options.tls !== undefined,
    connectionCount: () => relays.size,
    async redeemTicket(ticket, client, address = "") {
      const { rows } = await control.query<{ email: string; token: string }>(
        "select email, token from auth.door_redeem_ticket($1, $2, $3)",
        [ticket, client, address],
      );
      return rows[0];
    },
    async close() {
      clearInterval(poller);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      for (const relay of relays) relay.upstream.socket.destroy();
      await closed;
      await Promise.all([control.end(), housekeeping.end()]);
    },
  };
}
