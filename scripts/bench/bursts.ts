// Honest bursts against floods (part of npm run bench): ten people who log
// in at the same moment, on a quiet server and while one other client floods
// logins with fresh emails as fast as it can; and the same through the
// gateway. The benchmark talks to PostgREST directly, so it plays the proxy
// in front and says who each client is (X-Forwarded-For, one address per
// person, one for the flooder), as nginx or deploy-local's front door would.

import { randomUUID } from "node:crypto";
import { Socket } from "node:net";
import pg from "pg";
import { Pool } from "undici";
import { median } from "./stats.js";

export interface BurstBench {
  /** Of 10 simultaneous logins of 10 users on a quiet server, how many got 200 (worst round). */
  burst_logins_ok: number;
  /** The slowest of the 10 (median over rounds), in ms: with 10 samples, their p99. */
  burst_login_p99_ms: number;
  /** The same 10 while one other client floods logins. */
  burst_under_flood_ok: number;
  burst_under_flood_p99_ms: number;
  /** What the flooder got meanwhile: attempts per second, and how many were told 429. */
  flood_attempts_per_second: number;
  flood_refused_share: number;
  rounds: Array<{ quiet_ok: number; quiet_ms: number; flood_ok: number; flood_ms: number }>;
}

export interface Person {
  email: string;
  password: string;
}

/** Ten logins at once, each from an address of its own; [how many 200, slowest ms]. */
async function burst(url: string, people: Person[], round: number): Promise<[number, number]> {
  const answers = await Promise.all(
    people.map(async (person, i) => {
      const started = performance.now();
      const response = await fetch(`${url}/rpc/login`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-forwarded-for": `10.1.${round}.${i + 1}`,
        },
        body: JSON.stringify({ email: person.email, password: person.password }),
      });
      await response.arrayBuffer();
      return { ok: response.status === 200, ms: performance.now() - started };
    }),
  );
  return [answers.filter((a) => a.ok).length, Math.max(...answers.map((a) => a.ms))];
}

/**
 * One client (one address) logging in with fresh emails as fast as 16
 * connections allow, until `stop` is called; resolves with its numbers.
 */
function loginFlood(url: string): {
  stop: () => Promise<{ perSecond: number; refusedShare: number }>;
} {
  const pool = new Pool(url, { connections: 16 });
  let flooding = true;
  let attempts = 0;
  let refused = 0;
  const started = performance.now();
  const workers = Array.from({ length: 16 }, async () => {
    while (flooding) {
      const response = await pool.request({
        path: "/rpc/login",
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": "10.66.66.66" },
        body: JSON.stringify({
          email: `flood-${randomUUID()}@example.com`,
          password: "a guess 123",
        }),
      });
      await response.body.arrayBuffer();
      attempts += 1;
      if (response.statusCode === 429) refused += 1;
    }
  });
  return {
    stop: async () => {
      flooding = false;
      await Promise.all(workers);
      await pool.close();
      const seconds = (performance.now() - started) / 1000;
      return { perSecond: attempts / seconds, refusedShare: attempts ? refused / attempts : 0 };
    },
  };
}

export async function measureBursts(
  url: string,
  people: Person[],
  rounds: number,
  log: (line: string) => void,
): Promise<BurstBench> {
  const results: BurstBench["rounds"] = [];
  const floodNumbers: Array<{ perSecond: number; refusedShare: number }> = [];
  for (let round = 1; round <= rounds; round++) {
    const [quietOk, quietMs] = await burst(url, people, round);
    const flood = loginFlood(url);
    await new Promise((r) => setTimeout(r, 1000)); // the flood fills its share of the line first
    const [floodOk, floodMs] = await burst(url, people, 100 + round);
    floodNumbers.push(await flood.stop());
    results.push({ quiet_ok: quietOk, quiet_ms: quietMs, flood_ok: floodOk, flood_ms: floodMs });
    log(
      `  round ${round}: 10 at once ${quietOk}/10 in ${quietMs.toFixed(0)} ms; during a flood ${floodOk}/10 in ${floodMs.toFixed(0)} ms (flood ${floodNumbers.at(-1)?.perSecond.toFixed(0)} attempts/s, ${((floodNumbers.at(-1)?.refusedShare ?? 0) * 100).toFixed(0)}% refused)`,
    );
  }
  return {
    burst_logins_ok: Math.min(...results.map((r) => r.quiet_ok)),
    burst_login_p99_ms: median(results.map((r) => r.quiet_ms)),
    burst_under_flood_ok: Math.min(...results.map((r) => r.flood_ok)),
    burst_under_flood_p99_ms: median(results.map((r) => r.flood_ms)),
    flood_attempts_per_second: median(floodNumbers.map((f) => f.perSecond)),
    flood_refused_share: median(floodNumbers.map((f) => f.refusedShare)),
    rounds: results,
  };
}

/** A node-postgres connection from a local address of its own (127.0.0.0/8 is all loopback). */
function fromAddress(localAddress: string): () => Socket {
  return () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket) as (options: object) => Socket;
    Object.assign(socket, {
      connect: (port: number, host: string) => connect({ port, host, localAddress }),
    });
    return socket;
  };
}

/**
 * Ten door users logging in through the gateway at once, each from an
 * address of its own, while one address floods it with made-up emails;
 * how many got in.
 */
export async function measureGatewayFlood(
  door: { host: string; port: number; database: string },
  people: Person[],
  log: (line: string) => void,
): Promise<number> {
  let flooding = true;
  let attempts = 0;
  const attempt = async (n: number) => {
    const client = new pg.Client({
      ...door,
      user: `nobody-${n}@example.com`,
      password: "a guess 123",
      stream: fromAddress("127.0.0.77"),
    });
    client.on("error", () => {});
    await client.connect().then(
      () => client.end(),
      () => {},
    );
  };
  const flood = Array.from({ length: 20 }, async () => {
    while (flooding) await attempt(attempts++);
  });
  await new Promise((r) => setTimeout(r, 1000));
  const outcomes = await Promise.all(
    people.map(async (person, i) => {
      const client = new pg.Client({
        ...door,
        user: person.email,
        password: person.password,
        stream: fromAddress(`127.0.1.${i + 1}`),
      });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.end();
        return true;
      } catch (error) {
        log(`  ${person.email}: ${(error as Error).message}`);
        return false;
      }
    }),
  );
  flooding = false;
  await Promise.all(flood);
  const ok = outcomes.filter(Boolean).length;
  log(`  through the gateway during a flood (${attempts} attempts): ${ok}/10 logged in`);
  return ok;
}
