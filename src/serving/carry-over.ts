// Watch mode loads every version into a fresh database. Carrying the data
// over from the version it replaces keeps what a developer made by hand
// (users registered a minute ago, their todos, the browser's session) across
// saves: every table whose shape did not change gets the previous version's
// rows instead of the new version's fixtures.
//
// "Shape" is the table's columns in order, with their types, nullability,
// defaults being irrelevant. A table whose shape changed keeps the new
// version's fixtures. Rows are copied with triggers and foreign-key checks
// off (session_replication_role = replica: the copy is a restore, not new
// activity, so an append-only audit trigger must not refuse it), then rows
// whose references now point nowhere are removed, and identity sequences
// move past the copied ids. A table whose rows no longer fit (a new check or
// unique constraint) keeps its fixtures; the summary says so. A table whose
// rows are already the same in the new version (by count and a hash of every
// row) is not copied at all.

import pg from "pg";
import type { Cluster } from "../postgres/cluster.js";

export interface CarryOverSummary {
  /** Tables whose rows came from the previous version, with row counts. */
  carried: Array<{ table: string; rows: number }>;
  /** Tables that kept the new version's rows, and why. */
  notCarried: Array<{ table: string; reason: string }>;
  /** Rows removed because what they referenced was not carried over. */
  orphansRemoved: number;
}

interface TableShape {
  table: string;
  shape: string;
  /** Columns that can be written (generated columns cannot). */
  writable: string[];
}

// Ordinary tables of the application's schemas (not system schemas, not the
// test schema, not tables an extension owns).
const SHAPES = `
  select format('%I.%I', n.nspname, c.relname) as table,
         string_agg(format('%I %s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                           case when a.attnotnull then ' not null' else '' end), ', '
                    order by a.attnum) as shape,
         coalesce(array_agg(quote_ident(a.attname) order by a.attnum)
                    filter (where a.attgenerated = ''), '{}') as writable
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
   where c.relkind = 'r'
     and n.nspname not in ('pg_catalog', 'information_schema', 'tests')
     and n.nspname not like 'pg\\_%'
     and not exists (select from pg_depend d
                      where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
   group by n.nspname, c.relname`;

async function shapes(client: pg.Client): Promise<Map<string, TableShape>> {
  const { rows } = await client.query<TableShape>(SHAPES);
  return new Map(rows.map((row) => [row.table, row]));
}

// Which tables each table references, in the same names as SHAPES.
const REFERENCES = `
  select format('%I.%I', cn.nspname, child.relname) as child,
         format('%I.%I', pn.nspname, parent.relname) as parent
    from pg_constraint c
    join pg_class child on child.oid = c.conrelid
    join pg_namespace cn on cn.oid = child.relnamespace
    join pg_class parent on parent.oid = c.confrelid
    join pg_namespace pn on pn.oid = parent.relnamespace
   where c.contype = 'f' and c.conrelid <> c.confrelid`;

/**
 * The tables that may keep the previous version's rows: same shape, and
 * every table they reference kept too. Rows whose references point at a
 * table that starts again from its fixtures would point at other rows,
 * another user's, say, with the same id.
 */
function keepable(
  candidates: Set<string>,
  references: Array<{ child: string; parent: string }>,
  notCarried: Array<{ table: string; reason: string }>,
): Set<string> {
  const kept = new Set(candidates);
  for (let changed = true; changed; ) {
    changed = false;
    for (const { child, parent } of references) {
      if (kept.has(child) && !kept.has(parent)) {
        kept.delete(child);
        notCarried.push({ table: child, reason: `it references ${parent}, which was not kept` });
        changed = true;
      }
    }
  }
  return kept;
}

async function connect(cluster: Cluster, database: string): Promise<pg.Client> {
  const client = new pg.Client(cluster.connectionConfig(database));
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** Deletes rows whose foreign keys point nowhere; returns how many. Repeats for chains. */
async function removeOrphans(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ statement: string }>(`
    select format('delete from %s child where %s and not exists (select from %s parent where %s)',
                  c.conrelid::regclass,
                  (select string_agg(format('child.%I is not null', a.attname), ' and ')
                     from unnest(c.conkey) k join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k),
                  c.confrelid::regclass,
                  (select string_agg(format('parent.%I = child.%I', pa.attname, ca.attname), ' and ')
                     from unnest(c.conkey, c.confkey) as k(child_key, parent_key)
                     join pg_attribute ca on ca.attrelid = c.conrelid and ca.attnum = k.child_key
                     join pg_attribute pa on pa.attrelid = c.confrelid and pa.attnum = k.parent_key)
           ) as statement
      from pg_constraint c
      join pg_namespace n on n.oid = c.connamespace
     where c.contype = 'f' and n.nspname not in ('pg_catalog', 'information_schema')`);
  let removed = 0;
  for (let pass = 0; pass < 10; pass++) {
    let thisPass = 0;
    for (const { statement } of rows) thisPass += (await client.query(statement)).rowCount ?? 0;
    removed += thisPass;
    if (thisPass === 0) break;
  }
  return removed;
}

/** Copies the rows of unchanged tables from database `from` into database `to`. */
export async function carryOver(
  cluster: Cluster,
  from: string,
  to: string,
): Promise<CarryOverSummary> {
  const source = await connect(cluster, from);
  const target = await connect(cluster, to);
  const summary: CarryOverSummary = { carried: [], notCarried: [], orphansRemoved: 0 };
  try {
    const before = await shapes(source);
    const after = await shapes(target);
    const sameShape = new Set<string>();
    for (const [table, shape] of after) {
      const old = before.get(table);
      if (!old) continue; // a new table: its fixtures are all there is
      if (old.shape !== shape.shape) {
        summary.notCarried.push({ table, reason: "its columns changed" });
      } else {
        sameShape.add(table);
      }
    }
    const references = (await target.query<{ child: string; parent: string }>(REFERENCES)).rows;
    const kept = keepable(sameShape, references, summary.notCarried);
    await target.query("begin");
    await target.query("set local session_replication_role = replica");
    for (const [table, shape] of after) {
      if (!kept.has(table)) continue;
      const columns = shape.writable.join(", ");
      // Rows the new version already has, the same (the module's fixed
      // tables, fixtures nobody touched), need no copy: tens of thousands of
      // them would cost most of a reload.
      const fingerprint = `select count(*)::int as rows,
                                  coalesce(sum(hashtextextended(t::text, 0)), 0)::text as sum
                             from (select ${columns} from only ${table}) t`;
      const [was, is] = await Promise.all(
        [source, target].map(async (client) => {
          const { rows } = await client.query<{ rows: number; sum: string }>(fingerprint);
          return rows[0];
        }),
      );
      if (was && is && was.rows === is.rows && was.sum === is.sum) {
        summary.carried.push({ table, rows: was.rows });
        continue;
      }
      const { rows } = await source.query<{ data: unknown[] }>(
        `select coalesce(json_agg(t), '[]') as data from (select ${columns} from only ${table}) t`,
      );
      const data = rows[0]?.data ?? [];
      await target.query("savepoint carry");
      try {
        await target.query(`delete from only ${table}`);
        await target.query(
          `insert into ${table} (${columns}) overriding system value
           select ${columns} from json_populate_recordset(null::${table}, $1)`,
          [JSON.stringify(data)],
        );
        await target.query("release savepoint carry");
        summary.carried.push({ table, rows: data.length });
      } catch (error) {
        await target.query("rollback to savepoint carry");
        summary.notCarried.push({ table, reason: (error as Error).message });
      }
    }
    summary.orphansRemoved = await removeOrphans(target);
    // Identity and serial columns continue after the copied ids.
    await target.query(`
      do $seq$
      declare
        col record;
        top bigint;
      begin
        for col in
          select format('%I.%I', n.nspname, c.relname) as tbl, a.attname,
                 pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) as seq
            from pg_class c
            join pg_namespace n on n.oid = c.relnamespace
            join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
           where c.relkind = 'r'
             and pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) is not null
        loop
          execute format('select max(%I)::bigint from %s', col.attname, col.tbl) into top;
          if top is not null then
            perform setval(col.seq, top);
          end if;
        end loop;
      end
      $seq$`);
    await target.query("commit");
  } catch (error) {
    await target.query("rollback").catch(() => {});
    throw error;
  } finally {
    await source.end().catch(() => {});
    await target.end().catch(() => {});
  }
  return summary;
}

/** "kept 14 rows of 5 tables; app.todos changed shape" for the reload line. */
export function describeCarryOver(summary: CarryOverSummary): string {
  const rows = summary.carried.reduce((sum, table) => sum + table.rows, 0);
  const parts = [
    `kept ${rows} row${rows === 1 ? "" : "s"} of ${summary.carried.length} table${summary.carried.length === 1 ? "" : "s"}`,
  ];
  for (const { table, reason } of summary.notCarried) parts.push(`${table} not kept (${reason})`);
  if (summary.orphansRemoved > 0) {
    parts.push(`${summary.orphansRemoved} row(s) dropped that referenced rows no longer there`);
  }
  return parts.join("; ");
}
