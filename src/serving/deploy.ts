// deploy-local as a library: a throwaway cluster, the document loaded into a
// fresh database, its pgTAP suite run, and PostgREST serving it.

import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import pg from "pg";
import { registerCleanup } from "../cleanup.js";
import { loadSql, type SqlSource } from "../document/loader.js";
import type { CompiledDocument } from "../document/md2sql.js";
import { describeFailures, hasPgTap, type PgTapRun, runPgTap } from "../document/pgtap.js";
import {
  compileProject,
  describeDocuments,
  type ProjectDocument,
  projectDocuments,
  readProjectConfig,
} from "../document/project.js";
import { type ConnectBackend, startConnectBackend } from "../gateway/pgweb.js";
import { randomPassword, scramVerifier } from "../gateway/scram.js";
import { type AccessTokenOptions, type Gateway, startGateway } from "../gateway/server.js";
import { upstreamAddress } from "../gateway/upstream.js";
import { type MailCatcher, startMailCatcher } from "../mail/catcher.js";
import { type Mailer, startMailer } from "../mail/mailer.js";
import { freePort } from "../net.js";
import { type Cluster, startCluster } from "../postgres/cluster.js";
import { withClient } from "../postgres/db.js";
import { pgTapInstallHint } from "../postgres/pgbin.js";
import {
  type IdentityMode,
  identitySettings,
  type PostgrestProcess,
  startPostgrest,
} from "./postgrest.js";
import { type FrontProxy, startFrontProxy } from "./proxy.js";
import { providerKeys, type SsoOptions, ssoPostgrestEnv, ssoSessionSettings } from "./sso.js";
import { exchangeKey, tokenExchange, withExchangeKey } from "./token-exchange.js";
import { userinfoChecker } from "./userinfo.js";

export interface LocalDeploymentOptions {
  /** One literate document instead of the project's list (package.json). */
  file?: string;
  /** The project's directory, with its package.json (default: the working directory). */
  cwd?: string;
  /** Its migrations, applied after it (default: migrations/ beside the document). */
  migrationsDir?: string;
  /** API port on 127.0.0.1 (default 3000). */
  port?: number;
  /** Load and run ```sql tests blocks when pgTAP is available (default true). */
  tests?: boolean;
  /** Load ```sql fixtures blocks (default true). */
  fixtures?: boolean;
  /** PostgreSQL bin directory (default: discovered, see pgbin.ts). */
  pgBin?: string;
  /** Also expose PostgreSQL on this 127.0.0.1 port. */
  pgPort?: number;
  /** Where PostgreSQL comes from: local binaries (default) or a Docker container. */
  postgres?: "local" | "docker";
  /** Use this existing server (postgres:// URL) instead of a throwaway cluster. */
  existingServer?: string;
  /** How requests are identified (default pre-request; see sessions.sql.md). */
  identity?: IdentityMode;
  /** Accept an identity provider's tokens at /rpc/login_with_token. */
  sso?: SsoOptions;
  /** Name of the application database (default "app"). */
  database?: string;
  /** Further PGRST_* settings for PostgREST. */
  postgrestEnv?: Record<string, string>;
  /**
   * The database doors (default true, when the documents have them and the
   * cluster is a throwaway one): the wire-protocol gateway and pgweb's
   * connect backend, on these ports (default: free ones).
   */
  gateway?: boolean;
  gatewayPort?: number;
  pgwebBackendPort?: number;
  /**
   * Mail (default true, when the documents have email.sql.md and the cluster
   * is a throwaway one): a local SMTP catcher, the mailer delivering to it,
   * and the caught messages at /mail/.
   */
  mail?: boolean;
  /**
   * Streaming replicas (hot standbys, by pg_basebackup) of the throwaway
   * cluster, each with a PostgREST of its own; the front door sends reads
   * to them (default 0).
   */
  replicas?: number;
  /** Progress lines; default: none. */
  log?: (line: string) => void;
}

export interface LocalDeployment {
  readonly cluster: Cluster;
  /** PostgREST itself, on an internal port (benchmarks talk to it directly). */
  readonly postgrest: PostgrestProcess;
  /** The front door on the requested port: the API plus the demo page. */
  readonly proxy: FrontProxy;
  readonly database: string;
  /** What was loaded, in order. */
  readonly documents: ProjectDocument[];
  /** The API's public URL (through the front door). */
  readonly url: string;
  /** The project's frontend, when it has one (package.json "frontend"). */
  readonly demoUrl: string | undefined;
  /**
   * The pgTAP result (undefined when tests were not loaded). The suite runs
   * while PostgREST starts and after it is serving, so "ready" does not wait
   * for it.
   */
  readonly pgtap: Promise<PgTapRun | undefined>;
  /** Why tests were not loaded, when they were asked for and were not. */
  readonly testsSkippedBecause: string | undefined;
  /** The database doors, when started (see LocalDeploymentOptions.gateway). */
  readonly doors: LocalDoors | undefined;
  /** Mail, when started (see LocalDeploymentOptions.mail). */
  readonly mail: LocalMail | undefined;
  /** The read replicas, each with its PostgREST (see LocalDeploymentOptions.replicas). */
  readonly replicas: LocalReplica[];
  /** A new superuser connection to the application database; the caller ends it. */
  connect(): Promise<pg.Client>;
  stop(): Promise<void>;
}

export interface LocalDoors {
  gateway: Gateway;
  pgweb: ConnectBackend;
  /** The connect token pgweb must be started with. */
  pgwebToken: string;
  /** How the gateway checks credentials (as the gateway role): for starting more gateways. */
  control: pg.ClientConfig;
  /** A psql command for this user through the gateway. */
  psqlCommand(user: string): string;
  /**
   * A psql 18 command that signs in through the browser (the OAuth door and
   * the device flow, device.sql.md), when the project has it.
   */
  browserPsqlCommand?: string;
}

export interface LocalReplica {
  /** A hot standby streaming from the deployment's cluster. */
  cluster: Cluster;
  /** Its PostgREST, serving reads. */
  postgrest: PostgrestProcess;
}

export interface LocalMail {
  /** The local SMTP server that keeps every message. */
  catcher: MailCatcher;
  mailer: Mailer;
  /** The page that lists the caught messages. */
  pageUrl: string;
  /** The mailer (the message in hand finished), then the SMTP server. */
  stop(): Promise<void>;
}

export const DEFAULT_DATABASE = "app";

/** A login role's password for this run: the verifier only reaches the server, no statement or log holds the password. */
async function setRolePassword(admin: pg.Client, role: string, password: string): Promise<void> {
  const verifier = await scramVerifier(password);
  await admin.query(
    `alter role ${admin.escapeIdentifier(role)} password ${admin.escapeLiteral(verifier)}`,
  );
}

/**
 * Starts mail for a deployment's database, if it has the email document:
 * links lead to `linkBase`, the mailer (as the mailer role) delivers to a
 * local catcher, and the front proxy shows what was caught at /mail/.
 */
export async function startLocalMail(
  cluster: Cluster,
  database: string,
  proxy: FrontProxy,
  linkBase: string,
  log: (line: string) => void,
): Promise<LocalMail | undefined> {
  const password = randomPassword();
  const present = await withClient(cluster.connectionConfig(database), async (admin) => {
    const { rows } = await admin.query("select to_regclass('auth.outbox') is not null as present");
    if (!rows[0]?.present) return false;
    await setRolePassword(admin, "mailer", password);
    await admin.query("update auth.settings set link_base_url = $1", [linkBase]);
    return true;
  });
  if (!present) return undefined;
  const catcher = await startMailCatcher();
  let mailer: Mailer;
  try {
    mailer = await startMailer({
      connection: { ...cluster.connectionConfig(database), user: "mailer", password },
      smtpUrl: catcher.url,
      from: "no-reply@localhost",
      log,
    });
  } catch (error) {
    await catcher.close();
    throw error;
  }
  proxy.addPages(catcher.serve);
  // Before the database goes, on Ctrl-C too: cleanup runs newest first.
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      unregister();
      await mailer.stop();
      await catcher.close();
    })();
    return stopping;
  };
  const unregister = registerCleanup({ name: "the mailer", stop, lastResort: () => {} });
  return { catcher, mailer, pageUrl: `${proxy.url}/mail/`, stop };
}

/** Starts the gateway and pgweb's backend for a deployment's database, if it has doors. */
export async function startDoors(
  cluster: Cluster,
  database: string,
  options: {
    gatewayPort?: number;
    pgwebBackendPort?: number;
    accessTokens?: AccessTokenOptions;
    /** The front door's URL: the issuer of the device flow, when the project has it. */
    issuer?: string;
    log: (line: string) => void;
  },
): Promise<LocalDoors | undefined> {
  const password = randomPassword();
  const found = await withClient(cluster.connectionConfig(database), async (admin) => {
    const { rows } = await admin.query<{ doors: boolean; device: boolean }>(
      `select to_regprocedure('auth.door_open(text, text, text, text, text, text)') is not null as doors,
              to_regprocedure('auth.door_open_device(text, text, text, text, text)') is not null as device`,
    );
    if (!rows[0]?.doors) return undefined;
    await setRolePassword(admin, "gateway", password);
    const device = Boolean(rows[0].device && options.issuer);
    if (device) {
      await admin.query("update auth.settings set device_issuer = $1", [options.issuer]);
    }
    return { device };
  });
  if (!found) return undefined;
  const config = cluster.connectionConfig(database);
  const host = String(config.host ?? "127.0.0.1");
  const port = Number(config.port ?? 5432);
  const control = { ...config, user: "gateway", password };
  const gateway = await startGateway({
    control,
    upstream: upstreamAddress(host, port, database),
    ...(options.gatewayPort ? { port: options.gatewayPort } : {}),
    ...(options.accessTokens ? { accessTokens: options.accessTokens } : {}),
    ...(found.device ? { oauth: { issuer: options.issuer as string } } : {}),
    log: options.log,
  });
  const pgwebToken = randomBytes(24).toString("base64url");
  let pgweb: ConnectBackend;
  try {
    pgweb = await startConnectBackend({
      gateway,
      token: pgwebToken,
      ...(options.pgwebBackendPort ? { port: options.pgwebBackendPort } : {}),
      log: options.log,
    });
  } catch (error) {
    await gateway.close();
    throw error;
  }
  return {
    gateway,
    pgweb,
    pgwebToken,
    control,
    psqlCommand: (user) =>
      `psql "host=${gateway.host} port=${gateway.port} dbname=${database} user=${user}"`,
    // http:// issuers are for development only: libpq wants PGOAUTHDEBUG=UNSAFE for them.
    ...(gateway.oauthPort
      ? {
          browserPsqlCommand:
            `${options.issuer?.startsWith("http://") ? "PGOAUTHDEBUG=UNSAFE " : ""}psql ` +
            `"host=${gateway.host} port=${gateway.oauthPort} dbname=${database} ` +
            `oauth_issuer=${options.issuer} oauth_client_id=psql"`,
        }
      : {}),
  };
}

/**
 * A streaming replica of `primary` (pg_basebackup, then hot standby) with a
 * PostgREST of its own for reads. PostgreSQL refuses LISTEN on a standby,
 * so that PostgREST does not listen for schema reloads (restart it, or send
 * it SIGUSR1, after a migration).
 */
export async function startReplica(
  primary: Cluster,
  database: string,
  publicUrl: string,
  options: Pick<Parameters<typeof startPostgrest>[0], "anonRole" | "preRequest" | "extraEnv"> & {
    log: (line: string) => void;
  },
): Promise<LocalReplica> {
  const started = performance.now();
  const standby = await startCluster({ standbyOf: primary, log: options.log });
  try {
    const postgrest = await startPostgrest({
      dbUri: standby.uri("authenticator", database),
      port: await freePort(),
      publicUrl,
      logFile: `${standby.dir}/postgrest.log`,
      ...(options.anonRole !== undefined ? { anonRole: options.anonRole } : {}),
      ...(options.preRequest !== undefined ? { preRequest: options.preRequest } : {}),
      extraEnv: { ...options.extraEnv, PGRST_DB_CHANNEL_ENABLED: "false" },
    });
    options.log(
      `replica ready in ${elapsed(started)}: ${standby.dir}, PostgREST on port ${postgrest.port}`,
    );
    return { cluster: standby, postgrest };
  } catch (error) {
    await standby.stop();
    throw error;
  }
}

/**
 * Session settings (columns of auth.settings) that make the app usable over
 * plain http on localhost. The document's own defaults are the production
 * ones (Secure cookies).
 */
export const LOCAL_SESSION_SETTINGS: Record<string, string> = {
  cookie_secure: "false",
  // The database runs on this machine: let password hashing take at most
  // half its cores, so a flood of logins leaves the rest to everyone else.
  password_slots: String(Math.max(1, Math.floor(availableParallelism() / 2))),
};

function elapsed(since: number): string {
  return `${Math.round(performance.now() - since)} ms`;
}

/** Creates `database`, empty or as a copy of `template` (which nobody may be connected to). */
export async function createDatabase(
  cluster: Cluster,
  database: string,
  template?: string,
): Promise<void> {
  await withClient(cluster.connectionConfig(), (admin) =>
    admin.query(
      `create database ${admin.escapeIdentifier(database)}` +
        (template ? ` template ${admin.escapeIdentifier(template)}` : ""),
    ),
  );
}

/**
 * Sets columns of the session module's settings row (auth.settings), when
 * the documents define it; other documents are left alone.
 */
export async function applySessionSettings(
  cluster: Cluster,
  database: string,
  settings: Record<string, string>,
): Promise<void> {
  const entries = Object.entries(settings);
  if (entries.length === 0) return;
  await withClient(cluster.connectionConfig(database), async (client) => {
    const present = await client.query(
      "select to_regclass('auth.settings') is not null as present",
    );
    if (!present.rows[0]?.present) return;
    const { rows } = await client.query<{ name: string }>(
      `select n.name from unnest($1::text[]) n(name)
        where not exists (select from pg_attribute a
                           where a.attrelid = 'auth.settings'::regclass and a.attname = n.name)`,
      [entries.map(([name]) => name)],
    );
    if (rows.length > 0) {
      const missing = rows.map((r) => r.name);
      throw new Error(
        `auth.settings has no ${missing.join(", ")}` +
          (missing.some((name) => name.startsWith("oidc_"))
            ? ": single sign-on needs sso.sql.md in the project's documents (package.json)"
            : ""),
      );
    }
    const assignments = entries.map(([name], i) => `${client.escapeIdentifier(name)} = $${i + 1}`);
    await client.query(
      `update auth.settings set ${assignments.join(", ")}`,
      entries.map(([, value]) => value),
    );
  });
}

/** Loads compiled documents, in order, into `database` in one transaction. */
export async function loadDocuments(
  cluster: Cluster,
  database: string,
  docs: CompiledDocument[],
): Promise<void> {
  await withClient(cluster.connectionConfig(database), (client) => loadSql(client, ...docs));
}

/** Runs the pgTAP suite of `database` on a connection of its own. */
export async function runDatabaseTests(
  cluster: Cluster,
  database: string,
  sources?: SqlSource[],
): Promise<PgTapRun> {
  return withClient(cluster.connectionConfig(database), (client) =>
    runPgTap(client, sources ? { sources } : {}),
  );
}

/** The PostgreSQL a deployment runs on: a throwaway cluster, an existing server or a container. */
async function startPostgres(
  options: LocalDeploymentOptions,
  log: (line: string) => void,
): Promise<Cluster> {
  if (options.existingServer) {
    return (await import("../postgres/existing.js")).useExistingServer(options.existingServer);
  }
  if (options.postgres === "docker") {
    return (await import("../postgres/container.js")).startContainerCluster({ log });
  }
  return startCluster({
    log,
    ...(options.pgBin ? { pgBin: options.pgBin } : {}),
    ...(options.pgPort ? { tcpPort: options.pgPort } : {}),
  });
}

/**
 * The application's database, made and loaded: the documents with their
 * test blocks when pgTAP is there to run them (else without, saying why),
 * then the local session settings. Returns what was loaded.
 */
async function createAndLoad(
  cluster: Cluster,
  database: string,
  documents: ProjectDocument[],
  compiled: CompiledDocument[],
  options: { wantTests: boolean; includeFixtures: boolean; existingServer: boolean },
  sessionSettings: Record<string, string>,
  log: (line: string) => void,
): Promise<{ docs: CompiledDocument[]; testsSkippedBecause: string | undefined }> {
  cluster.noteDatabase?.(database);
  await createDatabase(cluster, database);
  if (options.existingServer) {
    // As a throwaway cluster's template has it (see closePublicSchema):
    // PostgreSQL 13 and 14 let every role create objects in public.
    await withClient(cluster.connectionConfig(database), (admin) =>
      admin.query("revoke create on schema public from public"),
    );
  }
  let docs = compiled;
  let testsSkippedBecause: string | undefined;
  if (options.wantTests && !(await withClient(cluster.connectionConfig(database), hasPgTap))) {
    testsSkippedBecause =
      `pgTAP is not installed for PostgreSQL ${cluster.bin.major}, so the test blocks were not loaded ` +
      `(install it with: ${pgTapInstallHint(cluster.bin)})`;
    log(testsSkippedBecause);
    docs = await compileProject(documents, {
      includeFixtures: options.includeFixtures,
      includeTests: false,
    });
  }
  const loadStarted = performance.now();
  await loadDocuments(cluster, database, docs);
  await applySessionSettings(cluster, database, sessionSettings);
  await cluster.prepareAuthenticator?.(database);
  log(`loaded ${describeDocuments(documents)} in ${elapsed(loadStarted)}`);
  return { docs, testsSkippedBecause };
}

/**
 * The pgTAP suite, run while PostgREST starts and after it serves ("ready"
 * does not wait for it), reported through the promise.
 */
function startDatabaseTests(
  cluster: Cluster,
  database: string,
  docs: CompiledDocument[],
  log: (line: string) => void,
): Promise<PgTapRun | undefined> {
  if (!docs.some((doc) => doc.blocks.some((block) => block.tag === "tests"))) {
    return Promise.resolve(undefined);
  }
  const started = performance.now();
  const pgtap = runDatabaseTests(cluster, database, docs).then((run) => {
    log(`pgTAP: ${run.passed} passed, ${run.failed} failed (${elapsed(started)})`);
    if (!run.ok) for (const line of describeFailures(run)) log(line);
    return run;
  });
  // Reported through the promise; never an unhandled rejection meanwhile.
  pgtap.catch(() => {});
  return pgtap;
}

export async function deployLocal(options: LocalDeploymentOptions = {}): Promise<LocalDeployment> {
  const log = options.log ?? (() => {});
  const replicaCount = options.replicas ?? 0;
  if (replicaCount > 0 && (options.existingServer || options.postgres === "docker")) {
    throw new Error(
      "read replicas need a throwaway cluster of local binaries (not --existing-server or --postgres docker)",
    );
  }
  const documents = projectDocuments({
    ...(options.file ? { file: options.file } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.migrationsDir ? { migrationsDir: options.migrationsDir } : {}),
  });
  const database = options.database ?? DEFAULT_DATABASE;
  const wantTests = options.tests ?? true;
  const includeFixtures = options.fixtures ?? true;
  const started = performance.now();

  // Compile first: a broken document fails before anything is started.
  const compiled = await compileProject(documents, { includeFixtures, includeTests: wantTests });
  // The provider's keys before anything starts: an unreachable issuer is an
  // error of its own, not a half-started deployment.
  const providerJwks = options.sso ? await providerKeys(options.sso) : undefined;
  // Opaque provider tokens: the front door's token exchange signs for what
  // the provider's userinfo said, with a key made now that PostgREST trusts
  // beside the provider's (token-exchange.ts).
  const exchange = options.sso?.userinfo !== undefined ? await exchangeKey() : undefined;
  const ssoEnv =
    options.sso && providerJwks
      ? ssoPostgrestEnv(
          exchange ? withExchangeKey(providerJwks, exchange) : providerJwks,
          options.sso.audience,
        )
      : {};
  const sessionSettings = {
    ...LOCAL_SESSION_SETTINGS,
    ...(options.sso ? ssoSessionSettings(options.sso) : {}),
  };
  // The front door first: a port in use fails before anything is started.
  const frontend = options.file ? undefined : readProjectConfig(options.cwd).frontend;
  const proxy = await startFrontProxy(options.port ?? 3000, undefined, frontend);
  if (exchange && options.sso?.userinfo) {
    const { issuer, audience, userinfo } = options.sso;
    proxy.setLoginExchange(
      tokenExchange(userinfoChecker({ issuer, audience, userinfo }), exchange, log),
    );
  }
  let cluster: Cluster;
  try {
    cluster = await startPostgres(options, log);
  } catch (error) {
    await proxy.close();
    throw error;
  }
  try {
    const { docs, testsSkippedBecause } = await createAndLoad(
      cluster,
      database,
      documents,
      compiled,
      { wantTests, includeFixtures, existingServer: options.existingServer !== undefined },
      sessionSettings,
      log,
    );
    const pgtap =
      wantTests && !testsSkippedBecause
        ? startDatabaseTests(cluster, database, docs, log)
        : Promise.resolve(undefined);
    const postgrestStarted = performance.now();
    const postgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      publicUrl: proxy.url,
      logFile: `${cluster.dir}/postgrest.log`,
      ...identitySettings(options.identity),
      extraEnv: { ...ssoEnv, ...options.postgrestEnv },
    });
    proxy.setTarget(postgrest.port);
    log(`PostgREST ready in ${elapsed(postgrestStarted)} (total ${elapsed(started)})`);
    let doors: LocalDoors | undefined;
    if ((options.gateway ?? true) && !options.existingServer) {
      try {
        doors = await startDoors(cluster, database, {
          ...(options.gatewayPort ? { gatewayPort: options.gatewayPort } : {}),
          ...(options.pgwebBackendPort ? { pgwebBackendPort: options.pgwebBackendPort } : {}),
          issuer: proxy.url,
          ...(options.sso && providerJwks
            ? {
                accessTokens: {
                  issuer: options.sso.issuer,
                  audience: options.sso.audience,
                  jwks: providerJwks,
                  ...(options.sso.userinfo ? { userinfo: options.sso.userinfo } : {}),
                },
              }
            : {}),
          log,
        });
      } catch (error) {
        await postgrest.stop();
        throw error;
      }
    }
    const replicas: LocalReplica[] = [];
    const stopReplicas = async () => {
      for (const replica of replicas.splice(0)) {
        try {
          await replica.postgrest.stop();
        } finally {
          await replica.cluster.stop();
        }
      }
    };
    let mail: LocalMail | undefined;
    try {
      for (let i = 0; i < replicaCount; i++) {
        replicas.push(
          await startReplica(cluster, database, proxy.url, {
            ...identitySettings(options.identity),
            extraEnv: { ...ssoEnv, ...options.postgrestEnv },
            log,
          }),
        );
      }
      proxy.setReadTargets(replicas.map((replica) => replica.postgrest.port));
      if ((options.mail ?? true) && !options.existingServer) {
        mail = await startLocalMail(
          cluster,
          database,
          proxy,
          proxy.demoUrl ?? `${proxy.url}/`,
          log,
        );
      }
    } catch (error) {
      await stopReplicas();
      await doors?.pgweb.close();
      await doors?.gateway.close();
      await postgrest.stop();
      throw error;
    }
    return {
      doors,
      mail,
      replicas,
      cluster,
      postgrest,
      proxy,
      database,
      documents,
      url: proxy.url,
      demoUrl: proxy.demoUrl,
      pgtap,
      testsSkippedBecause,
      connect: async () => {
        const client = new pg.Client(cluster.connectionConfig(database));
        client.on("error", () => {}); // the caller sees errors through its queries
        await client.connect();
        return client;
      },
      stop: async () => {
        await proxy.close();
        await mail?.stop();
        await doors?.pgweb.close();
        await doors?.gateway.close();
        await stopReplicas();
        await postgrest.stop();
        await cluster.stop();
      },
    };
  } catch (error) {
    await proxy.close();
    await cluster.stop();
    throw error;
  }
}
