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
import { type AccessTokenOptions, type Admitted, admission } from "./admission.js";
import { readOpening } from "./handshake.js";
import { addressKey, Counter, DEFAULT_LIMITS, type GatewayLimits } from "./limits.js";
import { nativeRelay } from "./native.js";
import {
  authenticationSasl,
  authenticationSaslContinue,
  bearerChallenge,
  OAUTHBEARER,
  parseBearerMessage,
  saslInitialResponse,
} from "./oauthbearer.js";
import { type DoorRelay, NativeRelay, overLimit, StreamRelay } from "./relay.js";
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
  /**
   * The OAuth door: a second port where clients log in with SASL
   * OAUTHBEARER (libpq 18: oauth_issuer and oauth_client_id), with an access
   * token of `issuer`. The application itself (device.sql.md) or an external
   * provider (then `accessTokens` must be its).
   */
  oauth?: {
    /** The issuer clients are sent to (its /.well-known/openid-configuration). */
    issuer: string;
    /** The scope clients ask for (default "database"). */
    scope?: string;
    /** Default: the gateway's `host`. */
    host?: string;
    /** 0 (default) picks a free port. */
    port?: number;
  };
  /** How often sessions and time limits are checked (default 250 ms). */
  pollIntervalMs?: number;
  /**
   * Which relay moves bytes after login: "native" (native/relay.c, an error
   * when it is not built), "javascript" (Node's streams), or "auto" (the
   * default: native when built). TLS connections always use JavaScript's.
   */
  relay?: "auto" | "native" | "javascript";
  log?: (line: string) => void;
}

export interface Gateway {
  readonly host: string;
  readonly port: number;
  /** The OAuth door's port, when there is one. */
  readonly oauthPort: number | undefined;
  readonly limits: GatewayLimits;
  /** Connections relayed right now. */
  connectionCount(): number;
  /** The relay plain connections get: "native" or "javascript" (and why, when not native). */
  readonly relay: { kind: "native" | "javascript"; why?: string };
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

type Release = () => void;

/** Which door a connection came through: the password port or the OAuth port. */
type Door = "password" | "oauth";

/** The client went away, or broke the protocol, while logging in. */
class ClientGone extends Error {}

/**
 * The gateway's state and its steps: accept a connection (bounded, with a
 * deadline), log it in (caps, password, the database's check), relay it, and
 * watch every relay (time limits, sessions still alive).
 */
class DoorGateway {
  readonly limits: GatewayLimits;
  private readonly log: (line: string) => void;
  /** Logins, which may wait in the database's password line. */
  readonly control: pg.Pool;
  /** Session checks and terminations, never queued behind logins. */
  private readonly housekeeping: pg.Pool;
  private readonly doors: ReturnType<typeof admission>;
  private readonly relays = new Set<DoorRelay>();
  readonly relayKind: { kind: "native" | "javascript"; why?: string };
  private readonly native: ReturnType<typeof nativeRelay>["module"];
  private readonly cancelKeys = new Map<string, { pid: number; secret: number }>();
  private readonly sockets = new Set<Socket>();
  private readonly pending: Counter;
  private readonly byAddress: Counter;
  private readonly byUser: Counter;
  private polling = false;

  constructor(private readonly options: GatewayOptions) {
    this.log = options.log ?? (() => {});
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.control = new pg.Pool({ ...options.control, max: 8 });
    this.housekeeping = new pg.Pool({ ...options.control, max: 1 });
    for (const pool of [this.control, this.housekeeping]) {
      pool.on("error", (error) => this.log(`gateway: database connection lost: ${error.message}`));
    }
    this.doors = admission(
      this.control,
      options.upstream,
      options.accessTokens,
      options.oauth?.issuer,
      this.log,
    );
    this.pending = new Counter(this.limits.maxPendingPerAddress, this.limits.maxPending);
    this.byAddress = new Counter(this.limits.maxConnectionsPerAddress, this.limits.maxConnections);
    this.byUser = new Counter(this.limits.maxConnectionsPerUser, Number.POSITIVE_INFINITY);
    const wanted = options.relay ?? "auto";
    if (wanted === "javascript") {
      this.relayKind = { kind: "javascript", why: "asked for" };
    } else {
      const { module, why } = nativeRelay();
      if (!module && wanted === "native")
        throw new Error(`the native relay is unavailable: ${why}`);
      this.native = module;
      this.relayKind = module ? { kind: "native" } : { kind: "javascript", why };
    }
  }

  get connectionCount(): number {
    return this.relays.size;
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    // A client that resets its connection must never take the gateway down
    // with an unhandled error, whatever stage it is at.
    socket.on("error", () => socket.destroy());
  }

  /**
   * A new connection: counted among those logging in, and let go when it
   * has not logged in by the deadline (PostgreSQL's authentication_timeout):
   * a client that sends half a packet, or nothing, holds nothing for long.
   */
  async accept(raw: Socket, door: Door = "password"): Promise<void> {
    this.track(raw);
    raw.setNoDelay(true);
    const address = addressKey(raw.remoteAddress);
    const releasePending = this.pending.take(address);
    if (!releasePending) {
      this.log(`gateway: too many connections logging in (from ${address}): refused`);
      raw.end(
        errorResponse(fatal("53300", "too many connections are logging in", "try again later")),
      );
      return;
    }
    let current: Socket = raw;
    let speaking = false;
    const deadline = setTimeout(() => {
      this.log(`gateway: a connection from ${address} did not log in within the time allowed`);
      if (speaking && current.writable) {
        // Past its startup message a client is waiting for the server's
        // word: it hears why, as PostgreSQL's own timeout says it. Half
        // closed now (login sees it cannot go on), gone a moment later.
        current.end(errorResponse(fatal("57014", "canceling authentication due to timeout")));
        setTimeout(() => {
          current.destroy();
          raw.destroy();
        }, 1000).unref();
        return;
      }
      current.destroy();
      raw.destroy();
    }, this.limits.authenticationTimeoutMs);
    try {
      const opening = await readOpening(raw, this.options.tls);
      if (opening.kind === "cancel") {
        const target = this.cancelKeys.get(`${opening.pid}:${opening.secret}`);
        if (target) await cancelUpstream(this.options.upstream, target.pid, target.secret);
        raw.destroy();
        return;
      }
      current = opening.socket;
      if (current !== raw) this.track(current);
      if (opening.kind === "refused") {
        this.log(`gateway: refused a connection from ${address}: ${opening.reason}`);
        current.destroy();
        return;
      }
      speaking = true;
      await this.login(current, address, opening.minor, opening.parameters, opening.rest, door);
    } catch (error) {
      this.log(
        `gateway: a connection from ${address} ended while logging in: ${(error as Error).message}`,
      );
      current.destroy();
      raw.destroy();
    } finally {
      clearTimeout(deadline);
      releasePending();
    }
  }

  /**
   * The relayed connection's place, taken before any password work, so that
   * a full gateway refuses at once and the caps cannot be raced.
   */
  private reserve(user: string, address: string): Release | ErrorFields {
    const releaseUser = this.byUser.take(user.toLowerCase());
    if (!releaseUser) {
      return fatal("53300", `too many connections for user "${user}"`, "close some of yours first");
    }
    const releaseAddress = this.byAddress.take(address);
    if (!releaseAddress) {
      releaseUser();
      return this.byAddress.count(address) >= this.limits.maxConnectionsPerAddress
        ? fatal("53300", "too many connections from your address")
        : fatal("53300", "the gateway has as many connections as it allows", "try again later");
    }
    return () => {
      releaseUser();
      releaseAddress();
    };
  }

  /** From the startup message to a relayed connection, or a refusal. */
  private async login(
    socket: Socket,
    address: string,
    minor: number,
    parameters: Record<string, string>,
    early: Buffer,
    door: Door,
  ): Promise<void> {
    const user = parameters.user ?? "";
    const refuse = (fields: ErrorFields) => {
      this.log(`gateway: refused ${user || "?"} from ${address}: ${fields.message}`);
      socket.end(errorResponse(fields));
    };
    const problem = startupProblem(socket, parameters, this.options);
    if (problem) return refuse(problem);
    // Options of a newer protocol (3.2, _pq_.*): we speak 3.0 and say so.
    if (minor > 0) {
      const unknown = Object.keys(parameters).filter((name) => name.startsWith("_pq_."));
      socket.write(negotiateProtocolVersion(0, unknown));
    }
    const release = this.reserve(user, address);
    if (typeof release !== "function") return refuse(release);

    const reader = new MessageReader(socket, early);
    const giveUp = () => {
      reader.release();
      release();
    };
    const label = `${(parameters.application_name || "a client").slice(0, 60)} from ${address}`;
    let admitted: Admitted | ErrorFields;
    try {
      const credential =
        door === "oauth"
          ? await this.bearerToken(socket, reader, user)
          : await this.password(socket, reader);
      if ("severity" in credential) {
        giveUp();
        return refuse(credential);
      }
      if (credential.kind === "bearer") {
        admitted = await this.doors.admitBearer(
          user,
          credential.token,
          { label, address },
          forwardedParameters(parameters),
        );
        // A refused token gets the challenge first, as PostgreSQL sends it.
        if (!("upstream" in admitted) && admitted.code === "28P01") {
          admitted = await this.challenge(socket, reader, user);
        }
      } else {
        admitted = await this.doors.admit(
          user,
          credential.secret,
          { label, address },
          forwardedParameters(parameters),
        );
      }
    } catch (error) {
      giveUp();
      if (error instanceof UpstreamRefused) {
        this.log(`gateway: the database refused ${user}: ${error.message}`);
        socket.end(error.raw);
        return;
      }
      if (error instanceof ClientGone) {
        socket.destroy();
        return;
      }
      this.log(`gateway: ${user}: ${(error as Error).message}`);
      return refuse(fatal("08006", "the gateway cannot reach the database"));
    }
    if (!("upstream" in admitted)) {
      giveUp();
      return refuse(admitted);
    }
    if (socket.destroyed || !socket.writable) {
      // The deadline passed while the database checked: nobody to relay to.
      giveUp();
      admitted.upstream.socket.destroy();
      void this.control.query("select auth.door_closed($1)", [admitted.sessionId]).catch(() => {});
      return;
    }
    this.relay(socket, admitted.email ?? user, label, admitted, reader.release(), release);
  }

  /** The password door: the client's password message. */
  private async password(
    socket: Socket,
    reader: MessageReader,
  ): Promise<{ kind: "password"; secret: string } | ErrorFields> {
    socket.write(authenticationCleartextPassword());
    const reply = await reader.next(MAX_PASSWORD_MESSAGE).catch(() => {
      throw new ClientGone();
    });
    if (reply.type !== "p") return fatal("08P01", "expected a password message");
    return { kind: "password", secret: reply.body.toString("utf8").replace(/\0$/, "") };
  }

  /**
   * The OAuth door: OAUTHBEARER offered alone; a discovery request gets the
   * challenge that names the issuer (and its end), a token is returned.
   */
  private async bearerToken(
    socket: Socket,
    reader: MessageReader,
    user: string,
  ): Promise<{ kind: "bearer"; token: string } | ErrorFields> {
    socket.write(authenticationSasl([OAUTHBEARER]));
    const first = await reader.next(MAX_PASSWORD_MESSAGE).catch(() => {
      throw new ClientGone();
    });
    if (first.type !== "p") return fatal("08P01", "expected a SASL response");
    const initial = saslInitialResponse(first.body);
    if (!initial) return fatal("08P01", "malformed SASLInitialResponse message");
    if (initial.mechanism !== OAUTHBEARER) {
      return fatal("08P01", "client selected an invalid SASL authentication mechanism");
    }
    const parsed = parseBearerMessage(initial.data);
    if (parsed.kind === "malformed") {
      return fatal("08P01", "malformed OAUTHBEARER message", parsed.reason);
    }
    if (parsed.kind === "discovery") return this.challenge(socket, reader, user);
    return { kind: "bearer", token: parsed.token };
  }

  /** The OAUTHBEARER refusal: the challenge, the client's 0x01, then FATAL. */
  private async challenge(
    socket: Socket,
    reader: MessageReader,
    user: string,
  ): Promise<ErrorFields> {
    const oauth = this.options.oauth as NonNullable<GatewayOptions["oauth"]>;
    socket.write(
      authenticationSaslContinue(bearerChallenge(oauth.issuer, oauth.scope ?? "database")),
    );
    const reply = await reader.next(MAX_PASSWORD_MESSAGE).catch(() => {
      throw new ClientGone();
    });
    if (reply.type !== "p" || reply.body.toString("latin1") !== "\x01") {
      return fatal(
        "08P01",
        "malformed OAUTHBEARER message",
        "expected the 0x01 that ends a refused exchange",
      );
    }
    return fatal(
      "28000",
      `OAuth bearer authentication failed for user "${user}"`,
      `sign in through ${oauth.issuer} (the token is unknown, expired or already used)`,
    );
  }

  /** Logged in: the client gets the server's greeting (with our cancel key), then bytes both ways. */
  private relay(
    socket: Socket,
    user: string,
    label: string,
    { upstream, sessionId }: Admitted,
    early: Buffer,
    release: Release,
  ): void {
    const pid = randomInt(1, 2 ** 31);
    const cancelSecret = randomInt(-(2 ** 31), 2 ** 31);
    const cancelKey = `${pid}:${cancelSecret}`;
    this.cancelKeys.set(cancelKey, { pid: upstream.pid, secret: upstream.secret });
    const relay: DoorRelay =
      this.native && NativeRelay.fits(socket, upstream)
        ? new NativeRelay(this.native, socket, upstream, user, sessionId)
        : new StreamRelay(socket, upstream, user, sessionId);
    this.relays.add(relay);
    this.log(`gateway: ${user} connected (${label}, ${relay.kind} relay), session ${sessionId}`);
    const greeting = Buffer.concat([
      authenticationOk(),
      ...upstream.parameterStatus,
      backendKeyData(pid, cancelSecret),
      upstream.readyForQuery,
    ]);
    relay.start(greeting, early, () => {
      this.relays.delete(relay);
      this.cancelKeys.delete(cancelKey);
      release();
      this.control.query("select auth.door_closed($1)", [sessionId]).catch((error: Error) => {
        this.log(`gateway: could not end session ${sessionId}: ${error.message}`);
      });
      this.log(`gateway: ${user} disconnected, session ${sessionId}`);
    });
  }

  /** Ends a relay: its backend terminated (a cancel can be caught), the client told why. */
  private end(relay: DoorRelay, fields: ErrorFields): void {
    if (relay.closed) return;
    const { pid, secret } = relay.upstream;
    this.housekeeping
      .query("select auth.door_end($1)", [pid])
      .catch(() => cancelUpstream(this.options.upstream, pid, secret));
    relay.end(fields);
  }

  /**
   * The time limits, and which sessions of open connections are still alive
   * and still have a door (activity since the last look renews them).
   */
  async check(): Promise<void> {
    if (this.polling || this.relays.size === 0) return;
    this.polling = true;
    try {
      const now = performance.now();
      for (const relay of this.relays) {
        const state = relay.snapshot();
        const why = overLimit(state, now, this.limits);
        if (why) {
          this.log(
            `gateway: ${relay.user}, session ${relay.sessionId}: ${why}: ending the connection`,
          );
          this.end(relay, fatal(state.ready ? "25P03" : "57014", why));
        }
      }
      // Only the connections asked about: one that opens while the
      // question is out was not in it, and is not ended for that.
      const asked = [...this.relays].filter((relay) => !relay.closed);
      const ids = new Set<number>();
      const active = new Set<number>();
      for (const relay of asked) {
        ids.add(relay.sessionId);
        if (relay.takeActive()) active.add(relay.sessionId);
      }
      if (ids.size === 0) return;
      const { rows } = await this.housekeeping.query<{ id: string }>(
        "select auth.door_alive($1::bigint[], $2::bigint[]) as id",
        [[...ids], [...active]],
      );
      const alive = new Set(rows.map((r) => Number(r.id)));
      for (const relay of asked) {
        if (!alive.has(relay.sessionId)) {
          this.log(
            `gateway: session ${relay.sessionId} of ${relay.user} ended: closing its connection`,
          );
          this.end(
            relay,
            fatal("57P01", "your session has ended (logged out, revoked, expired or no door)"),
          );
        }
      }
    } catch (error) {
      this.log(`gateway: could not check sessions: ${(error as Error).message}`);
    } finally {
      this.polling = false;
    }
  }

  async redeemTicket(ticket: string, client: string, address = "") {
    const { rows } = await this.control.query<{ email: string; token: string }>(
      "select email, token from auth.door_redeem_ticket($1, $2, $3)",
      [ticket, client, address],
    );
    return rows[0];
  }

  /** Drops every connection and relay, then the database pools. */
  async shutDown(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    for (const relay of this.relays) relay.destroy();
    await Promise.all([this.control.end(), this.housekeeping.end()]);
  }
}

/** Startup parameters passed on to PostgreSQL (anything else is refused or dropped). */
function forwardedParameters(parameters: Record<string, string>): Record<string, string> {
  const forwarded: Record<string, string> = {};
  for (const name of FORWARDED_PARAMETERS) {
    const value = parameters[name] ?? parameters[name.toLowerCase()];
    if (value !== undefined) forwarded[name] = value;
  }
  return forwarded;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const gateway = new DoorGateway(options);
  const log = options.log ?? (() => {});
  const poller = setInterval(() => void gateway.check(), options.pollIntervalMs ?? 250);
  poller.unref();
  const server: Server = createServer((socket) => {
    gateway.accept(socket).catch((error: Error) => {
      log(`gateway: ${error.message}`);
      socket.destroy();
    });
  });
  const host = options.host ?? "127.0.0.1";
  const port = await listen(server, host, options.port);
  let oauthServer: Server | undefined;
  let oauthPort: number | undefined;
  if (options.oauth) {
    oauthServer = createServer((socket) => {
      gateway.accept(socket, "oauth").catch((error: Error) => {
        log(`gateway: ${error.message}`);
        socket.destroy();
      });
    });
    try {
      oauthPort = await listen(oauthServer, options.oauth.host ?? host, options.oauth.port);
    } catch (error) {
      server.close();
      await gateway.shutDown();
      throw error;
    }
  }
  return {
    host,
    port,
    oauthPort,
    limits: gateway.limits,
    database: options.upstream.database,
    tls: options.tls !== undefined,
    connectionCount: () => gateway.connectionCount,
    relay: gateway.relayKind,
    redeemTicket: (ticket, client, address) => gateway.redeemTicket(ticket, client, address),
    async close() {
      clearInterval(poller);
      const closed = [server, oauthServer].map(
        (s) => new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve())),
      );
      await gateway.shutDown();
      await Promise.all(closed);
    },
  };
}
