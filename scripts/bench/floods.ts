// A logged-in user's latency while an attacker floods the same PostgREST:
// logins with fresh emails, junk cookies, well-formed unknown tokens.

import { randomBytes, randomUUID } from "node:crypto";
import autocannon from "autocannon";
import { Pool } from "undici";
import { type BenchSettings, log } from "./options.js";
import { median, percentile } from "./stats.js";

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
  settings: BenchSettings,
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
  const until = performance.now() + settings.duration * 1000;
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
        overallRate: settings.floodRate,
        duration: settings.duration,
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
  const refused = floodResult
    ? Object.entries(floodResult.statusCodeStats ?? {})
        .filter(([code]) => code === "429")
        .reduce((sum, [, stats]) => sum + (stats as { count: number }).count, 0)
    : 0;
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
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
export const FLOOD_NAMES = ["quiet", "login", "junk_cookies", "unknown_tokens"] as const;

/** Quiet and three floods, interleaved, and the worst flood's p99 against quiet. */
export async function measureFloods(
  settings: BenchSettings,
  loggedIn: { url: string; cookie: string },
) {
  const { floodRate, rounds } = settings;
  log(`floods at ${floodRate} req/s: ${rounds} interleaved rounds of quiet and three floods`);
  const samples = Object.fromEntries(FLOOD_NAMES.map((n) => [n, [] as FloodResult[]])) as Record<
    (typeof FLOOD_NAMES)[number],
    FloodResult[]
  >;
  for (let round = 1; round <= rounds; round++) {
    for (const name of FLOOD_NAMES) {
      const sample = await latencyUnderFlood(
        settings,
        loggedIn,
        name === "quiet" ? undefined : FLOODS[name],
      );
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
