// What the door tests ask of PostgreSQL itself: whether a connection's
// backend is still there, and a statement PostgreSQL's own cancel cannot stop.

import type pg from "pg";
import { query } from "./database.js";

/** A statement that PostgreSQL's own cancel cannot stop: it catches query_canceled. */
export const IGNORES_CANCEL = `do $$ begin
  loop
    begin
      perform pg_sleep(0.2);
    exception when query_canceled then
      null;
    end;
  end loop;
end $$`;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `condition` holds, up to `ms`. */
export async function within(
  ms: number,
  condition: () => boolean | Promise<boolean>,
): Promise<void> {
  const started = performance.now();
  while (performance.now() - started < ms) {
    if (await condition()) return;
    await sleep(25);
  }
  throw new Error(`not within ${ms} ms`);
}

export async function backendAlive(pid: number): Promise<boolean> {
  const [row] = await query<{ n: number }>(
    "select count(*)::int as n from pg_stat_activity where pid = $1",
    [pid],
  );
  return row?.n === 1;
}

export async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
  return rows[0]?.pid as number;
}
