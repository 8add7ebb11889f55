// What identity costs: one PostgREST per way of saying who the caller is
// (see scripts/bench.ts for the list), GET /todos on each in interleaved
// rounds, and the sessions table at 1 thousand against 1 million rows.

import autocannon from "autocannon";
import { SignJWT } from "jose";
import type pg from "pg";
import { freePort } from "../../src/net.js";
import type { LocalDeployment } from "../../src/serving/deploy.js";
import {
  identitySettings,
  type PostgrestConfig,
  type PostgrestProcess,
  startPostgrest,
} from "../../src/serving/postgrest.js";
import { type BenchSettings, log } from "./options.js";
import { median, spreadOf } from "./stats.js";

const JWT_SECRET = "benchmark-only-secret-with-at-least-32-characters";

export const VARIANTS = [
  "ceiling",
  "jwt_cached",
  "jwt_uncached",
  "prerequest",
  "inline",
  "empty_pre_request",
] as const;
export type VariantName = (typeof VARIANTS)[number];

export interface Variant {
  name: VariantName;
  url: string;
  headers: Record<string, string>;
}

export interface Sample {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  walBytes: number;
  sessionWrites: number;
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
export async function load(
  db: pg.Client,
  variant: Variant,
  settings: BenchSettings,
  conns = settings.connections,
): Promise<Sample> {
  const walBefore = await walPosition(db);
  const writesBefore = await sessionTableWrites(db);
  const result = await autocannon({
    url: `${variant.url}/todos`,
    headers: variant.headers,
    connections: conns,
    duration: settings.duration,
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

/**
 * What one auth.identify() costs inside the database (microseconds per call,
 * 20,000 calls in a PL/pgSQL loop, a GET carrying the cookie): the lookup
 * without PostgREST or the network around it.
 */
export async function identifyMicroseconds(db: pg.Client, cookie: string): Promise<number> {
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
export async function growSessions(db: pg.Client, target: number, ownerId: number): Promise<void> {
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
export async function startVariants(
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
export async function checkSameRows(variants: Variant[]): Promise<void> {
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

export async function measureThroughput(
  db: pg.Client,
  variants: Variant[],
  settings: BenchSettings,
): Promise<Record<VariantName, Sample[]>> {
  log(
    `warming up, then ${settings.rounds} interleaved rounds of ${settings.duration} s at ${settings.connections} connections`,
  );
  for (const v of variants) await load(db, v, settings, 2);
  const samples = Object.fromEntries(VARIANTS.map((n) => [n, [] as Sample[]])) as Record<
    VariantName,
    Sample[]
  >;
  for (let round = 1; round <= settings.rounds; round++) {
    // A different order every round, so that no variant always follows the same one.
    const order = [...variants].sort(() => Math.random() - 0.5);
    for (const v of order) {
      const sample = await load(db, v, settings);
      samples[v.name].push(sample);
      log(
        `  round ${round} ${v.name.padEnd(17)} ${sample.rps.toFixed(0)} req/s p50 ${sample.p50} ms p99 ${sample.p99} ms`,
      );
    }
  }
  return samples;
}

export type ScaleSamples = Record<"prerequest" | "inline" | "ceiling", Sample[]>;

/**
 * The sessions table at 1 million rows against 1 thousand: the same rounds
 * just before and just after the table grows, and the lookup's own cost timed
 * inside the database. The machine drifts over minutes, so each round also
 * measures the ceiling (which looks nothing up, so the table's size cannot
 * touch it) and the comparison is of shares of the ceiling.
 */
export async function measureScale(
  db: pg.Client,
  variants: Variant[],
  settings: BenchSettings,
  cookie: string,
  ownerId: number,
) {
  const scaleRounds = Math.max(2, Math.ceil(settings.rounds / 2));
  const atScale = async (label: string) => {
    const result: ScaleSamples = { prerequest: [], inline: [], ceiling: [] };
    for (let round = 1; round <= scaleRounds; round++) {
      for (const name of ["ceiling", "prerequest", "inline"] as const) {
        const variant = variants.find((v) => v.name === name) as Variant;
        result[name].push(await load(db, variant, settings));
      }
      log(
        `  ${label}, round ${round}: ceiling ${result.ceiling.at(-1)?.rps.toFixed(0)} req/s, pre-request ${result.prerequest.at(-1)?.rps.toFixed(0)} req/s, inline ${result.inline.at(-1)?.rps.toFixed(0)} req/s`,
      );
    }
    return result;
  };
  /** Median over rounds of a mode's share of that round's ceiling. */
  const shareOfCeiling = (at: ScaleSamples, name: "prerequest" | "inline") =>
    median(at[name].map((s, i) => s.rps / (at.ceiling[i]?.rps ?? Number.NaN)));
  const rps = (at: ScaleSamples, name: "prerequest" | "inline") =>
    median(at[name].map((s) => s.rps));

  const small = await atScale("1k sessions");
  const lookupSmall = await identifyMicroseconds(db, cookie);
  await growSessions(db, 1_000_000, ownerId);
  const large = await atScale("1M sessions");
  const lookupLarge = await identifyMicroseconds(db, cookie);
  log(
    `  auth.identify() in the database: ${lookupSmall.toFixed(1)} us at 1k, ${lookupLarge.toFixed(1)} us at 1M`,
  );
  return {
    sessions_small: {
      rows: 1000,
      prerequest_rps: rps(small, "prerequest"),
      inline_rps: rps(small, "inline"),
      identify_us: lookupSmall,
    },
    sessions_large: {
      rows: 1_000_000,
      prerequest_rps: rps(large, "prerequest"),
      inline_rps: rps(large, "inline"),
      identify_us: lookupLarge,
    },
    large_over_small: Math.min(
      shareOfCeiling(large, "prerequest") / shareOfCeiling(small, "prerequest"),
      shareOfCeiling(large, "inline") / shareOfCeiling(small, "inline"),
    ),
  };
}

/** Each variant's numbers, and the ratios between variants, from the interleaved rounds. */
export function summarizeThroughput(samples: Record<VariantName, Sample[]>) {
  // Ratios taken round by round (each round runs every variant back to
  // back, so the machine's mood is shared), then the median of those: far
  // steadier on a shared machine than a ratio of medians.
  const paired = (a: VariantName, b: VariantName) =>
    spreadOf(samples[a].map((sample, i) => sample.rps / (samples[b][i]?.rps ?? Number.NaN)));
  const spreads = Object.fromEntries(
    VARIANTS.map((name) => [name, spreadOf(samples[name].map((s) => s.rps))]),
  ) as Record<VariantName, ReturnType<typeof spreadOf>>;
  return {
    variants: Object.fromEntries(
      VARIANTS.map((name) => [
        name,
        {
          rps: spreads[name].median,
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
    writes_per_request: Math.max(
      median(samples.prerequest.map((s) => s.sessionWrites)),
      median(samples.inline.map((s) => s.sessionWrites)),
    ),
    spread: Math.max(...VARIANTS.map((n) => spreads[n].spread)),
  };
}
