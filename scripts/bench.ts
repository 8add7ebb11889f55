// What a session costs. One deploy-local instance of app.sql.md, the same
// endpoint (GET /todos) returning the same rows under the same RLS policies,
// with identity coming from:
//
//   session   the session cookie, through the auth.authenticate pre-request
//   jwt       an HS256 JWT verified by PostgREST itself (no pre-request)
//   ceiling   nobody: no pre-request at all, public rows only
//
// The caller owns no todos and every seeded todo is public, so all three see
// exactly the same rows. Variants run interleaved, several rounds, and the
// answer is reported as ratios, which drift far less than absolute numbers
// on a shared machine. Then: session cost with 1 thousand and 1 million rows
// in the sessions table, database writes per request, and login throughput.
//
//   npm run bench -- [--duration SECONDS] [--rounds N] [--connections N] [--out FILE]
//
// Prints a table, writes FILE (JSON, default bench-results.json) and FILE
// with .svg (a chart of the ratios).

import { randomBytes, randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { SignJWT } from "jose";
import type pg from "pg";
import { Pool } from "undici";
import { deployLocal, type LocalDeployment } from "../src/deploy.js";
import { freePort, type PostgrestProcess, startPostgrest } from "../src/postgrest.js";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "10" },
    out: { type: "string", default: "bench-results.json" },
    file: { type: "string" },
    "flood-rate": { type: "string", default: "100" },
  },
});

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
const outFile = values.out as string;
const floodRate = Math.round(positiveNumber("flood-rate", values["flood-rate"]));

const JWT_SECRET = "benchmark-only-secret-with-at-least-32-characters";
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Variant {
  name: "session" | "jwt" | "ceiling" | "empty_pre_request" | "empty_pre_request_cookie";
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

async function load(
  db: pg.Client,
  variant: Variant,
  path: string,
  options: { method?: "GET" | "POST"; body?: string; connections?: number } = {},
): Promise<Sample> {
  const walBefore = await walPosition(db);
  const writesBefore = await sessionTableWrites(db);
  const result = await autocannon({
    url: `${variant.url}${path}`,
    method: options.method ?? "GET",
    headers: {
      ...variant.headers,
      ...(options.body ? { "content-type": "application/json" } : {}),
    },
    ...(options.body ? { body: options.body } : {}),
    connections: options.connections ?? connections,
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

async function registerBenchUser(
  url: string,
  email: string,
): Promise<{ cookie: string; userId: number }> {
  const register = () =>
    fetch(`${url}/rpc/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, name: "Bench", password: "benchmark password" }),
    });
  let response = await register();
  // "Too many password checks at once": come back in a second, as told.
  while (response.status === 429 && response.headers.get("retry-after") === "1") {
    await response.arrayBuffer();
    await new Promise((r) => setTimeout(r, 50));
    response = await register();
  }
  const setCookie = response.headers.get("set-cookie") ?? "";
  const body = (await response.json()) as { user_id: number };
  const token = /session_token=([^;]+)/.exec(setCookie)?.[1];
  if (response.status !== 200 || !token) {
    throw new Error(
      `registering the benchmark user failed: ${response.status} ${JSON.stringify(body)}`,
    );
  }
  return { cookie: `session_token=${token}`, userId: body.user_id };
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

function svgChart(ratios: Array<{ label: string; value: number; goal: number }>): string {
  const width = 640;
  const barHeight = 44;
  const top = 50;
  const left = 200;
  const scale = (width - left - 60) / 1.2;
  const height = top + ratios.length * (barHeight + 16) + 40;
  const bars = ratios
    .map((r, i) => {
      const y = top + i * (barHeight + 16);
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
 * floods the same PostgREST, or while nothing else happens (`flood`
 * undefined). Each flood request is built fresh: a new email per login, a
 * new junk or well-formed-but-unknown token per request.
 */
async function latencyUnderFlood(
  loggedIn: { url: string; cookie: string },
  flood?: {
    method: "GET" | "POST";
    path: string;
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
      if (response.statusCode !== 200)
        throw new Error(`logged-in GET /todos answered ${response.statusCode}`);
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

async function main(): Promise<void> {
  const started = performance.now();
  log(`deploying ${values.file ?? "the project"} ...`);
  const deployment: LocalDeployment = await deployLocal({
    ...(values.file ? { file: values.file } : {}),
    port: await freePort(),
    tests: false,
    fixtures: false,
  });
  const extra: PostgrestProcess[] = [];
  const db = await deployment.connect();
  try {
    const { cluster, database } = deployment;
    // A login role of its own for the JWT variant: only its connections take
    // the user id from JWT claims (auth.settings.jwt_user_id_role).
    await db.query(`do $$ begin
      if not exists (select from pg_roles where rolname = 'bench_jwt_authenticator') then
        create role bench_jwt_authenticator login noinherit;
      end if; end $$`);
    await db.query("grant anonymous, webuser to bench_jwt_authenticator");
    await db.query("update auth.settings set jwt_user_id_role = 'bench_jwt_authenticator'");

    const sessionUser = await registerBenchUser(
      deployment.postgrest.url,
      `bench-${Date.now()}@example.com`,
    );
    const owner = await registerBenchUser(
      deployment.postgrest.url,
      `owner-${Date.now()}@example.com`,
    );
    await db.query(
      `insert into app.todos (user_id, description, public)
       select $1, 'public todo number ' || g, true from generate_series(1, 20) g`,
      [owner.userId],
    );

    const jwtPostgrest = await startPostgrest({
      dbUri: cluster.uri("bench_jwt_authenticator", database),
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-jwt.log`,
      preRequest: null,
      // This benchmark's own tokens do choose their role (webuser), as in
      // PostgREST's usual JWT setup.
      extraEnv: {
        PGRST_JWT_SECRET: JWT_SECRET,
        PGRST_JWT_ROLE_CLAIM_KEY: ".role",
        PGRST_LOG_LEVEL: "error",
      },
    });
    extra.push(jwtPostgrest);
    const ceilingPostgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-ceiling.log`,
      preRequest: null,
      anonRole: "webuser",
      extraEnv: { PGRST_LOG_LEVEL: "error" },
    });
    extra.push(ceilingPostgrest);
    // A diagnostic: the ceiling plus a pre-request function that does
    // nothing. The gap between it and the ceiling is what PostgREST's
    // pre-request mechanism itself costs (one more statement per request),
    // before any session work.
    await db.query(
      "create or replace function public.bench_empty_pre_request() returns void language sql as ''",
    );
    await db.query("grant execute on function public.bench_empty_pre_request() to webuser");
    const emptyPreRequestPostgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-empty.log`,
      preRequest: "public.bench_empty_pre_request",
      anonRole: "webuser",
      extraEnv: { PGRST_LOG_LEVEL: "error" },
    });
    extra.push(emptyPreRequestPostgrest);
    // The measured PostgREST logs errors only, like the others.
    const sessionPostgrest = await startPostgrest({
      dbUri: cluster.uri("authenticator", database),
      port: await freePort(),
      logFile: `${cluster.dir}/postgrest-session.log`,
      extraEnv: { PGRST_LOG_LEVEL: "error" },
    });
    extra.push(sessionPostgrest);

    const jwt = await new SignJWT({ role: "webuser", user_id: sessionUser.userId })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("2h")
      .sign(new TextEncoder().encode(JWT_SECRET));
    const variants: Variant[] = [
      { name: "session", url: sessionPostgrest.url, headers: { cookie: sessionUser.cookie } },
      { name: "jwt", url: jwtPostgrest.url, headers: { authorization: `Bearer ${jwt}` } },
      { name: "ceiling", url: ceilingPostgrest.url, headers: {} },
      { name: "empty_pre_request", url: emptyPreRequestPostgrest.url, headers: {} },
      // The same, sent with the session cookie that nothing reads: what
      // PostgREST spends on the cookie header alone.
      {
        name: "empty_pre_request_cookie",
        url: emptyPreRequestPostgrest.url,
        headers: { cookie: sessionUser.cookie },
      },
    ];

    // The three must see the same rows, or the comparison means nothing.
    const bodies = await Promise.all(
      variants.map(async (v) => {
        const response = await fetch(`${v.url}/todos?select=todo_id&order=todo_id`, {
          headers: v.headers,
        });
        return `${response.status} ${await response.text()}`;
      }),
    );
    if (new Set(bodies).size !== 1 || !bodies[0]?.startsWith("200")) {
      throw new Error(`the variants do not see the same rows:\n${bodies.join("\n")}`);
    }

    await growSessions(db, 1000, owner.userId);
    log(
      `warming up, then ${rounds} interleaved rounds of ${duration} s at ${connections} connections`,
    );
    for (const v of variants) await load(db, v, "/todos", { connections: 2 });

    const samples: Record<Variant["name"], Sample[]> = {
      session: [],
      jwt: [],
      ceiling: [],
      empty_pre_request: [],
      empty_pre_request_cookie: [],
    };
    for (let round = 1; round <= rounds; round++) {
      for (const v of round % 2 ? variants : [...variants].reverse()) {
        const sample = await load(db, v, "/todos");
        samples[v.name].push(sample);
        log(
          `  round ${round} ${v.name.padEnd(8)} ${sample.rps.toFixed(0)} req/s p50 ${sample.p50} ms p99 ${sample.p99} ms`,
        );
      }
    }

    // The sessions table at 1 million rows, against the 1 thousand rows above.
    const small = samples.session;
    await growSessions(db, 1_000_000, owner.userId);
    const large: Sample[] = [];
    const jwtAtLarge: Sample[] = [];
    for (let round = 1; round <= rounds; round++) {
      large.push(await load(db, variants[0] as Variant, "/todos"));
      jwtAtLarge.push(await load(db, variants[1] as Variant, "/todos"));
      log(`  1M sessions, round ${round}: session ${large.at(-1)?.rps.toFixed(0)} req/s`);
    }

    // Login throughput: bounded by bcrypt and by the password slots. One
    // user per connection (one attempt per email runs at a time), and only
    // successful logins count.
    const cores = cpus().length;
    const loginUsers = await Promise.all(
      Array.from({ length: cores }, async (_, i) => {
        const email = `login-${i}-${Date.now()}@example.com`;
        await registerBenchUser(sessionPostgrest.url, email);
        return email;
      }),
    );
    const loginEmail = loginUsers[0] as string;
    let next = 0;
    const loginRun = await autocannon({
      url: sessionPostgrest.url,
      connections: cores,
      duration,
      requests: [
        {
          method: "POST",
          path: "/rpc/login",
          setupRequest: (request) => ({
            ...request,
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              email: loginUsers[next++ % loginUsers.length],
              password: "benchmark password",
            }),
          }),
        },
      ],
    });
    const login = {
      rps: loginRun["2xx"] / duration,
      p50: loginRun.latency.p50,
      errors: loginRun.non2xx,
    };
    const { rows: costRows } = await db.query<{ cost: string }>(
      "select substring(password_hash from '^\\$2[abxy]\\$(\\d+)\\$') as cost from auth.users where email = $1",
      [loginEmail],
    );
    const bcryptCost = Number(costRows[0]?.cost);

    // Floods: a logged-in user's p99 while an attacker sends logins with
    // fresh emails, junk cookies, or well-formed tokens that name no session.
    log(
      `floods at ${floodRate} req/s: ${rounds} interleaved rounds of quiet, login, junk cookies, unknown tokens`,
    );
    const floodSamples: Record<"quiet" | keyof typeof FLOODS, FloodResult[]> = {
      quiet: [],
      login: [],
      junk_cookies: [],
      unknown_tokens: [],
    };
    const loggedIn = { url: sessionPostgrest.url, cookie: sessionUser.cookie };
    for (let round = 1; round <= rounds; round++) {
      for (const name of ["quiet", "login", "junk_cookies", "unknown_tokens"] as const) {
        const sample = await latencyUnderFlood(
          loggedIn,
          name === "quiet" ? undefined : FLOODS[name],
        );
        floodSamples[name].push(sample);
        log(
          `  round ${round} ${name.padEnd(14)} logged-in p50 ${sample.p50.toFixed(2)} ms p99 ${sample.p99.toFixed(2)} ms` +
            (name === "quiet"
              ? ""
              : `, flood ${sample.floodRps.toFixed(0)} req/s (${sample.floodRefused} refused with 429)`),
        );
      }
    }
    const floodP99 = (name: keyof typeof floodSamples) =>
      median(floodSamples[name].map((s) => s.p99));
    const floods = Object.fromEntries(
      (["quiet", "login", "junk_cookies", "unknown_tokens"] as const).map((name) => [
        name,
        {
          p50_ms: median(floodSamples[name].map((s) => s.p50)),
          p99_ms: floodP99(name),
          flood_rps: median(floodSamples[name].map((s) => s.floodRps)),
          p99_over_quiet: floodP99(name) / floodP99("quiet"),
        },
      ]),
    );
    const floodP99Ratio = Math.max(
      floodP99("login") / floodP99("quiet"),
      floodP99("junk_cookies") / floodP99("quiet"),
      floodP99("unknown_tokens") / floodP99("quiet"),
    );

    const rps = (list: Sample[]) => median(list.map((s) => s.rps));
    const result = {
      machine: { cores, cpu: cpus()[0]?.model ?? "unknown", node: process.version },
      settings: {
        duration_s: duration,
        rounds,
        connections,
        endpoint: "GET /todos (20 public rows)",
      },
      variants: Object.fromEntries(
        (
          ["session", "jwt", "ceiling", "empty_pre_request", "empty_pre_request_cookie"] as const
        ).map((name) => [
          name,
          {
            rps: rps(samples[name]),
            p50_ms: median(samples[name].map((s) => s.p50)),
            p99_ms: median(samples[name].map((s) => s.p99)),
            errors: samples[name].reduce((sum, s) => sum + s.errors, 0),
            wal_bytes_per_request: median(samples[name].map((s) => s.walBytes)),
            session_writes_per_request: median(samples[name].map((s) => s.sessionWrites)),
          },
        ]),
      ),
      session_over_jwt: rps(samples.session) / rps(samples.jwt),
      session_over_ceiling: rps(samples.session) / rps(samples.ceiling),
      empty_pre_request_over_ceiling: rps(samples.empty_pre_request) / rps(samples.ceiling),
      session_over_empty_pre_request: rps(samples.session) / rps(samples.empty_pre_request),
      sessions_small: { rows: 1000, rps: rps(small) },
      sessions_large: { rows: 1_000_000, rps: rps(large), jwt_rps: rps(jwtAtLarge) },
      large_over_small: rps(large) / rps(small),
      writes_per_request: median(samples.session.map((s) => s.sessionWrites)),
      wal_bytes_per_request: median(samples.session.map((s) => s.walBytes)),
      login: {
        bcrypt_cost: bcryptCost,
        logins_per_second: login.rps,
        logins_per_second_per_core: login.rps / cores,
        p50_ms: login.p50,
        errors: login.errors,
      },
      floods,
      flood_p99_ratio: floodP99Ratio,
      goals: {
        flood_p99_ratio: 2,
        session_over_jwt: 0.95,
        session_over_ceiling: 0.9,
        large_over_small: 0.95,
        writes_per_request: 0,
      },
      total_seconds: Math.round((performance.now() - started) / 1000),
    };

    writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
    const chartFile = `${outFile.replace(/\.json$/, "")}.svg`;
    writeFileSync(
      chartFile,
      svgChart([
        { label: "session / JWT", value: result.session_over_jwt, goal: 0.95 },
        { label: "session / no auth", value: result.session_over_ceiling, goal: 0.9 },
        { label: "1M / 1k sessions", value: result.large_over_small, goal: 0.95 },
      ]),
    );

    const row = (
      name: string,
      s: { rps: number; p50_ms: number; p99_ms: number; session_writes_per_request: number },
    ) =>
      `| ${name.padEnd(17)} | ${s.rps.toFixed(0).padStart(7)} | ${String(s.p50_ms).padStart(7)} | ${String(s.p99_ms).padStart(7)} | ${s.session_writes_per_request.toFixed(4).padStart(14)} |`;
    const v = result.variants as Record<
      string,
      { rps: number; p50_ms: number; p99_ms: number; session_writes_per_request: number }
    >;
    const lines = [
      `GET /todos, ${connections} connections, ${rounds} rounds x ${duration} s, ${cores} cores`,
      "",
      "| variant           |   req/s | p50 ms  | p99 ms  | writes/request |",
      "|-------------------|---------|---------|---------|----------------|",
      row("session", v.session as never),
      row("jwt", v.jwt as never),
      row("ceiling", v.ceiling as never),
      row("empty pre-request", v.empty_pre_request as never),
      row("  + unused cookie", v.empty_pre_request_cookie as never),
      "",
      `session / JWT            ${result.session_over_jwt.toFixed(3)}  (goal >= 0.95)`,
      `session / no auth        ${result.session_over_ceiling.toFixed(3)}  (goal >= 0.90)`,
      `  of which PostgREST's pre-request call: empty pre-request / no auth ${result.empty_pre_request_over_ceiling.toFixed(3)},`,
      `  and the session work itself: session / empty pre-request ${result.session_over_empty_pre_request.toFixed(3)}`,
      `1M / 1k sessions         ${result.large_over_small.toFixed(3)}  (goal >= 0.95)`,
      `session writes/request   ${result.writes_per_request.toFixed(4)}  (goal 0)`,
      `logins/s                 ${login.rps.toFixed(1)} (${(login.rps / cores).toFixed(1)} per core, bcrypt cost ${bcryptCost})`,
      "",
      "| logged-in GET /todos during | p50 ms | p99 ms | p99 / quiet |",
      "|-----------------------------|--------|--------|-------------|",
      ...(["quiet", "login", "junk_cookies", "unknown_tokens"] as const).map((name) => {
        const f = floods[name] as { p50_ms: number; p99_ms: number; p99_over_quiet: number };
        return `| ${name.replace("_", " ").padEnd(27)} | ${f.p50_ms.toFixed(2).padStart(6)} | ${f.p99_ms.toFixed(2).padStart(6)} | ${f.p99_over_quiet.toFixed(2).padStart(11)} |`;
      }),
      `worst flood p99 / quiet  ${floodP99Ratio.toFixed(2)}  (goal <= 2)`,
      "",
      `wrote ${outFile} and ${chartFile}`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await db.end();
    for (const p of extra) await p.stop();
    await deployment.stop();
  }
}

await main();
