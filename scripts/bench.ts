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
// with .svg (a chart of the ratios).

import { randomBytes, randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { SignJWT } from "jose";
import type pg from "pg";
import { Pool } from "undici";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import {
  identitySettings,
  type PostgrestConfig,
  type PostgrestProcess,
  startPostgrest,
} from "../src/serving/postgrest.js";
import { TestClient } from "../src/testing/client.js";
import { measureBursts, measureGatewayFlood } from "./bench-bursts.js";
import { type GatewayBench, measureGateway } from "./bench-gateway.js";

const USAGE = `usage: npm run bench -- [options]
  --duration SECONDS   length of each measurement (default 4)
  --rounds N           interleaved rounds of every variant (default 6)
  --connections N      autocannon connections for throughput (default 10)
  --flood-rate N       requests per second of each attacker flood (default 100)
  --out FILE           the JSON results; the chart goes to FILE with .svg
                       (default bench/results.json; with --only gateway,
                       bench/gateway.json)
  --only gateway       measure only the database doors (connection set-up and
                       query throughput through the gateway)
  --only bursts        measure only honest bursts against floods: ten logins at
                       once, quiet and during a login flood, over HTTP and
                       through the gateway, and a logged-in user's latency
                       during the floods (default out: bench/bursts.json)
`;

function parseOptions() {
  try {
    return parseArgs({
      options: {
        duration: { type: "string", default: "4" },
        rounds: { type: "string", default: "6" },
        connections: { type: "string", default: "10" },
        out: { type: "string" },
        "flood-rate": { type: "string", default: "100" },
        only: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}
const { values } = parseOptions();
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function positiveNumber(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`--${name} must be a positive number, got "${text}"\n`);
    process.exit(2);
  }
  return value;
}
const duration = positiveNumber("duration", values.duration);
const rounds = Math.round(positiveNumber("rounds", values.rounds));
const connections = Math.round(positiveNumber("connections", values.connections));
const floodRate = Math.round(positiveNumber("flood-rate", values["flood-rate"]));
const outFile = values.out ?? (values.only ? `bench/${values.only}.json` : "bench/results.json");
if (values.only !== undefined && values.only !== "gateway" && values.only !== "bursts") {
  process.stderr.write(`--only takes "gateway" or "bursts", got "${values.only}"\n${USAGE}`);
  process.exit(2);
}

const JWT_SECRET = "benchmark-only-secret-with-at-least-32-characters";
const PASSWORD = "benchmark password";
const log = (line: string) => process.stderr.write(`${line}\n`);

const VARIANTS = [
  "ceiling",
  "jwt_cached",
  "jwt_uncached",
  "prerequest",
  "inline",
  "empty_pre_request",
] as const;
type VariantName = (typeof VARIANTS)[number];

interface Variant {
  name: VariantName;
  url: string;
  headers: Record<string, string>;
}

interface Sample {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  walBytes: number;
  sessionWrites: number;
}

function median(numbers: number[]): number {
  const sorted = [...numbers].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** min, median, max and (max - min) / median of a variant's rounds. */
function spreadOf(list: number[]): { min: number; median: number; max: number; spread: number } {
  const m = median(list);
  return {
    min: Math.min(...list),
    median: m,
    max: Math.max(...list),
    spread: (Math.max(...list) - Math.min(...list)) / m,
  };
}

async function walPosition(db: pg.Client): Promise<bigint> {
  const { rows } = await db.query<{ lsn: string }>(
    "select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text as lsn",
  );
  return BigInt(rows[0]?.lsn ?? "0");
}

async function sessionTableWrites(db: pg.Client): Promise<number> {
  await db.query("select pg_stat_clear_snapshot()");
  const { rows } = await db.query<{ writes: string }>(
    `select (n_tup_ins + n_tup_upd + n_tup_del)::text as writes
       from pg_stat_user_tables where schemaname = 'auth' and relname = 'sessions'`,
  );
  return Number(rows[0]?.writes ?? 0);
}

/** autocannon on one variant's GET /todos, with the database writes it caused. */
async function load(db: pg.Client, variant: Variant, conns = connections): Promise<Sample> {
  const walBefore = await walPosition(db);
  const writesBefore = await sessionTableWrites(db);
  const result = await autocannon({
    url: `${variant.url}/todos`,
    headers: variant.headers,
    connections: conns,
    duration,
  });
  // Stats are flushed by backends at transaction end, with a short delay.
  await new Promise((r) => setTimeout(r, 700));
  const walAfter = await walPosition(db);
  const writesAfter = await sessionTableWrites(db);
  const requests = result.requests.total;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests,
    errors: result.errors + result.non2xx,
    walBytes: Number(walAfter - walBefore) / Math.max(1, requests),
    sessionWrites: (writesAfter - writesBefore) / Math.max(1, requests),
  };
}

/** Registers a user (coming back in a second when the password slots are busy). */
async function registerBenchUser(
  url: string,
  email: string,
): Promise<{ cookie: string; userId: number }> {
  // The test client already comes back when told the server is busy.
  const client = new TestClient(url);
  const response = await client.register(email, "Bench", PASSWORD);
  const token = client.sessionToken;
  if (response.status !== 200 || !token) {
    throw new Error(`registering ${email} failed: ${response.status} ${response.text}`);
  }
  return {
    cookie: `session_token=${token}`,
    userId: (response.body as { user_id: number }).user_id,
  };
}

/**
 * What one auth.identify() costs inside the database (microseconds per call,
 * 20,000 calls in a PL/pgSQL loop, a GET carrying the cookie): the lookup
 * without PostgREST or the network around it.
 */
async function identifyMicroseconds(db: pg.Client, cookie: string): Promise<number> {
  await db.query(`create or replace function public.bench_identify(n int, token text) returns float8
    language plpgsql as $$
    declare t0 timestamptz; i int;
    begin
      perform set_config('request.method', 'GET', true);
      perform set_config('request.cookies', json_build_object('session_token', token)::text, true);
      t0 := clock_timestamp();
      for i in 1 .. n loop
        perform set_config('auth.identified', '', true);
        perform auth.identify();
      end loop;
      return extract(epoch from clock_timestamp() - t0) * 1e6 / n;
    end $$`);
  const token = cookie.slice(cookie.indexOf("=") + 1);
  const { rows } = await db.query<{ us: number }>("select public.bench_identify(20000, $1) as us", [
    token,
  ]);
  return Number(rows[0]?.us);
}

/** Adds dead sessions (expired or revoked, as in real life) until the table holds `target` rows. */
async function growSessions(db: pg.Client, target: number, ownerId: number): Promise<void> {
  const { rows } = await db.query<{ n: string }>("select count(*)::text as n from auth.sessions");
  const missing = target - Number(rows[0]?.n ?? 0);
  if (missing <= 0) return;
  const started = performance.now();
  // 90% expired, 9% revoked, 1% alive but idle for a while: every one a real row with a real hash.
  await db.query(
    `insert into auth.sessions (token_hash, user_id, created, expires, revoked)
     select sha256(crypto.gen_random_bytes(32)), $2,
            now() - (g % 1440) * interval '1 minute',
            case when g % 100 < 90 then now() - interval '1 minute' else now() + interval '10 minutes' end,
            case when g % 100 between 90 and 98 then now() - interval '5 minutes' end
       from generate_series(1, $1::int) g`,
    [missing, ownerId],
  );
  await db.query("analyze auth.sessions");
  log(`  sessions table grown to ${target} rows in ${Math.round(performance.now() - started)} ms`);
}

/** One PostgREST per variant, on the same database, logging errors only. */
async function startVariants(
  deployment: LocalDeployment,
  db: pg.Client,
  cookie: string,
  userId: number,
): Promise<{ variants: Variant[]; processes: PostgrestProcess[] }> {
  const { cluster, database } = deployment;
  // Login roles of their own: one whose verified JWTs carry the user id
  // (auth.settings.jwt_user_id_role), one whose connections already name the
  // user (the ceiling: identity costs a setting read).
  await db.query(`do $$ begin
    if not exists (select from pg_roles where rolname = 'bench_jwt_login') then
      create role bench_jwt_login login noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'bench_ceiling_login') then
      create role bench_ceiling_login login noinherit;
    end if; end $$`);
  await db.query("grant anonymous, webuser to bench_jwt_login, bench_ceiling_login");
  // The same server settings as the authenticator's (its statement timeout
  // above all: a timer armed for every statement costs several percent), so
  // that every variant pays the same for what is not identity.
  const { rows: settings } = await db.query<{ setting: string }>(
    `select unnest(setconfig) as setting from pg_db_role_setting
      where setrole = 'authenticator'::regrole and setdatabase = 0`,
  );
  for (const role of ["bench_jwt_login", "bench_ceiling_login"]) {
    for (const { setting } of settings) {
      const at = setting.indexOf("=");
      await db.query(
        `alter role ${role} set ${setting.slice(0, at)} = ${db.escapeLiteral(setting.slice(at + 1))}`,
      );
    }
  }
  await db.query("update auth.settings set jwt_user_id_role = 'bench_jwt_login'");
  await db.query(
    `alter role bench_ceiling_login in database ${db.escapeIdentifier(database)} set auth.identified = 'yes'`,
  );
  await db.query(
    `alter role bench_ceiling_login in database ${db.escapeIdentifier(database)} set auth.user_id = '${userId}'`,
  );
  await db.query(
    "create or replace function public.bench_empty_pre_request() returns void language sql as ''",
  );
  await db.query("grant execute on function public.bench_empty_pre_request() to webuser");

  const jwtEnv = { PGRST_JWT_SECRET: JWT_SECRET, PGRST_JWT_ROLE_CLAIM_KEY: ".role" };
  const quiet = { PGRST_LOG_LEVEL: "error" };
  const configs: Record<VariantName, Omit<PostgrestConfig, "port" | "logFile">> = {
    ceiling: {
      dbUri: cluster.uri("bench_ceiling_login", database),
      ...identitySettings("inline"),
      extraEnv: quiet,
    },
    jwt_cached: {
      dbUri: cluster.uri("bench_jwt_login", database),
      preRequest: null,
      extraEnv: { ...quiet, ...jwtEnv, PGRST_JWT_CACHE_MAX_LIFETIME: "3600" },
    },
    jwt_uncached: {
      dbUri: cluster.uri("bench_jwt_login", database),
      preRequest: null,
      extraEnv: { ...quiet, ...jwtEnv },
    },
    prerequest: {
      dbUri: cluster.uri("authenticator", database),
      ...identitySettings("pre-request"),
      extraEnv: quiet,
    },
    inline: {
      dbUri: cluster.uri("authenticator", database),
      ...identitySettings("inline"),
      extraEnv: quiet,
    },
    empty_pre_request: {
      dbUri: cluster.uri("bench_ceiling_login", database),
      preRequest: "public.bench_empty_pre_request",
      anonRole: "webuser",
      extraEnv: quiet,
    },
  };
  const jwt = await new SignJWT({ role: "webuser", user_id: userId })
    .setProtectedHeader({ alg: "HS256" })
    .setExpirationTime("2h")
    .sign(new TextEncoder().encode(JWT_SECRET));
  const headers: Record<VariantName, Record<string, string>> = {
    ceiling: {},
    jwt_cached: { authorization: `Bearer ${jwt}` },
    jwt_uncached: { authorization: `Bearer ${jwt}` },
    prerequest: { cookie },
    inline: { cookie },
    empty_pre_request: {},
  };
  const processes: PostgrestProcess[] = [];
  const variants: Variant[] = [];
  for (const name of VARIANTS) {
    const process = await startPostgrest({
      ...configs[name],
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-${name}.log`,
    });
    processes.push(process);
    variants.push({ name, url: process.url, headers: headers[name] });
  }
  return { variants, processes };
}

/** The variants must see the same rows, or the comparison means nothing. */
async function checkSameRows(variants: Variant[]): Promise<void> {
  const bodies = await Promise.all(
    variants.map(async (v) => {
      const response = await fetch(`${v.url}/todos?select=todo_id&order=todo_id`, {
        headers: v.headers,
      });
      return `${response.status} ${await response.text()}`;
    }),
  );
  const distinct = new Set(bodies);
  if (distinct.size !== 1 || !bodies[0]?.startsWith("200")) {
    throw new Error(
      `the variants do not see the same rows:\n${variants.map((v, i) => `${v.name}: ${bodies[i]?.slice(0, 120)}`).join("\n")}`,
    );
  }
}

async function measureThroughput(
  db: pg.Client,
  variants: Variant[],
): Promise<Record<VariantName, Sample[]>> {
  log(
    `warming up, then ${rounds} interleaved rounds of ${duration} s at ${connections} connections`,
  );
  for (const v of variants) await load(db, v, 2);
  const samples = Object.fromEntries(VARIANTS.map((n) => [n, [] as Sample[]])) as Record<
    VariantName,
    Sample[]
  >;
  for (let round = 1; round <= rounds; round++) {
    // A different order every round, so that no variant always follows the same one.
    const order = [...variants].sort(() => Math.random() - 0.5);
    for (const v of order) {
      const sample = await load(db, v);
      samples[v.name].push(sample);
      log(
        `  round ${round} ${v.name.padEnd(17)} ${sample.rps.toFixed(0)} req/s p50 ${sample.p50} ms p99 ${sample.p99} ms`,
      );
    }
  }
  return samples;
}

interface FloodResult {
  /** Logged-in GET /todos latency while the flood runs. */
  p50: number;
  p99: number;
  /** Requests per second the flood managed, and how many got 429. */
  floodRps: number;
  floodRefused: number;
}

/**
 * A logged-in user's latency (GET /todos, 2 connections) while an attacker
 * floods the same PostgREST at a steady rate, or while nothing else happens
 * (`flood` undefined). Each flood request is built fresh: a new email per
 * login, a new junk or well-formed-but-unknown token per request.
 */
async function latencyUnderFlood(
  loggedIn: { url: string; cookie: string },
  flood?: {
    method: "GET" | "POST";
    path: string;
    headers?: Record<string, string>;
    request: () => { body?: string; cookie?: string };
  },
): Promise<FloodResult> {
  // The logged-in user: two keep-alive connections, one request after
  // another, each timed to the microsecond (autocannon rounds to whole ms,
  // too coarse for a quiet baseline of about one).
  const pool = new Pool(loggedIn.url, { connections: 2 });
  const latencies: number[] = [];
  const until = performance.now() + duration * 1000;
  const user = async () => {
    while (performance.now() < until) {
      const started = performance.now();
      const response = await pool.request({
        path: "/todos",
        method: "GET",
        headers: { cookie: loggedIn.cookie },
      });
      await response.body.arrayBuffer();
      if (response.statusCode !== 200) {
        throw new Error(`logged-in GET /todos answered ${response.statusCode}`);
      }
      latencies.push(performance.now() - started);
    }
  };
  const flooding = flood
    ? autocannon({
        url: loggedIn.url,
        connections: 16,
        // A steady attacker, not one that takes every cycle of a machine it
        // shares with the server: that would measure the machine, not the app.
        overallRate: floodRate,
        duration,
        requests: [
          {
            method: flood.method,
            path: flood.path,
            setupRequest: (request) => {
              const { body, cookie } = flood.request();
              return {
                ...request,
                headers: {
                  ...flood.headers,
                  ...(body ? { "content-type": "application/json" } : {}),
                  ...(cookie ? { cookie } : {}),
                },
                ...(body ? { body } : {}),
              };
            },
          },
        ],
      })
    : undefined;
  const [, , floodResult] = await Promise.all([user(), user(), flooding]);
  await pool.close();
  const sorted = [...latencies].sort((a, b) => a - b);
  const percentile = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
  const refused = floodResult
    ? Object.entries(floodResult.statusCodeStats ?? {})
        .filter(([code]) => code === "429")
        .reduce((sum, [, stats]) => sum + (stats as { count: number }).count, 0)
    : 0;
  return {
    p50: percentile(0.5),
    p99: percentile(0.99),
    floodRps: floodResult?.requests.average ?? 0,
    floodRefused: refused,
  };
}

const FLOODS = {
  login: {
    method: "POST" as const,
    path: "/rpc/login",
    // One attacker: every attempt from one address (the benchmark plays the
    // proxy in front of PostgREST, which says who the client is).
    headers: { "x-forwarded-for": "10.66.66.66" },
    request: () => ({
      body: JSON.stringify({ email: `flood-${randomUUID()}@example.com`, password: "a guess 123" }),
    }),
  },
  junk_cookies: {
    method: "GET" as const,
    path: "/todos",
    request: () => ({ cookie: `session_token=${randomBytes(60).toString("hex")}` }),
  },
  unknown_tokens: {
    method: "GET" as const,
    path: "/todos",
    request: () => ({ cookie: `session_token=${randomBytes(32).toString("base64url")}` }),
  },
};
const FLOOD_NAMES = ["quiet", "login", "junk_cookies", "unknown_tokens"] as const;

async function measureFloods(loggedIn: { url: string; cookie: string }) {
  log(`floods at ${floodRate} req/s: ${rounds} interleaved rounds of quiet and three floods`);
  const samples = Object.fromEntries(FLOOD_NAMES.map((n) => [n, [] as FloodResult[]])) as Record<
    (typeof FLOOD_NAMES)[number],
    FloodResult[]
  >;
  for (let round = 1; round <= rounds; round++) {
    for (const name of FLOOD_NAMES) {
      const sample = await latencyUnderFlood(loggedIn, name === "quiet" ? undefined : FLOODS[name]);
      samples[name].push(sample);
      log(
        `  round ${round} ${name.padEnd(14)} logged-in p50 ${sample.p50.toFixed(2)} ms p99 ${sample.p99.toFixed(2)} ms` +
          (name === "quiet"
            ? ""
            : `, flood ${sample.floodRps.toFixed(0)} req/s (${sample.floodRefused} refused with 429)`),
      );
    }
  }
  const p99 = (name: (typeof FLOOD_NAMES)[number]) => median(samples[name].map((s) => s.p99));
  const floods = Object.fromEntries(
    FLOOD_NAMES.map((name) => [
      name,
      {
        p50_ms: median(samples[name].map((s) => s.p50)),
        p99_ms: p99(name),
        flood_rps: median(samples[name].map((s) => s.floodRps)),
        p99_over_quiet: p99(name) / p99("quiet"),
      },
    ]),
  ) as Record<
    (typeof FLOOD_NAMES)[number],
    { p50_ms: number; p99_ms: number; flood_rps: number; p99_over_quiet: number }
  >;
  const worst = Math.max(
    floods.login.p99_over_quiet,
    floods.junk_cookies.p99_over_quiet,
    floods.unknown_tokens.p99_over_quiet,
  );
  return { floods, worst };
}

/**
 * Successful logins per second against the number of clients logging in at
 * once (one user each: one attempt per email runs at a time), up to
 * PostgREST's pool. Each client behaves as a browser would: a "come back in
 * a second" (429, Retry-After: 1) is retried after that second.
 */
async function measureLoginCapacity(url: string, db: pg.Client) {
  const { rows } = await db.query<{ slots: number; cost: number }>(
    "select password_slots as slots, bcrypt_cost as cost from auth.settings",
  );
  const slots = rows[0]?.slots ?? 0;
  const cost = rows[0]?.cost ?? 0;
  const concurrencies = [1, 2, 4, 10];
  const users: string[] = [];
  for (let i = 0; i < Math.max(...concurrencies); i++) {
    const email = `capacity-${i}-${Date.now()}@example.com`;
    await registerBenchUser(url, email);
    users.push(email);
  }
  const results: Array<{ concurrency: number; logins_per_second: number; busy_answers: number }> =
    [];
  for (const concurrency of concurrencies) {
    let logins = 0;
    let busy = 0;
    const until = performance.now() + duration * 1000;
    const client = async (email: string) => {
      while (performance.now() < until) {
        const response = await fetch(`${url}/rpc/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email, password: PASSWORD }),
        });
        await response.arrayBuffer();
        if (response.status === 200) logins++;
        else if (response.status === 429) {
          busy++;
          await new Promise((r) =>
            setTimeout(r, 1000 * Number(response.headers.get("retry-after") ?? 1)),
          );
        } else throw new Error(`login answered ${response.status}`);
      }
    };
    await Promise.all(users.slice(0, concurrency).map(client));
    results.push({ concurrency, logins_per_second: logins / duration, busy_answers: busy });
    log(
      `  ${concurrency} clients: ${(logins / duration).toFixed(1)} logins/s, ${busy} told to come back`,
    );
  }
  return { password_slots: slots, bcrypt_cost: cost, by_concurrency: results };
}

function svgChart(ratios: Array<{ label: string; value: number; goal: number }>): string {
  const width = 640;
  const barHeight = 40;
  const top = 50;
  const left = 230;
  const scale = (width - left - 60) / 1.2;
  const height = top + ratios.length * (barHeight + 14) + 40;
  const bars = ratios
    .map((r, i) => {
      const y = top + i * (barHeight + 14);
      const w = Math.max(1, Math.min(1.2, r.value) * scale);
      const ok = r.value >= r.goal;
      return `<text x="${left - 10}" y="${y + barHeight / 2 + 5}" text-anchor="end" font-size="14">${r.label}</text>
<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${ok ? "#2f7d4f" : "#b3261e"}"/>
<text x="${left + w + 6}" y="${y + barHeight / 2 + 5}" font-size="14">${r.value.toFixed(3)}</text>
<line x1="${left + r.goal * scale}" x2="${left + r.goal * scale}" y1="${y - 4}" y2="${y + barHeight + 4}" stroke="#1d2433" stroke-dasharray="4 3"/>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="system-ui, sans-serif">
<title>Session cost as throughput ratios against their goals</title>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="28" font-size="16" font-weight="bold">Session cost, as throughput ratios (dashed: goal)</text>
${bars}
<line x1="${left + scale}" x2="${left + scale}" y1="${top - 8}" y2="${height - 30}" stroke="#999"/>
<text x="${left + scale}" y="${height - 12}" text-anchor="middle" font-size="12">1.0</text>
</svg>
`;
}

function gatewayLines(gateway: GatewayBench): string[] {
  return [
    `database doors (the gateway), ${gateway.concurrency} connections:`,
    `  connect with a session token  p50 ${gateway.connect_p50_ms.toFixed(1)} ms, p99 ${gateway.connect_p99_ms.toFixed(1)} ms (goal p50 < 20 ms${gateway.connect_p50_ms < 20 ? ", met" : ", MISSED"}; directly p50 ${gateway.direct_connect_p50_ms.toFixed(1)} ms)`,
    `  select 1 through the gateway  ${gateway.gateway_qps.toFixed(0)}/s, directly ${gateway.direct_qps.toFixed(0)}/s: ${gateway.gateway_over_direct.toFixed(3)} of direct (goal >= 0.9${gateway.gateway_over_direct >= 0.9 ? ", met" : ", MISSED"})`,
    `  a 20,000-row sum               ${gateway.heavier.gateway_qps.toFixed(0)}/s, directly ${gateway.heavier.direct_qps.toFixed(0)}/s: ${gateway.heavier.gateway_over_direct.toFixed(3)} of direct`,
  ];
}

/** Ten people with doors, then their bursts over HTTP (at `url`) and through the gateway. */
async function measureHonestBursts(deployment: LocalDeployment, db: pg.Client, url: string) {
  log("ten people logging in at once, quiet and during a login flood");
  const people = [];
  for (let i = 0; i < 10; i++) {
    const email = `burst-${i}-${Date.now()}@example.com`;
    const { userId } = await registerBenchUser(url, email);
    await db.query("select auth.grant_door($1)", [userId]);
    people.push({ email, password: PASSWORD });
  }
  const bursts = await measureBursts(url, people, rounds, log);
  const doors = deployment.doors;
  if (!doors) throw new Error("the benchmark's deployment started no gateway");
  const gatewayFloodOk = await measureGatewayFlood(
    { host: doors.gateway.host, port: doors.gateway.port, database: deployment.database },
    people,
    log,
  );
  return { bursts, gatewayFloodOk };
}

// biome-ignore lint/suspicious/noExplicitAny: the JSON written by main, read back for printing.
function burstLines(result: any): string[] {
  const goal = (value: number, target: number, atMost = false) =>
    `${value.toFixed(3)}  (goal ${atMost ? "<=" : ">="} ${target}${(atMost ? value <= target : value >= target) ? ", met" : ", MISSED"})`;
  return [
    "| logged-in GET /todos during | p50 ms | p99 ms | p99 / quiet |",
    "|-----------------------------|--------|--------|-------------|",
    ...FLOOD_NAMES.map((name) => {
      const f = result.floods[name];
      return `| ${name.replace("_", " ").padEnd(27)} | ${f.p50_ms.toFixed(2).padStart(6)} | ${f.p99_ms.toFixed(2).padStart(6)} | ${f.p99_over_quiet.toFixed(2).padStart(11)} |`;
    }),
    `worst flood p99 / quiet    ${goal(result.flood_p99_ratio, 2, true)}`,
    "",
    `10 logins at once, quiet   ${result.burst_logins_ok}/10 (goal 10), slowest ${result.burst_login_p99_ms.toFixed(0)} ms (goal < 1000${result.burst_login_p99_ms < 1000 ? ", met" : ", MISSED"})`,
    `10 logins during a flood   ${result.burst_under_flood_ok}/10 (goal 10), slowest ${result.bursts.burst_under_flood_p99_ms.toFixed(0)} ms; the flooder: ${result.bursts.flood_attempts_per_second.toFixed(0)} attempts/s, ${(result.bursts.flood_refused_share * 100).toFixed(0)}% told 429`,
    `10 gateway logins, flood   ${result.gateway_flood_logins_ok}/10 (goal 10)`,
  ];
}

async function main(): Promise<void> {
  const started = performance.now();
  log("deploying the project ...");
  const deployment = await deployLocal({ port: await freePort(), tests: false, fixtures: false });
  const db = await deployment.connect();
  let processes: PostgrestProcess[] = [];
  try {
    const benchEmail = `bench-${Date.now()}@example.com`;
    const sessionUser = await registerBenchUser(deployment.postgrest.url, benchEmail);
    const doorUser = {
      email: benchEmail,
      token: sessionUser.cookie.replace(/^session_token=/, ""),
    };
    const gatewayOptions = {
      clients: connections,
      seconds: duration,
      rounds: Math.max(3, Math.ceil(rounds / 2)),
      log,
    };
    if (values.only === "bursts") {
      const { bursts, gatewayFloodOk } = await measureHonestBursts(
        deployment,
        db,
        deployment.postgrest.url,
      );
      const { floods, worst } = await measureFloods({
        url: deployment.postgrest.url,
        cookie: sessionUser.cookie,
      });
      const result = {
        machine: {
          cores: availableParallelism(),
          cpu: cpus()[0]?.model ?? "unknown",
          node: process.version,
        },
        bursts,
        burst_logins_ok: bursts.burst_logins_ok,
        burst_login_p99_ms: bursts.burst_login_p99_ms,
        burst_under_flood_ok: bursts.burst_under_flood_ok,
        gateway_flood_logins_ok: gatewayFloodOk,
        floods,
        flood_p99_ratio: worst,
        total_seconds: Math.round((performance.now() - started) / 1000),
      };
      writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
      process.stdout.write(`${burstLines(result).join("\n")}\nwrote ${outFile}\n`);
      return;
    }
    if (values.only === "gateway") {
      log("database doors");
      const gateway = await measureGateway(deployment, doorUser, gatewayOptions);
      const result = {
        machine: {
          cores: availableParallelism(),
          cpu: cpus()[0]?.model ?? "unknown",
          node: process.version,
        },
        gateway,
        total_seconds: Math.round((performance.now() - started) / 1000),
      };
      writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
      process.stdout.write(`${gatewayLines(gateway).join("\n")}\nwrote ${outFile}\n`);
      return;
    }
    const owner = await registerBenchUser(
      deployment.postgrest.url,
      `owner-${Date.now()}@example.com`,
    );
    await db.query(
      `insert into app.todos (user_id, description, public)
       select $1, 'public todo number ' || g, true from generate_series(1, 20) g`,
      [owner.userId],
    );
    const started_ = await startVariants(deployment, db, sessionUser.cookie, sessionUser.userId);
    processes = started_.processes;
    const { variants } = started_;
    await checkSameRows(variants);

    await growSessions(db, 1000, owner.userId);
    const samples = await measureThroughput(db, variants);

    // The sessions table at 1 million rows against 1 thousand: the same
    // rounds just before and just after the table grows, and the lookup's own
    // cost timed inside the database. The machine drifts over minutes, so each
    // round also measures the ceiling (which looks nothing up, so the table's
    // size cannot touch it) and the comparison is of shares of the ceiling.
    const scaleRounds = Math.max(2, Math.ceil(rounds / 2));
    const atScale = async (label: string) => {
      const result: Record<"prerequest" | "inline" | "ceiling", Sample[]> = {
        prerequest: [],
        inline: [],
        ceiling: [],
      };
      for (let round = 1; round <= scaleRounds; round++) {
        for (const name of ["ceiling", "prerequest", "inline"] as const) {
          result[name].push(await load(db, variants.find((v) => v.name === name) as Variant));
        }
        log(
          `  ${label}, round ${round}: ceiling ${result.ceiling.at(-1)?.rps.toFixed(0)} req/s, pre-request ${result.prerequest.at(-1)?.rps.toFixed(0)} req/s, inline ${result.inline.at(-1)?.rps.toFixed(0)} req/s`,
        );
      }
      return result;
    };
    /** Median over rounds of a mode's share of that round's ceiling. */
    const shareOfCeiling = (
      at: Record<"prerequest" | "inline" | "ceiling", Sample[]>,
      name: "prerequest" | "inline",
    ) => median(at[name].map((s, i) => s.rps / (at.ceiling[i]?.rps ?? Number.NaN)));
    const small = await atScale("1k sessions");
    const lookupSmall = await identifyMicroseconds(db, sessionUser.cookie);
    await growSessions(db, 1_000_000, owner.userId);
    const large = await atScale("1M sessions");
    const lookupLarge = await identifyMicroseconds(db, sessionUser.cookie);
    log(
      `  auth.identify() in the database: ${lookupSmall.toFixed(1)} us at 1k, ${lookupLarge.toFixed(1)} us at 1M`,
    );

    const prerequestUrl = variants.find((v) => v.name === "prerequest")?.url as string;
    const { floods, worst } = await measureFloods({
      url: prerequestUrl,
      cookie: sessionUser.cookie,
    });
    const { bursts, gatewayFloodOk } = await measureHonestBursts(deployment, db, prerequestUrl);
    log("login capacity");
    const capacity = await measureLoginCapacity(prerequestUrl, db);
    log("database doors");
    const gateway = await measureGateway(deployment, doorUser, gatewayOptions);

    const rps = (name: VariantName) => median(samples[name].map((s) => s.rps));
    // Ratios taken round by round (each round runs every variant back to
    // back, so the machine's mood is shared), then the median of those: far
    // steadier on a shared machine than a ratio of medians.
    const paired = (a: VariantName, b: VariantName) => {
      const ratios = samples[a].map((sample, i) => sample.rps / (samples[b][i]?.rps ?? Number.NaN));
      return spreadOf(ratios);
    };
    const largeRps = (name: "prerequest" | "inline") => median(large[name].map((s) => s.rps));
    const smallRps = (name: "prerequest" | "inline") => median(small[name].map((s) => s.rps));
    const spreads = Object.fromEntries(
      VARIANTS.map((name) => [name, spreadOf(samples[name].map((s) => s.rps))]),
    ) as Record<VariantName, ReturnType<typeof spreadOf>>;
    const largestSpread = Math.max(...VARIANTS.map((n) => spreads[n].spread));
    const cores = availableParallelism();
    const result = {
      machine: { cores, cpu: cpus()[0]?.model ?? "unknown", node: process.version },
      settings: {
        duration_s: duration,
        rounds,
        connections,
        flood_rate: floodRate,
        endpoint: "GET /todos (20 public rows, login guard, RLS)",
      },
      variants: Object.fromEntries(
        VARIANTS.map((name) => [
          name,
          {
            rps: rps(name),
            rps_min: spreads[name].min,
            rps_max: spreads[name].max,
            spread: spreads[name].spread,
            p50_ms: median(samples[name].map((s) => s.p50)),
            p99_ms: median(samples[name].map((s) => s.p99)),
            errors: samples[name].reduce((sum, s) => sum + s.errors, 0),
            wal_bytes_per_request: median(samples[name].map((s) => s.walBytes)),
            session_writes_per_request: median(samples[name].map((s) => s.sessionWrites)),
          },
        ]),
      ),
      inline_over_cached_jwt: paired("inline", "jwt_cached").median,
      inline_over_ceiling: paired("inline", "ceiling").median,
      prerequest_over_ceiling: paired("prerequest", "ceiling").median,
      prerequest_over_cached_jwt: paired("prerequest", "jwt_cached").median,
      cached_jwt_over_ceiling: paired("jwt_cached", "ceiling").median,
      uncached_jwt_over_ceiling: paired("jwt_uncached", "ceiling").median,
      empty_pre_request_over_ceiling: paired("empty_pre_request", "ceiling").median,
      ratio_spreads: {
        inline_over_cached_jwt: paired("inline", "jwt_cached"),
        inline_over_ceiling: paired("inline", "ceiling"),
        prerequest_over_ceiling: paired("prerequest", "ceiling"),
        prerequest_over_cached_jwt: paired("prerequest", "jwt_cached"),
      },
      sessions_small: {
        rows: 1000,
        prerequest_rps: smallRps("prerequest"),
        inline_rps: smallRps("inline"),
        identify_us: lookupSmall,
      },
      sessions_large: {
        rows: 1_000_000,
        prerequest_rps: largeRps("prerequest"),
        inline_rps: largeRps("inline"),
        identify_us: lookupLarge,
      },
      large_over_small: Math.min(
        shareOfCeiling(large, "prerequest") / shareOfCeiling(small, "prerequest"),
        shareOfCeiling(large, "inline") / shareOfCeiling(small, "inline"),
      ),
      writes_per_request: Math.max(
        median(samples.prerequest.map((s) => s.sessionWrites)),
        median(samples.inline.map((s) => s.sessionWrites)),
      ),
      floods,
      flood_p99_ratio: worst,
      bursts,
      burst_logins_ok: bursts.burst_logins_ok,
      burst_login_p99_ms: bursts.burst_login_p99_ms,
      burst_under_flood_ok: bursts.burst_under_flood_ok,
      gateway_flood_logins_ok: gatewayFloodOk,
      spread: largestSpread,
      capacity,
      gateway,
      gateway_connect_p50_ms: gateway.connect_p50_ms,
      gateway_over_direct: gateway.gateway_over_direct,
      goals: {
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
        gateway_connect_p50_ms: 20,
        gateway_over_direct: 0.9,
      },
      total_seconds: Math.round((performance.now() - started) / 1000),
    };

    writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
    const chartFile = `${outFile.replace(/\.json$/, "")}.svg`;
    writeFileSync(
      chartFile,
      svgChart([
        { label: "inline / cached JWT", value: result.inline_over_cached_jwt, goal: 0.97 },
        { label: "inline / ceiling", value: result.inline_over_ceiling, goal: 0.95 },
        { label: "pre-request / ceiling", value: result.prerequest_over_ceiling, goal: 0.85 },
        { label: "1M / 1k sessions", value: result.large_over_small, goal: 0.95 },
      ]),
    );
    printReport(result, chartFile);
  } finally {
    await db.end();
    for (const p of processes) await p.stop();
    await deployment.stop();
  }
}

// biome-ignore lint/suspicious/noExplicitAny: the JSON written above, read back for printing.
function printReport(result: any, chartFile: string): void {
  const row = (
    name: string,
    v: {
      rps: number;
      rps_min: number;
      rps_max: number;
      p50_ms: number;
      p99_ms: number;
      session_writes_per_request: number;
    },
  ) =>
    `| ${name.padEnd(17)} | ${v.rps.toFixed(0).padStart(6)} | ${`${v.rps_min.toFixed(0)}-${v.rps_max.toFixed(0)}`.padStart(11)} | ${(v.rps / result.variants.ceiling.rps).toFixed(3).padStart(8)} | ${String(v.p50_ms).padStart(6)} | ${String(v.p99_ms).padStart(6)} | ${v.session_writes_per_request.toFixed(4).padStart(8)} |`;
  const goal = (value: number, target: number, atMost = false) =>
    `${value.toFixed(3)}  (goal ${atMost ? "<=" : ">="} ${target}${(atMost ? value <= target : value >= target) ? ", met" : ", MISSED"})`;
  const lines = [
    `GET /todos, ${result.settings.connections} connections, ${result.settings.rounds} rounds x ${result.settings.duration_s} s, ${result.machine.cores} cores`,
    "",
    "| variant           |  req/s | min-max     | /ceiling | p50 ms | p99 ms | writes/r |",
    "|-------------------|--------|-------------|----------|--------|--------|----------|",
    ...VARIANTS.map((name) => row(name, result.variants[name])),
    "",
    `inline / cached JWT        ${goal(result.inline_over_cached_jwt, 0.97)}`,
    `inline / ceiling           ${goal(result.inline_over_ceiling, 0.95)}`,
    `pre-request / ceiling      ${goal(result.prerequest_over_ceiling, 0.85)}`,
    `pre-request / cached JWT   ${result.prerequest_over_cached_jwt.toFixed(3)}`,
    `1M / 1k sessions (worse)   ${goal(result.large_over_small, 0.95)}; auth.identify() ${result.sessions_small.identify_us.toFixed(1)} us at 1k, ${result.sessions_large.identify_us.toFixed(1)} us at 1M`,
    `session writes per GET     ${result.writes_per_request.toFixed(4)}  (goal 0)`,
    `noise: the largest spread of a variant's req/s across rounds is ${(result.spread * 100).toFixed(1)}% ((max - min) / median);`,
    `  the ratios are medians of per-round ratios, whose own ranges were: ${Object.entries(
      result.ratio_spreads as Record<string, { min: number; max: number }>,
    )
      .map(([name, r]) => `${name} ${r.min.toFixed(3)}-${r.max.toFixed(3)}`)
      .join(", ")}`,
    "",
    ...burstLines(result),
    "",
    `logins per second (password_slots ${result.capacity.password_slots}, bcrypt cost ${result.capacity.bcrypt_cost}):`,
    ...result.capacity.by_concurrency.map(
      (c: { concurrency: number; logins_per_second: number; busy_answers: number }) =>
        `  ${String(c.concurrency).padStart(2)} clients: ${c.logins_per_second.toFixed(1)}/s (${c.busy_answers} told to come back)`,
    ),
    "",
    ...gatewayLines(result.gateway),
    "",
    `wrote ${outFile} and ${chartFile} (${result.total_seconds} s)`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

await main();
