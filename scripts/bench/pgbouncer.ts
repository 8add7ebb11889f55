// The anchor for the gateway's numbers: PgBouncer in session mode, Debian's
// package, started here on the same cluster. Both are a process between a
// client and PostgreSQL that relays bytes after a login; PgBouncer is what
// people put there today, so the gateway is measured against it (not against
// a direct connection, which no relay can reach: on this machine PgBouncer
// itself does about half of direct for `select 1`).
//
// The load comes from pgbench (C, libpq), so that the load generator costs
// the same whichever is measured and little of the two cores.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomPassword } from "../../src/gateway/scram.js";
import { freePort } from "../../src/net.js";
import type { Cluster } from "../../src/postgres/cluster.js";
import { unprivilegedUser } from "../../src/postgres/users.js";

/** Where a program is: the first directory that has it, else undefined. */
function findProgram(name: string, dirs: string[]): string | undefined {
  for (const dir of [...dirs, ...(process.env.PATH ?? "").split(":"), "/usr/sbin"]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export function findPgbench(cluster: Cluster): string | undefined {
  return findProgram("pgbench", [cluster.bin.binDir]);
}

export interface PgBouncer {
  port: number;
  pid: number;
  /** Connection settings for pgbench (PGPASSWORD included). */
  env: Record<string, string>;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * PgBouncer in session mode in front of `database`, as the cluster's
 * superuser, on a free port with a random password; undefined (with the
 * reason logged) when the package is not installed.
 */
export async function startPgBouncer(
  cluster: Cluster,
  database: string,
  log: (line: string) => void,
): Promise<PgBouncer | undefined> {
  const binary = findProgram("pgbouncer", []);
  if (!binary) {
    log(
      "  PgBouncer is not installed (apt-get install pgbouncer; .ci/run installs it): " +
        "the gateway's anchor is MISSING from this run",
    );
    return undefined;
  }
  const user = unprivilegedUser();
  const dir = mkdtempSync(join(cluster.dir, "pgbouncer-"));
  if (user.uid !== undefined) execFileSync("chown", [`${user.uid}:${user.gid}`, dir]);
  const port = await freePort();
  const password = randomPassword();
  const superuser = cluster.superuser;
  writeFileSync(join(dir, "users.txt"), `"${superuser}" "${password}"\n`);
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `${database} = host=${cluster.socketDir} port=${cluster.connectionConfig().port} dbname=${database} user=${superuser}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = scram-sha-256",
      `auth_file = ${join(dir, "users.txt")}`,
      "pool_mode = session",
      "max_client_conn = 200",
      "default_pool_size = 64",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "log_connections = 0",
      "log_disconnections = 0",
      "ignore_startup_parameters = extra_float_digits,options",
      "",
    ].join("\n"),
  );
  if (user.uid !== undefined) {
    execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, dir]);
  }
  const child: ChildProcess = spawn(binary, [join(dir, "pgbouncer.ini")], {
    stdio: ["ignore", "ignore", "pipe"],
    cwd: "/",
    ...(user.uid !== undefined ? { uid: user.uid, gid: user.gid } : {}),
  });
  let output = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const stop = () =>
    new Promise<void>((resolve) => {
      const done = () => {
        rmSync(dir, { recursive: true, force: true });
        resolve();
      };
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once("exit", done);
      child.kill("SIGINT");
    });
  for (let waited = 0; !(await portOpen(port)); waited += 20) {
    if (child.exitCode !== null || waited > 10_000) {
      const logged = existsSync(join(dir, "pgbouncer.log"))
        ? readFileSync(join(dir, "pgbouncer.log"), "utf8")
        : "";
      await stop();
      throw new Error(`PgBouncer did not start: ${output}${logged}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    pid: child.pid as number,
    env: { PGHOST: "127.0.0.1", PGPORT: String(port), PGUSER: superuser, PGPASSWORD: password },
    stop,
  };
}

let clockTicks: number | undefined;

/** User plus system CPU time of a process so far, in microseconds (Linux /proc). */
export function cpuMicroseconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  clockTicks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));
  return (ticks / clockTicks) * 1e6;
}

export interface PgbenchRun {
  tps: number;
  transactions: number;
  /** Median latency of one transaction, when asked for (per-transaction log). */
  p50_us?: number;
}

/**
 * pgbench with one statement per transaction on `clients` connections for
 * `seconds`, in the simple or the extended protocol with prepared statements.
 */
export function pgbench(
  binary: string,
  env: Record<string, string>,
  options: {
    sql: string;
    clients: number;
    seconds: number;
    protocol: "simple" | "prepared";
    database: string;
    latencies?: boolean;
  },
): PgbenchRun {
  const dir = mkdtempSync(join(tmpdir(), "pgbench-"));
  try {
    writeFileSync(join(dir, "script.sql"), `${options.sql};\n`);
    const output = execFileSync(
      binary,
      [
        "-n",
        "-f",
        join(dir, "script.sql"),
        "-c",
        String(options.clients),
        "-j",
        String(Math.min(2, options.clients)),
        "-T",
        String(options.seconds),
        "-M",
        options.protocol,
        ...(options.latencies ? ["-l", "--log-prefix", join(dir, "tx")] : []),
        options.database,
      ],
      { encoding: "utf8", env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(output)?.[1]);
    const transactions = Number(
      /number of transactions actually processed: (\d+)/.exec(output)?.[1],
    );
    if (!Number.isFinite(tps) || !Number.isFinite(transactions)) {
      throw new Error(`pgbench printed no rate:\n${output}`);
    }
    const run: PgbenchRun = { tps, transactions };
    if (options.latencies) {
      const latencies = readdirSync(dir)
        .filter((f) => f.startsWith("tx"))
        .flatMap((f) =>
          readFileSync(join(dir, f), "utf8")
            .split("\n")
            .filter(Boolean)
            .map((line) => Number(line.split(" ")[2])),
        )
        .sort((a, b) => a - b);
      run.p50_us = latencies[Math.floor(latencies.length / 2)];
    }
    return run;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
