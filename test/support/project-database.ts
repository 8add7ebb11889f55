// A fresh database on a test file's cluster, with a project directory of its
// own (and an empty migrations/ in it), for tests that run migrate.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import type { Cluster } from "../../src/postgres/cluster.js";

export interface ProjectDatabase {
  database: string;
  dir: string;
  /** The superuser's URL of the database. */
  url: string;
  /** One statement on a connection of its own. */
  query: <T extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    values?: unknown[],
  ) => Promise<pg.QueryResult<T>>;
}

/** Creates database `name` and the directory `work/name`. */
export async function projectDatabase(
  cluster: Cluster,
  work: string,
  name: string,
): Promise<ProjectDatabase> {
  const admin = new pg.Client(cluster.connectionConfig("postgres"));
  await admin.connect();
  try {
    await admin.query(`create database ${admin.escapeIdentifier(name)}`);
  } finally {
    await admin.end();
  }
  const dir = join(work, name);
  mkdirSync(join(dir, "migrations"), { recursive: true });
  const query = async <T extends pg.QueryResultRow>(sql: string, values: unknown[] = []) => {
    const client = new pg.Client(cluster.connectionConfig(name));
    await client.connect();
    try {
      return await client.query<T>(sql, values);
    } finally {
      await client.end();
    }
  };
  return { database: name, dir, url: cluster.uri("postgres", name), query };
}
