// What a session costs. One deploy-local instance of the project, the same
// endpoint (GET /todos) returning the same rows under the same policies and
// the same login guard, with the identity coming from:
//
//   ceiling            nobody looks anything up: the login role's settings
//                      already name the user (what no auth at all would cost)
//   jwt_cached         a JWT verified by PostgREST, with its JWT cache on
//   jwt_uncached       the same without the cache
//   prerequest         the session cookie, through the auth.authenticate pre-request
//   inline             the session cookie, looked up inside the request's statement
//   empty_pre_request  the ceiling plus a pre-request that does nothing (a diagnostic:
//                      what PostgREST's extra statement costs by itself)
//
// Every variant sees exactly the same rows: the caller owns no todos, every
// seeded todo is public. Variants run interleaved, in many rounds, and the
// answer is reported as ratios of medians, with each variant's spread across
// rounds. Then: 1 thousand against 1 million sessions (both modes), writes
// per request, a logged-in user's latency under three floods, and login
// capacity against concurrency.
//
//   npm run bench -- [--duration SECONDS] [--rounds N] [--connections N]
//                    [--flood-rate N] [--out FILE]
//
// Prints tables, writes FILE (JSON, default bench/results.json) and FILE
// with .svg (a chart of the ratios). The scenarios live in scripts/bench/:
// identity.ts (variants, throughput, 1k against 1M sessions), floods.ts,
// logins.ts (capacity) with bursts.ts, gateway.ts (the doors), report.ts.

import { writeFileSync } from "node:fs";
import type pg from "pg";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import type { PostgrestProcess } from "../src/serving/postgrest.js";
import { measureFloods } from "./bench/floods.js";
import { measureGateway } from "./bench/gateway.js";
import {
  checkSameRows,
  growSessions,
  measureScale,
  measureThroughput,
  startVariants,
  summarizeThroughput,
} from "./bench/identity.js";
import { measureHonestBursts, measureLoginCapacity, registerBenchUser } from "./bench/logins.js";
import { type BenchSettings, benchSettings, log } from "./bench/options.js";
import { measureReplicas, replicaLines } from "./bench/replicas.js";
import { burstLines, gatewayLines, identityLines, printReport, svgChart } from "./bench/report.js";
import { machine } from "./bench/stats.js";

const GOALS = {
  inline_over_cached_jwt: 0.97,
  inline_over_ceiling: 0.95,
  prerequest_over_ceiling: 0.85,
  large_over_small: 0.95,
  writes_per_request: 0,
  flood_p99_ratio: 2,
  burst_logins_ok: 10,
  burst_login_p99_ms: 1000,
  burst_under_flood_ok: 10,
  gateway_flood_logins_ok: 10,
  prerequest_over_cached_jwt: 0.9,
  gateway_connect_p50_ms: 20,
  gateway_over_pgbouncer_select1: 0.9,
  gateway_over_pgbouncer_rows100: 0.95,
  /** At most this many times PgBouncer's CPU per transaction. */
  gateway_cpu_over_pgbouncer: 1.3,
  /** At most PgBouncer's added p50 plus this many microseconds. */
  gateway_added_p50_over_pgbouncer_us: 15,
};

interface Bench {
  settings: BenchSettings;
  deployment: LocalDeployment;
  db: pg.Client;
  /** A registered user: their cookie and id, and the same as a door login. */
  user: { cookie: string; userId: number };
  doorUser: { email: string; token: string };
  started: number;
}

function gatewayOptions(settings: BenchSettings) {
  return {
    clients: settings.connections,
    seconds: settings.duration,
    rounds: Math.max(3, Math.ceil(settings.rounds / 2)),
    log,
  };
}

/** Honest bursts and floods only (--only bursts). */
async function benchBursts(bench: Bench): Promise<void> {
  const { deployment, db, settings } = bench;
  const url = deployment.postgrest.url;
  const { bursts, gatewayFloodOk } = await measureHonestBursts(deployment, db, url, settings);
  const { floods, worst } = await measureFloods(settings, { url, cookie: bench.user.cookie });
  const result = {
    machine: machine(),
    deployment_settings: settings.settings,
    bursts,
    burst_logins_ok: bursts.burst_logins_ok,
    burst_login_p99_ms: bursts.burst_login_p99_ms,
    burst_under_flood_ok: bursts.burst_under_flood_ok,
    gateway_flood_logins_ok: gatewayFloodOk,
    floods,
    flood_p99_ratio: worst,
    total_seconds: Math.round((performance.now() - bench.started) / 1000),
  };
  writeFileSync(settings.outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${burstLines(result).join("\n")}\nwrote ${settings.outFile}\n`);
}

/** The database doors only (--only gateway). */
async function benchGateway(bench: Bench): Promise<void> {
  const { settings } = bench;
  log("database doors");
  const gateway = await measureGateway(bench.deployment, bench.doorUser, gatewayOptions(settings));
  const result = {
    machine: machine(),
    deployment_settings: settings.settings,
    gateway,
    total_seconds: Math.round((performance.now() - bench.started) / 1000),
  };
  writeFileSync(settings.outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${gatewayLines(gateway).join("\n")}\nwrote ${settings.outFile}\n`);
}

/** The identity variants, started and checked to see the same 20 public todos. */
async function identityVariants(bench: Bench, processes: PostgrestProcess[]) {
  const { deployment, db, user } = bench;
  const owner = await registerBenchUser(
    deployment.postgrest.url,
    `owner-${Date.now()}@example.com`,
  );
  await db.query(
    `insert into app.todos (user_id, description, public)
     select $1, 'public todo number ' || g, true from generate_series(1, 20) g`,
    [owner.userId],
  );
  const started = await startVariants(deployment, db, user.cookie, user.userId);
  processes.push(...started.processes);
  const { variants } = started;
  await checkSameRows(variants);
  await growSessions(db, 1000, owner.userId);
  return { variants, owner };
}

function throughputSettings(settings: BenchSettings) {
  return {
    duration_s: settings.duration,
    rounds: settings.rounds,
    connections: settings.connections,
    flood_rate: settings.floodRate,
    endpoint: "GET /todos (20 public rows, login guard, RLS)",
  };
}

/** Read replicas only (--only replicas). */
async function benchReplicas(bench: Bench): Promise<void> {
  const { settings } = bench;
  const replicas = await measureReplicas(bench.deployment, bench.db, bench.user, settings);
  const result = {
    machine: machine(),
    deployment_settings: settings.settings,
    ...replicas,
    total_seconds: Math.round((performance.now() - bench.started) / 1000),
  };
  writeFileSync(settings.outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${replicaLines(replicas).join("\n")}\nwrote ${settings.outFile}\n`);
}

/** What identity costs, alone (--only identity). */
async function benchIdentity(bench: Bench, processes: PostgrestProcess[]): Promise<void> {
  const { db, settings } = bench;
  const { variants } = await identityVariants(bench, processes);
  const samples = await measureThroughput(db, variants, settings);
  const result = {
    machine: machine(),
    deployment_settings: settings.settings,
    settings: throughputSettings(settings),
    ...summarizeThroughput(samples),
    total_seconds: Math.round((performance.now() - bench.started) / 1000),
  };
  writeFileSync(settings.outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${identityLines(result).join("\n")}\nwrote ${settings.outFile}\n`);
}

/** Every scenario, on PostgREST processes of its own (stopped on the way out). */
async function benchEverything(bench: Bench, processes: PostgrestProcess[]): Promise<void> {
  const { deployment, db, settings, user } = bench;
  const { variants, owner } = await identityVariants(bench, processes);
  const samples = await measureThroughput(db, variants, settings);
  const scale = await measureScale(db, variants, settings, user.cookie, owner.userId);

  const url = variants.find((v) => v.name === "prerequest")?.url as string;
  const { floods, worst } = await measureFloods(settings, { url, cookie: user.cookie });
  const { bursts, gatewayFloodOk } = await measureHonestBursts(deployment, db, url, settings);
  log("login capacity");
  const capacity = await measureLoginCapacity(url, db, settings);
  log("database doors");
  const gateway = await measureGateway(deployment, bench.doorUser, gatewayOptions(settings));

  const result = {
    machine: machine(),
    deployment_settings: settings.settings,
    settings: throughputSettings(settings),
    ...summarizeThroughput(samples),
    ...scale,
    floods,
    flood_p99_ratio: worst,
    bursts,
    burst_logins_ok: bursts.burst_logins_ok,
    burst_login_p99_ms: bursts.burst_login_p99_ms,
    burst_under_flood_ok: bursts.burst_under_flood_ok,
    gateway_flood_logins_ok: gatewayFloodOk,
    capacity,
    gateway,
    gateway_connect_p50_ms: gateway.connect_p50_ms,
    gateway_over_pgbouncer_select1: gateway.gateway_over_pgbouncer_select1,
    gateway_over_pgbouncer_rows100: gateway.gateway_over_pgbouncer_rows100,
    gateway_cpu_us_per_tx: gateway.gateway_cpu_us_per_tx,
    pgbouncer_cpu_us_per_tx: gateway.pgbouncer_cpu_us_per_tx,
    gateway_added_p50_us: gateway.gateway_added_p50_us,
    pgbouncer_added_p50_us: gateway.pgbouncer_added_p50_us,
    goals: GOALS,
    total_seconds: Math.round((performance.now() - bench.started) / 1000),
  };

  writeFileSync(settings.outFile, `${JSON.stringify(result, null, 2)}\n`);
  const chartFile = `${settings.outFile.replace(/\.json$/, "")}.svg`;
  writeFileSync(
    chartFile,
    svgChart([
      { label: "inline / cached JWT", value: result.inline_over_cached_jwt, goal: 0.97 },
      { label: "inline / ceiling", value: result.inline_over_ceiling, goal: 0.95 },
      { label: "pre-request / ceiling", value: result.prerequest_over_ceiling, goal: 0.85 },
      { label: "1M / 1k sessions", value: result.large_over_small, goal: 0.95 },
    ]),
  );
  printReport(result, settings.outFile, chartFile);
}

async function main(): Promise<void> {
  const settings = benchSettings();
  const started = performance.now();
  log("deploying the project ...");
  const deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    fixtures: false,
    replicas: settings.only === "replicas" ? 1 : 0,
  });
  const db = await deployment.connect();
  const processes: PostgrestProcess[] = [];
  try {
    const email = `bench-${Date.now()}@example.com`;
    const user = await registerBenchUser(deployment.postgrest.url, email);
    for (const [name, value] of Object.entries(settings.settings)) {
      await db.query(`update auth.settings set ${db.escapeIdentifier(name)} = $1`, [value]);
      log(`auth.settings.${name} = ${value}`);
    }
    // A door is a privilege (doors.sql.md): the gateway scenarios need one.
    await db.query("select auth.grant_door($1)", [user.userId]);
    const doorUser = { email, token: user.cookie.replace(/^session_token=/, "") };
    const bench: Bench = { settings, deployment, db, user, doorUser, started };
    if (settings.only === "bursts") await benchBursts(bench);
    else if (settings.only === "gateway") await benchGateway(bench);
    else if (settings.only === "identity") await benchIdentity(bench, processes);
    else if (settings.only === "replicas") await benchReplicas(bench);
    else await benchEverything(bench, processes);
  } finally {
    await db.end();
    for (const p of processes) await p.stop();
    await deployment.stop();
  }
}

await main();
