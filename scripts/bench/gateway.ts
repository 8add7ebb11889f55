// The database doors in numbers (part of npm run bench): how long a client
// takes to connect through the gateway with a session token, and what the
// relay costs after login, against PgBouncer in session mode on the same
// cluster (./pgbouncer.ts): throughput of select 1 and of 100 rows, CPU per
// transaction, and the latency each adds to one statement.

import { spawn } from "node:child_process";
import { join } from "node:path";
import pg from "pg";
import { randomPassword, scramVerifier } from "../../src/gateway/scram.js";
import { freePort } from "../../src/net.js";
import type { LocalDeployment } from "../../src/serving/deploy.js";
import {
  cpuMicroseconds,
  findPgbench,
  type PgBouncer,
  pgbench,
  startPgBouncer,
} from "./pgbouncer.js";
import { median, percentile } from "./stats.js";

/** One shape of load through the gateway, PgBouncer and directly, over interleaved rounds. */
export interface LoadComparison {
  sql: string;
  clients: number;
  protocol: "simple" | "prepared";
  gateway_tps: number;
  pgbouncer_tps: number;
  direct_tps: number;
  /** Median of per-round ratios, with their range. */
  gateway_over_pgbouncer: number;
  gateway_over_pgbouncer_min: number;
  gateway_over_pgbouncer_max: number;
  gateway_over_direct: number;
}

export interface GatewayBench {
  connect_samples: number;
  connect_p50_ms: number;
  connect_p99_ms: number;
  direct_connect_p50_ms: number;
  /** Whether PgBouncer was there to compare with (the fields below are null without it). */
  pgbouncer: boolean;
  loads: LoadComparison[];
  /** The worst of the select 1 shapes (8 and 32 connections, simple and prepared). */
  gateway_over_pgbouncer_select1: number | null;
  /** 100 rows of result, 8 connections, simple protocol. */
  gateway_over_pgbouncer_rows100: number | null;
  /** Process CPU (user + system) per select 1 transaction at 8 connections, simple protocol. */
  gateway_cpu_us_per_tx: number;
  pgbouncer_cpu_us_per_tx: number | null;
  /** p50 of one select 1 at 1 connection, over a direct connection's. */
  gateway_added_p50_us: number;
  pgbouncer_added_p50_us: number | null;
  /** select 1, 8 connections, simple protocol: for reference (no relay can reach 1). */
  gateway_over_direct: number;
}

const ROWS100 = "select g from generate_series(1, 100) g";

async function timeConnects(config: pg.ClientConfig, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const client = new pg.Client(config);
    await client.connect();
    times.push(performance.now() - started);
    await client.end();
  }
  return times.sort((a, b) => a - b);
}

/**
 * The gateway as it runs in production: a process of its own (the
 * `postgrest-sessions gateway` command), not inside the load generator's
 * event loop as deploy-local's is.
 */
async function startGatewayProcess(deployment: LocalDeployment): Promise<{
  port: number;
  pid: number;
  stop: () => Promise<void>;
}> {
  const admin = await deployment.connect();
  const password = randomPassword();
  try {
    await admin.query(
      `alter role gateway password ${admin.escapeLiteral(await scramVerifier(password))}`,
    );
  } finally {
    await admin.end();
  }
  const config = deployment.cluster.connectionConfig(deployment.database);
  const url =
    `postgresql://gateway:${password}@/${deployment.database}` +
    `?host=${encodeURIComponent(String(config.host))}&port=${config.port}`;
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      join(import.meta.dirname, "..", "..", "dist", "cli.js"),
      "gateway",
      "--listen",
      `127.0.0.1:${port}`,
      // One user on many connections from one address is what this
      // measures; the limits that refuse that are tested, not benchmarked.
      "--max-connections-per-user",
      "64",
      "--max-connections-per-address",
      "64",
      "--max-pending-per-address",
      "64",
    ],
    { env: { ...process.env, GATEWAY_DATABASE_URL: url }, stdio: ["ignore", "ignore", "pipe"] },
  );
  let output = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("listening on")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`the gateway exited (${code}): ${output}`)));
  });
  return {
    port,
    pid: child.pid as number,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

export async function measureGateway(
  deployment: LocalDeployment,
  user: { email: string; token: string },
  options: { clients: number; seconds: number; rounds: number; log: (line: string) => void },
): Promise<GatewayBench> {
  const pgbenchBinary = findPgbench(deployment.cluster);
  if (!pgbenchBinary) {
    throw new Error(
      `the gateway benchmark needs pgbench (PostgreSQL's, beside ${deployment.cluster.bin.binDir} or on PATH)`,
    );
  }
  const gatewayProcess = await startGatewayProcess(deployment);
  const bouncer = await startPgBouncer(deployment.cluster, deployment.database, options.log);
  try {
    return await measure(deployment, gatewayProcess, bouncer, pgbenchBinary, user, options);
  } finally {
    await bouncer?.stop();
    await gatewayProcess.stop();
  }
}

type Target = "gateway" | "pgbouncer" | "direct";

async function measure(
  deployment: LocalDeployment,
  gateway: { port: number; pid: number },
  bouncer: PgBouncer | undefined,
  pgbenchBinary: string,
  user: { email: string; token: string },
  options: { clients: number; seconds: number; rounds: number; log: (line: string) => void },
): Promise<GatewayBench> {
  const viaGateway: pg.ClientConfig = {
    host: "127.0.0.1",
    port: gateway.port,
    database: deployment.database,
    user: user.email,
    password: user.token,
  };
  const direct = deployment.cluster.connectionConfig(deployment.database);
  await timeConnects(viaGateway, 10); // warm-up
  const connects = await timeConnects(viaGateway, 200);
  const directConnects = await timeConnects(direct, 100);
  options.log(
    `  connect through the gateway with a session token: p50 ${percentile(connects, 0.5).toFixed(1)} ms, ` +
      `p99 ${percentile(connects, 0.99).toFixed(1)} ms (directly: p50 ${percentile(directConnects, 0.5).toFixed(1)} ms)`,
  );

  // A door role may hold 20 connections (doors.sql.md); 32 at once is what
  // this measures, so the benchmark's own role gets more.
  const admin = await deployment.connect();
  try {
    await admin.query(`do $$ declare r name; begin
      for r in select d.role_name from auth.door_roles d join auth.users u using (user_id)
                where u.email = ${admin.escapeLiteral(user.email)} loop
        execute format('alter role %I connection limit 64', r);
      end loop; end $$`);
  } finally {
    await admin.end();
  }

  const envs: Partial<Record<Target, Record<string, string>>> = {
    gateway: {
      PGHOST: "127.0.0.1",
      PGPORT: String(gateway.port),
      PGUSER: user.email,
      PGPASSWORD: user.token,
    },
    direct: {
      PGHOST: String(direct.host),
      PGPORT: String(direct.port),
      PGUSER: String(direct.user),
    },
    ...(bouncer ? { pgbouncer: bouncer.env } : {}),
  };
  const targets = Object.keys(envs) as Target[];
  const pids: Partial<Record<Target, number>> = {
    gateway: gateway.pid,
    ...(bouncer ? { pgbouncer: bouncer.pid } : {}),
  };
  const run = (target: Target, shape: Shape, seconds: number, latencies = false) => {
    const before = pids[target] ? cpuMicroseconds(pids[target] as number) : 0;
    const result = pgbench(pgbenchBinary, envs[target] as Record<string, string>, {
      ...shape,
      seconds,
      database: deployment.database,
      latencies,
    });
    const cpu = pids[target] ? cpuMicroseconds(pids[target] as number) - before : 0;
    return { ...result, cpuPerTx: cpu / Math.max(1, result.transactions) };
  };

  type Shape = { sql: string; clients: number; protocol: "simple" | "prepared" };
  const shapes: Shape[] = [
    { sql: "select 1", clients: 8, protocol: "simple" },
    { sql: "select 1", clients: 8, protocol: "prepared" },
    { sql: "select 1", clients: 32, protocol: "simple" },
    { sql: "select 1", clients: 32, protocol: "prepared" },
    { sql: ROWS100, clients: 8, protocol: "simple" },
  ];
  const loads: LoadComparison[] = [];
  const cpu: Record<Target, number[]> = { gateway: [], pgbouncer: [], direct: [] };
  for (const shape of shapes) {
    const rounds: Array<Record<Target, number>> = [];
    for (let round = 1; round <= options.rounds; round++) {
      const tps = {} as Record<Target, number>;
      // A different order every round: no target always follows the same one.
      for (const target of [...targets].sort(() => Math.random() - 0.5)) {
        // 32 logins through the gateway take a moment: a run shorter than
        // 3 s could end before its first transaction.
        const result = run(target, shape, Math.max(3, options.seconds));
        tps[target] = result.tps;
        if (shape === shapes[0]) cpu[target].push(result.cpuPerTx);
      }
      rounds.push(tps);
      options.log(
        `  round ${round}: ${shape.sql === ROWS100 ? "100 rows" : shape.sql}, ${shape.clients} connections, ${shape.protocol}: ` +
          targets.map((t) => `${t} ${tps[t].toFixed(0)}/s`).join(", "),
      );
    }
    const ratios = rounds.map((r) => r.gateway / (r.pgbouncer ?? Number.NaN));
    loads.push({
      ...shape,
      gateway_tps: median(rounds.map((r) => r.gateway)),
      pgbouncer_tps: bouncer ? median(rounds.map((r) => r.pgbouncer)) : Number.NaN,
      direct_tps: median(rounds.map((r) => r.direct)),
      gateway_over_pgbouncer: median(ratios),
      gateway_over_pgbouncer_min: Math.min(...ratios),
      gateway_over_pgbouncer_max: Math.max(...ratios),
      gateway_over_direct: median(rounds.map((r) => r.gateway / r.direct)),
    });
  }
  // One connection, one statement at a time: what the relay adds to each.
  const p50: Record<Target, number[]> = { gateway: [], pgbouncer: [], direct: [] };
  for (let round = 1; round <= options.rounds; round++) {
    for (const target of [...targets].sort(() => Math.random() - 0.5)) {
      const shape: Shape = { sql: "select 1", clients: 1, protocol: "simple" };
      p50[target].push(run(target, shape, 2, true).p50_us as number);
    }
  }
  const added = (target: Target) => median(p50[target]) - median(p50.direct);
  options.log(
    `  one connection, select 1: p50 gateway ${median(p50.gateway).toFixed(0)} us, ` +
      `${bouncer ? `PgBouncer ${median(p50.pgbouncer).toFixed(0)} us, ` : ""}directly ${median(p50.direct).toFixed(0)} us`,
  );
  const select1 = loads.filter((l) => l.sql === "select 1");
  return {
    connect_samples: connects.length,
    connect_p50_ms: percentile(connects, 0.5),
    connect_p99_ms: percentile(connects, 0.99),
    direct_connect_p50_ms: percentile(directConnects, 0.5),
    pgbouncer: bouncer !== undefined,
    loads,
    gateway_over_pgbouncer_select1: bouncer
      ? Math.min(...select1.map((l) => l.gateway_over_pgbouncer))
      : null,
    gateway_over_pgbouncer_rows100: bouncer
      ? (loads.find((l) => l.sql === ROWS100)?.gateway_over_pgbouncer ?? null)
      : null,
    gateway_cpu_us_per_tx: median(cpu.gateway),
    pgbouncer_cpu_us_per_tx: bouncer ? median(cpu.pgbouncer) : null,
    gateway_added_p50_us: added("gateway"),
    pgbouncer_added_p50_us: bouncer ? added("pgbouncer") : null,
    gateway_over_direct: loads[0]?.gateway_over_direct ?? Number.NaN,
  };
}
