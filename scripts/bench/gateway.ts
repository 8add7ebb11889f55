// The database doors in numbers (part of npm run bench): how long a client
// takes to connect through the gateway with a session token, and simple-query
// throughput through the gateway as a share of PostgreSQL reached directly,
// at the same concurrency.

import { spawn } from "node:child_process";
import { join } from "node:path";
import pg from "pg";
import { randomPassword, scramVerifier } from "../../src/gateway/scram.js";
import { freePort } from "../../src/net.js";
import type { LocalDeployment } from "../../src/serving/deploy.js";
import { percentile } from "./stats.js";

export interface GatewayBench {
  connect_samples: number;
  connect_p50_ms: number;
  connect_p99_ms: number;
  direct_connect_p50_ms: number;
  concurrency: number;
  gateway_qps: number;
  direct_qps: number;
  gateway_over_direct: number;
  rounds: Array<{ gateway_qps: number; direct_qps: number }>;
  /** The same for a query that keeps PostgreSQL busy for a while (sum over 20,000 rows). */
  heavier: { sql: string; gateway_qps: number; direct_qps: number; gateway_over_direct: number };
}

const HEAVIER = "select sum(g) from generate_series(1, 20000) g";

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

/** Queries per second of `select 1` (simple protocol) on `clients` connections for `seconds`. */
async function simpleQueryRate(
  config: pg.ClientConfig,
  clients: number,
  seconds: number,
  sql = "select 1",
) {
  const connections = await Promise.all(
    Array.from({ length: clients }, async () => {
      const client = new pg.Client(config);
      await client.connect();
      return client;
    }),
  );
  let done = 0;
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    connections.map(async (client) => {
      while (performance.now() < until) {
        await client.query(sql);
        done++;
      }
    }),
  );
  await Promise.all(connections.map((c) => c.end()));
  return done / seconds;
}

/**
 * The gateway as it runs in production: a process of its own (the
 * `postgrest-sessions gateway` command), not inside the load generator's
 * event loop as deploy-local's is.
 */
async function startGatewayProcess(deployment: LocalDeployment): Promise<{
  port: number;
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
  const gatewayProcess = await startGatewayProcess(deployment);
  try {
    return await measure(deployment, gatewayProcess.port, user, options);
  } finally {
    await gatewayProcess.stop();
  }
}

async function measure(
  deployment: LocalDeployment,
  port: number,
  user: { email: string; token: string },
  options: { clients: number; seconds: number; rounds: number; log: (line: string) => void },
): Promise<GatewayBench> {
  const viaGateway: pg.ClientConfig = {
    host: "127.0.0.1",
    port,
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
  const rounds: GatewayBench["rounds"] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const gatewayQps = await simpleQueryRate(viaGateway, options.clients, options.seconds);
    const directQps = await simpleQueryRate(direct, options.clients, options.seconds);
    rounds.push({ gateway_qps: gatewayQps, direct_qps: directQps });
    options.log(
      `  round ${round}: select 1 on ${options.clients} connections: gateway ${gatewayQps.toFixed(0)}/s, directly ${directQps.toFixed(0)}/s`,
    );
  }
  const heavier: Array<{ gateway_qps: number; direct_qps: number }> = [];
  for (let round = 1; round <= options.rounds; round++) {
    const gatewayQps = await simpleQueryRate(viaGateway, options.clients, options.seconds, HEAVIER);
    const directQps = await simpleQueryRate(direct, options.clients, options.seconds, HEAVIER);
    heavier.push({ gateway_qps: gatewayQps, direct_qps: directQps });
    options.log(
      `  round ${round}: ${HEAVIER}: gateway ${gatewayQps.toFixed(0)}/s, directly ${directQps.toFixed(0)}/s`,
    );
  }
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  };
  return {
    connect_samples: connects.length,
    connect_p50_ms: percentile(connects, 0.5),
    connect_p99_ms: percentile(connects, 0.99),
    direct_connect_p50_ms: percentile(directConnects, 0.5),
    concurrency: options.clients,
    gateway_qps: median(rounds.map((r) => r.gateway_qps)),
    direct_qps: median(rounds.map((r) => r.direct_qps)),
    gateway_over_direct: median(rounds.map((r) => r.gateway_qps / r.direct_qps)),
    rounds,
    heavier: {
      sql: HEAVIER,
      gateway_qps: median(heavier.map((r) => r.gateway_qps)),
      direct_qps: median(heavier.map((r) => r.direct_qps)),
      gateway_over_direct: median(heavier.map((r) => r.gateway_qps / r.direct_qps)),
    },
  };
}
