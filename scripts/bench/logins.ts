// Logging in: registering the benchmark's users, login capacity against
// concurrency, and honest bursts (scripts/bench/bursts.ts) with doors.

import type pg from "pg";
import type { LocalDeployment } from "../../src/serving/deploy.js";
import { TestClient } from "../../src/testing/client.js";
import { measureBursts, measureGatewayFlood } from "./bursts.js";
import { type BenchSettings, log, PASSWORD } from "./options.js";

export /** Registers a user (coming back in a second when the password slots are busy). */
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
 * Successful logins per second against the number of clients logging in at
 * once (one user each: one attempt per email runs at a time), up to
 * PostgREST's pool. Each client behaves as a browser would: a "come back in
 * a second" (429, Retry-After: 1) is retried after that second.
 */
export async function measureLoginCapacity(url: string, db: pg.Client, settings: BenchSettings) {
  const { duration } = settings;
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

/** Ten people with doors, then their bursts over HTTP (at `url`) and through the gateway. */
export async function measureHonestBursts(
  deployment: LocalDeployment,
  db: pg.Client,
  url: string,
  settings: BenchSettings,
) {
  log("ten people logging in at once, quiet and during a login flood");
  const people = [];
  for (let i = 0; i < 10; i++) {
    const email = `burst-${i}-${Date.now()}@example.com`;
    const { userId } = await registerBenchUser(url, email);
    await db.query("select auth.grant_door($1)", [userId]);
    people.push({ email, password: PASSWORD });
  }
  const bursts = await measureBursts(url, people, settings.rounds, log);
  const doors = deployment.doors;
  if (!doors) throw new Error("the benchmark's deployment started no gateway");
  const gatewayFloodOk = await measureGatewayFlood(
    { host: doors.gateway.host, port: doors.gateway.port, database: deployment.database },
    people,
    log,
  );
  return { bursts, gatewayFloodOk };
}
