// postgrest-sessions gateway: the database doors for a deployment. psql and
// other PostgreSQL clients log in with an email and an account password, a
// session token or an access token; pgweb through its connect backend. See
// doors.sql.md, and docs/database-doors.md.

import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Command, Option } from "commander";
import { parse as parseConnectionString } from "pg-connection-string";
import { registerCleanup, setSignalExitCode } from "../cleanup.js";
import { startConnectBackend } from "../gateway/pgweb.js";
import { DEFAULT_LIMITS, type GatewayLimits, startGateway } from "../gateway/server.js";
import { type UpstreamAddress, upstreamAddress } from "../gateway/upstream.js";
import { withClient } from "../postgres/db.js";
import { providerKeys } from "../serving/sso.js";
import { assertNoProblems, runAction, ssoOptions } from "./common.js";

interface GatewayFlags {
  databaseUrl?: string;
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  oidcIssuer?: string;
  oidcAudience?: string;
  oidcKeys?: string;
  oidcUserinfo?: string;
  pgwebToken?: string;
  pgwebListen: string;
  oauthListen?: string;
  oauthIssuer?: string;
  publicAddress?: string;
  maxConnections: string;
  maxConnectionsPerUser: string;
  maxConnectionsPerAddress: string;
  maxPending: string;
  maxPendingPerAddress: string;
  authenticationTimeout: string;
  maxStatement: string;
  maxTransaction: string;
  maxIdleInTransaction: string;
  relay: "auto" | "native" | "javascript";
}

/** "30s", "500ms", "2m" or plain seconds, in milliseconds. */
export function parseDuration(text: string, name: string, problems: string[]): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  const value = Number(match?.[1]);
  if (!match || !(value > 0)) {
    problems.push(`${name} must be a duration such as 30s, 500ms or 2m, got "${text}"`);
    return 0;
  }
  return Math.round(value * ({ ms: 1, s: 1000, m: 60_000 }[match[2] ?? "s"] as number));
}

function parseCount(text: string, name: string, problems: string[]): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    problems.push(`${name} must be a whole number of at least 1, got "${text}"`);
  }
  return value;
}

/** The limits flags, checked; see limits.ts for what each bounds. */
function gatewayLimits(flags: GatewayFlags, problems: string[]): GatewayLimits {
  return {
    maxConnections: parseCount(flags.maxConnections, "--max-connections", problems),
    maxConnectionsPerUser: parseCount(
      flags.maxConnectionsPerUser,
      "--max-connections-per-user",
      problems,
    ),
    maxConnectionsPerAddress: parseCount(
      flags.maxConnectionsPerAddress,
      "--max-connections-per-address",
      problems,
    ),
    maxPending: parseCount(flags.maxPending, "--max-pending", problems),
    maxPendingPerAddress: parseCount(
      flags.maxPendingPerAddress,
      "--max-pending-per-address",
      problems,
    ),
    authenticationTimeoutMs: parseDuration(
      flags.authenticationTimeout,
      "--authentication-timeout",
      problems,
    ),
    maxStatementMs: parseDuration(flags.maxStatement, "--max-statement", problems),
    maxTransactionMs: parseDuration(flags.maxTransaction, "--max-transaction", problems),
    maxIdleInTransactionMs: parseDuration(
      flags.maxIdleInTransaction,
      "--max-idle-in-transaction",
      problems,
    ),
  };
}

const seconds = (ms: number) => `${ms / 1000}s`;

/** "host:port", "[v6]:port" or ":port" (all interfaces). */
export function parseAddress(
  text: string,
  name: string,
  problems: string[],
): { host: string; port: number } | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || !Number.isInteger(port) || port < 1 || port > 65535) {
    problems.push(`${name} must be host:port (e.g. 127.0.0.1:6432), got "${text}"`);
    return undefined;
  }
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}

/** Where door roles log in, from the gateway's own database URL. */
export function upstreamFromUrl(url: string, problems: string[]): UpstreamAddress | undefined {
  let parsed: ReturnType<typeof parseConnectionString>;
  try {
    parsed = parseConnectionString(url);
  } catch (error) {
    problems.push(`--database-url is not a PostgreSQL URL: ${(error as Error).message}`);
    return undefined;
  }
  if (!parsed.database) {
    problems.push("--database-url must name the application's database");
    return undefined;
  }
  // TLS exactly as node-postgres reads the URL for the gateway's own
  // connection (sslmode, sslrootcert, sslcert, sslkey).
  const tls = typeof parsed.ssl === "object" ? (parsed.ssl as ConnectionOptions) : undefined;
  return upstreamAddress(
    parsed.host || "localhost",
    Number(parsed.port || 5432),
    parsed.database,
    tls,
  );
}

/**
 * Logs in once with the gateway's URL before listening, so that a wrong
 * password or a database without the doors stops the command with the
 * reason, instead of every client being told "cannot reach the database".
 */
async function checkDatabase(url: string): Promise<void> {
  const { rows } = await withClient({ connectionString: url }, (client) =>
    client.query<{ present: boolean }>(
      "select to_regprocedure('auth.door_open(text, text, text, text, text, text)') is not null as present",
    ),
  );
  if (!rows[0]?.present) {
    throw new Error(
      "the database in --database-url has no database doors (auth.door_open): load doors.sql.md into it first",
    );
  }
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function gatewayCommand(): Command {
  return new Command("gateway")
    .summary("let psql, other PostgreSQL clients and pgweb in with the app's users and sessions")
    .description(
      "A PostgreSQL wire-protocol gateway in front of the app's database. Clients log in with an email " +
        "as the user name and, as the password, the account's password, a live session token or an " +
        "identity provider's access token; each connection then runs as that user's own database role, " +
        "under the same Row Level Security as the API, and ends within a second of the session's end. " +
        "With --pgweb-token it also serves pgweb's connect backend.",
    )
    .addOption(
      new Option(
        "--database-url <url>",
        "the app's database, as the gateway role (postgres://gateway:PASSWORD@host:5432/app; sslmode honoured)",
      ).env("GATEWAY_DATABASE_URL"),
    )
    .addOption(
      new Option("--listen <host:port>", "where clients connect")
        .env("GATEWAY_LISTEN")
        .default("127.0.0.1:6432"),
    )
    .option("--tls-cert <file>", "a PEM certificate chain, offered to clients (sslmode=require)")
    .option("--tls-key <file>", "its PEM private key")
    .addOption(
      new Option("--oidc-issuer <url>", "accept access tokens from this identity provider").env(
        "OIDC_ISSUER",
      ),
    )
    .addOption(
      new Option("--oidc-audience <aud>", "the audience its tokens must carry").env(
        "OIDC_AUDIENCE",
      ),
    )
    .addOption(
      new Option("--oidc-keys <file>", "its JSON Web Key Set from a file instead of discovery").env(
        "OIDC_KEYS_FILE",
      ),
    )
    .addOption(
      new Option(
        "--oauth-listen <host:port>",
        "also listen here for clients that sign in with OAuth (libpq 18's oauth_issuer; SASL OAUTHBEARER)",
      ).env("GATEWAY_OAUTH_LISTEN"),
    )
    .addOption(
      new Option(
        "--oauth-issuer <url>",
        "the issuer those clients are sent to: the application's public origin (device.sql.md), " +
          "or --oidc-issuer's for its tokens (default: --oidc-issuer)",
      ).env("GATEWAY_OAUTH_ISSUER"),
    )
    .addOption(
      new Option(
        "--oidc-userinfo <url>",
        "its userinfo endpoint: the OAuth door checks opaque (non-JWT) tokens there, when --oauth-issuer is the provider",
      ).env("OIDC_USERINFO"),
    )
    .addOption(
      new Option(
        "--pgweb-token <secret>",
        "serve pgweb's connect backend, for pgweb started with --connect-token <secret> (16 characters or more)",
      ).env("PGWEB_CONNECT_TOKEN"),
    )
    .addOption(
      new Option("--pgweb-listen <host:port>", "where pgweb's connect backend listens")
        .env("PGWEB_BACKEND_LISTEN")
        .default("127.0.0.1:6433"),
    )
    .option(
      "--public-address <host:port>",
      "the gateway's address as pgweb reaches it, for the database URLs it is given (default: --listen)",
    )
    .addOption(
      new Option(
        "--relay <kind>",
        "what moves bytes after login: native (the C relay npm run build compiles), javascript, " +
          "or auto (native when it is built); TLS connections always use javascript",
      )
        .choices(["auto", "native", "javascript"])
        .env("GATEWAY_RELAY")
        .default("auto"),
    )
    .option(
      "--max-connections <n>",
      "relayed connections in all (each is one PostgreSQL backend; keep it under max_connections minus PostgREST's pool and the reserved ones)",
      String(DEFAULT_LIMITS.maxConnections),
    )
    .option(
      "--max-connections-per-user <n>",
      "relayed connections of one user",
      String(DEFAULT_LIMITS.maxConnectionsPerUser),
    )
    .option(
      "--max-connections-per-address <n>",
      "relayed connections from one client address",
      String(DEFAULT_LIMITS.maxConnectionsPerAddress),
    )
    .option(
      "--max-pending <n>",
      "connections still logging in, in all",
      String(DEFAULT_LIMITS.maxPending),
    )
    .option(
      "--max-pending-per-address <n>",
      "connections still logging in from one client address",
      String(DEFAULT_LIMITS.maxPendingPerAddress),
    )
    .option(
      "--authentication-timeout <duration>",
      "time from a connection's first byte to the end of its password check",
      seconds(DEFAULT_LIMITS.authenticationTimeoutMs),
    )
    .option(
      "--max-statement <duration>",
      "longest statement; past it the connection's backend is ended",
      seconds(DEFAULT_LIMITS.maxStatementMs),
    )
    .option(
      "--max-transaction <duration>",
      "longest transaction; past it the connection's backend is ended",
      seconds(DEFAULT_LIMITS.maxTransactionMs),
    )
    .option(
      "--max-idle-in-transaction <duration>",
      "longest wait for the client inside a transaction; past it the backend is ended",
      seconds(DEFAULT_LIMITS.maxIdleInTransactionMs),
    )
    .action((flags: GatewayFlags) => runAction(() => runGateway(flags)));
}

/** The gateway command's work: options checked, the database checked, the doors opened. */
async function runGateway(flags: GatewayFlags): Promise<void> {
  const problems: string[] = [];
  if (!flags.databaseUrl) problems.push("--database-url (or GATEWAY_DATABASE_URL) is required");
  const listen = parseAddress(flags.listen, "--listen", problems);
  const pgwebListen = parseAddress(flags.pgwebListen, "--pgweb-listen", problems);
  const publicAddress = flags.publicAddress
    ? parseAddress(flags.publicAddress, "--public-address", problems)
    : undefined;
  const upstream = flags.databaseUrl ? upstreamFromUrl(flags.databaseUrl, problems) : undefined;
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    problems.push("--tls-cert and --tls-key go together");
  }
  if (flags.pgwebToken !== undefined && flags.pgwebToken.length < 16) {
    problems.push("--pgweb-token must be at least 16 characters");
  }
  const sso = ssoOptions(flags, problems);
  const limits = gatewayLimits(flags, problems);
  const oauthListen = flags.oauthListen
    ? parseAddress(flags.oauthListen, "--oauth-listen", problems)
    : undefined;
  const oauthIssuer = (flags.oauthIssuer ?? sso?.issuer)?.replace(/\/$/, "");
  if (flags.oauthListen && !oauthIssuer) {
    problems.push(
      "--oauth-listen needs --oauth-issuer (the application's public origin) or --oidc-issuer",
    );
  }
  if (flags.oauthIssuer !== undefined && !flags.oauthListen) {
    problems.push("--oauth-issuer goes with --oauth-listen");
  }
  if (oauthIssuer && !/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(oauthIssuer)) {
    problems.push(`--oauth-issuer must be an http(s) URL without a query, got "${oauthIssuer}"`);
  }
  assertNoProblems(problems);
  const tls =
    flags.tlsCert && flags.tlsKey
      ? { cert: readFileSync(flags.tlsCert), key: readFileSync(flags.tlsKey) }
      : undefined;
  await checkDatabase(flags.databaseUrl as string);
  const gateway = await startGateway({
    control: { connectionString: flags.databaseUrl as string },
    upstream: upstream as UpstreamAddress,
    host: listen?.host as string,
    port: listen?.port as number,
    ...(tls ? { tls } : {}),
    limits,
    ...(oauthListen && oauthIssuer
      ? { oauth: { issuer: oauthIssuer, host: oauthListen.host, port: oauthListen.port } }
      : {}),
    ...(sso
      ? {
          accessTokens: {
            issuer: sso.issuer,
            audience: sso.audience,
            jwks: await providerKeys(sso),
            ...(sso.userinfo ? { userinfo: sso.userinfo } : {}),
          },
        }
      : {}),
    relay: flags.relay,
    log,
  });
  registerCleanup({ name: "the gateway", stop: () => gateway.close(), lastResort: () => {} });
  setSignalExitCode(() => 0);
  log(
    `gateway: listening on ${gateway.host}:${gateway.port} for the database "${gateway.database}"` +
      `${tls ? " (TLS offered)" : ""}${sso ? `, access tokens from ${sso.issuer}` : ""}`,
  );
  log(
    gateway.relay.kind === "native"
      ? "gateway: relaying with the native relay"
      : `gateway: relaying in JavaScript (${gateway.relay.why})`,
  );
  if (gateway.oauthPort) {
    log(`gateway: OAuth sign-in on ${gateway.host}:${gateway.oauthPort}, issuer ${oauthIssuer}`);
    if (flags.oidcUserinfo && oauthIssuer === sso?.issuer) {
      log(
        "gateway: opaque tokens are checked at the provider's userinfo endpoint, which does not say " +
          "for which application a token was issued: use it with a provider of your own (docs/browser-sign-in.md)",
      );
    }
  }
  if (flags.pgwebToken) {
    const backend = await startConnectBackend({
      gateway,
      token: flags.pgwebToken,
      host: pgwebListen?.host as string,
      port: pgwebListen?.port as number,
      ...(publicAddress ? { publicHost: publicAddress.host, publicPort: publicAddress.port } : {}),
      log,
    });
    registerCleanup({
      name: "pgweb's connect backend",
      stop: () => backend.close(),
      lastResort: () => {},
    });
    log(`pgweb connect backend: ${backend.url}`);
  }
}
