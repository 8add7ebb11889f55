// Read replicas (--only replicas): logged-in reads (GET /todos with a
// session cookie) against the primary's PostgREST alone, and against the
// primary's and a streaming replica's together; and how long a revocation
// on the primary takes to reach the replica, under a write load.
//
// On a 2-core machine a replica adds no cores, so the point is not a
// speed-up: it is that reads run there at all, what they cost per core, and
// the revocation delay (replica_revocation_ms_p99) that "Scaling out" in
// docs/production.md quotes.

import { createHash, randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import autocannon from "autocannon";
import type pg from "pg";
import type { LocalDeployment } from "../../src/serving/deploy.js";
import { type BenchSettings, log } from "./options.js";
import { median, percentile, spreadOf } from "./stats.js";

export interface ReplicaBench {
  cores: number;
  reads_primary_rps: { min: number; median: number; max: number };
  reads_primary_and_replica_rps: { min: number; median: number; max: number };
  primary_and_replica_over_primary: number;
  reads_per_core_primary: number;
  reads_per_core_primary_and_replica: number;
  revocations: number;
  replica_revocation_ms_p50: number;
  replica_revocation_ms_p99: number;
  replica_revocation_ms_max: number;
  write_load_rps: number;
}

async function reads(url: string, cookie: string, settings: BenchSettings): Promise<number> {
  const result = await autocannon({
    url: `${url}/todos`,
    headers: { cookie },
    connections: settings.connections,
    duration: settings.duration,
  });
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${url}: ${result.non2xx} non-2xx answers and ${result.errors} errors`);
  }
  return result.requests.average;
}

/** A session made directly in the table (no bcrypt): its cookie value. */
async function sessionFor(db: pg.Client, userId: number): Promise<string> {
  const token = randomBytes(32).toString("base64url");
  const hash = createHash("sha256").update(token).digest();
  await db.query(
    "insert into auth.sessions (token_hash, user_id, expires) values ($1, $2, now() + interval '30 minutes')",
    [hash, userId],
  );
  return token;
}

async function status(url: string, token: string): Promise<number> {
  const answer = await fetch(`${url}/rpc/current_user`, {
    headers: { cookie: `session_token=${token}` },
  });
  await answer.arrayBuffer();
  return answer.status;
}

export async function measureReplicas(
  deployment: LocalDeployment,
  db: pg.Client,
  user: { cookie: string; userId: number },
  settings: BenchSettings,
): Promise<ReplicaBench> {
  const replica = deployment.replicas[0];
  if (!replica) throw new Error("the replica benchmark needs a deployment with a replica");
  const primaryUrl = deployment.postgrest.url;
  const replicaUrl = replica.postgrest.url;
  const cores = availableParallelism();

  log("logged-in reads: the primary alone, then the primary and its replica together");
  const alone: number[] = [];
  const together: number[] = [];
  for (let round = 0; round < settings.rounds; round++) {
    alone.push(await reads(primaryUrl, user.cookie, settings));
    const both = await Promise.all([
      reads(primaryUrl, user.cookie, settings),
      reads(replicaUrl, user.cookie, settings),
    ]);
    together.push(both[0] + both[1]);
  }

  log("revocation on the primary, seen on the replica, under a write load");
  const writes = autocannon({
    url: `${primaryUrl}/todos`,
    method: "POST",
    headers: { cookie: user.cookie, "content-type": "application/json", prefer: "return=minimal" },
    body: JSON.stringify({ description: "write load" }),
    connections: 2,
    duration: 3600,
  });
  const delays: number[] = [];
  const started = performance.now();
  try {
    for (let i = 0; i < 200 && performance.now() - started < settings.duration * 15_000; i++) {
      const token = await sessionFor(db, user.userId);
      // The new session must be on the replica before it can be ended there.
      while ((await status(replicaUrl, token)) !== 200) {
        await new Promise((r) => setTimeout(r, 1));
      }
      const revokedAt = performance.now();
      // As a production server commits (synchronous_commit = on): the WAL
      // is written at commit, and streamed at once. A throwaway cluster
      // commits asynchronously, which delays the stream by up to
      // wal_writer_delay (200 ms).
      await db.query("begin");
      await db.query("set local synchronous_commit = on");
      await db.query("update auth.sessions set revoked = now() where token_hash = $1", [
        createHash("sha256").update(token).digest(),
      ]);
      await db.query("commit");
      while ((await status(replicaUrl, token)) === 200) {
        if (performance.now() - revokedAt > 10_000) throw new Error("a revocation took over 10 s");
      }
      delays.push(performance.now() - revokedAt);
    }
  } finally {
    (writes as unknown as { stop: () => void }).stop();
  }
  const writeResult = await writes;
  const sorted = [...delays].sort((a, b) => a - b);
  const aloneSpread = spreadOf(alone);
  const togetherSpread = spreadOf(together);
  return {
    cores,
    reads_primary_rps: aloneSpread,
    reads_primary_and_replica_rps: togetherSpread,
    primary_and_replica_over_primary: median(together.map((t, i) => t / (alone[i] as number))),
    reads_per_core_primary: aloneSpread.median / cores,
    reads_per_core_primary_and_replica: togetherSpread.median / cores,
    revocations: delays.length,
    replica_revocation_ms_p50: percentile(sorted, 0.5),
    replica_revocation_ms_p99: percentile(sorted, 0.99),
    replica_revocation_ms_max: sorted.at(-1) ?? Number.NaN,
    write_load_rps: writeResult.requests.average,
  };
}

export function replicaLines(result: ReplicaBench): string[] {
  const range = (r: { min: number; median: number; max: number }) =>
    `${r.median.toFixed(0)}/s (${r.min.toFixed(0)}-${r.max.toFixed(0)})`;
  return [
    `read replicas (${result.cores} cores; a replica adds no cores here):`,
    `  logged-in GET /todos, primary alone            ${range(result.reads_primary_rps)}, ${result.reads_per_core_primary.toFixed(0)}/s per core`,
    `  logged-in GET /todos, primary + replica        ${range(result.reads_primary_and_replica_rps)}, ${result.reads_per_core_primary_and_replica.toFixed(0)}/s per core`,
    `  primary + replica / primary                    ${result.primary_and_replica_over_primary.toFixed(3)}`,
    `  revocation reaching the replica (${result.revocations} logouts, ${result.write_load_rps.toFixed(0)} writes/s meanwhile)  p50 ${result.replica_revocation_ms_p50.toFixed(1)} ms, p99 ${result.replica_revocation_ms_p99.toFixed(1)} ms, max ${result.replica_revocation_ms_max.toFixed(1)} ms`,
  ];
}
