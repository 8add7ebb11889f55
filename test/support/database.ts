// Direct database access for HTTP tests: the superuser connection that the
// global setup provides, used to look behind the API (is the token stored?
// did a refused request change anything?) and to move time (expire a
// session by moving its timestamps back, instead of waiting 30 minutes).

import type pg from "pg";
import { withDatabase } from "../../src/testing/vitest.js";

export { withDatabase };

/** One query on a short-lived connection. */
export function query<R extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
  config?: pg.ClientConfig,
): Promise<R[]> {
  return withDatabase(async (db) => (await db.query<R>(sql, params)).rows, config);
}

/** Every column of every table the application created (not the catalogs). */
export async function userColumns(
  db: pg.Client,
): Promise<{ schema: string; table: string; column: string; type: string }[]> {
  const { rows } = await db.query(`
    select n.nspname as schema, c.relname as "table", a.attname as column,
           format_type(a.atttypid, a.atttypmod) as type
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid
     where c.relkind in ('r', 'p', 'm')
       and n.nspname not in ('pg_catalog', 'information_schema')
       and n.nspname not like 'pg\\_toast%'
       and a.attnum > 0
       and not a.attisdropped
     order by 1, 2, a.attnum`);
  return rows;
}

/**
 * The columns (as "schema.table.column") where any row contains one of the
 * `texts` (case-insensitively, in the column's text form, which is hex for
 * bytea) or one of the `bytes` (inside bytea columns).
 */
export async function columnsContaining(
  db: pg.Client,
  texts: string[],
  bytes: Buffer[] = [],
): Promise<string[]> {
  const found: string[] = [];
  const patterns = texts.map((t) => `%${t.toLowerCase().replace(/[\\%_]/g, "\\$&")}%`);
  for (const col of await userColumns(db)) {
    const table = `${db.escapeIdentifier(col.schema)}.${db.escapeIdentifier(col.table)}`;
    const column = db.escapeIdentifier(col.column);
    const asText = await db.query(
      `select 1 from ${table} where lower(${column}::text) like any($1::text[]) limit 1`,
      [patterns],
    );
    let hit = (asText.rowCount ?? 0) > 0;
    if (!hit && col.type === "bytea" && bytes.length > 0) {
      const asBytes = await db.query(
        `select 1 from ${table} where exists (
           select from unnest($1::bytea[]) needle where position(needle in ${column}) > 0
         ) limit 1`,
        [bytes],
      );
      hit = (asBytes.rowCount ?? 0) > 0;
    }
    if (hit) found.push(`${col.schema}.${col.table}.${col.column}`);
  }
  return found;
}

/** Row counts of every application table, to show a refused request changed nothing. */
export async function rowCounts(db: pg.Client): Promise<Record<string, number>> {
  const tables = new Set((await userColumns(db)).map((c) => `${c.schema}.${c.table}`));
  const counts: Record<string, number> = {};
  for (const name of tables) {
    const [schema = "", table = ""] = name.split(".");
    const { rows } = await db.query<{ n: string }>(
      `select count(*) as n from ${db.escapeIdentifier(schema)}.${db.escapeIdentifier(table)}`,
    );
    counts[name] = Number(rows[0]?.n);
  }
  return counts;
}

/** The idle timeout the deployment runs with, in seconds (the cookie's Max-Age). */
export async function idleTimeoutSeconds(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ seconds: string }>(
    "select extract(epoch from idle_timeout) as seconds from auth.settings",
  );
  return Number(rows[0]?.seconds);
}

/** Whether the deployment sends `Secure` cookies (deploy-local turns it off for plain http). */
export async function cookieSecure(db: pg.Client): Promise<boolean> {
  const { rows } = await db.query<{ secure: boolean }>(
    "select cookie_secure as secure from auth.settings",
  );
  return rows[0]?.secure ?? true;
}
