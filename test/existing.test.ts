// An existing server instead of a throwaway cluster (TEST_DATABASE_URL):
// the app runs in a database of its own, and stopping removes that database
// and the roles the document created.

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Cluster, startCluster } from "../src/cluster.js";
import { deployLocal } from "../src/deploy.js";
import { freePort } from "../src/postgrest.js";

let server: Cluster;
let url: string;

beforeAll(async () => {
  // Stands in for "a PostgreSQL server somewhere": reached over TCP only.
  server = await startCluster({ tcpPort: await freePort() });
  url = `postgres://postgres@127.0.0.1:${server.port}/postgres`;
});

afterAll(async () => {
  await server?.stop();
});

async function serverQuery(sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

describe("deploying onto an existing server", () => {
  it("serves the app from its own database, then removes the database and the new roles", async () => {
    const deployment = await deployLocal({
      existingServer: url,
      database: "pgs_existing_test",
      port: await freePort(),
    });
    try {
      expect((await deployment.pgtap)?.ok).toBe(true);
      const login = await fetch(`${deployment.url}/rpc/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
      });
      expect(login.status).toBe(200);
      // PostgREST logged in over TCP as the authenticator, with a password.
      expect(deployment.cluster.psqlCommand(deployment.database)).not.toContain(":@");
    } finally {
      await deployment.stop();
    }
    const databases = await serverQuery(
      "select datname from pg_database where datname = 'pgs_existing_test'",
    );
    expect(databases.rowCount).toBe(0);
    const roles = await serverQuery(
      "select rolname from pg_roles where rolname in ('authenticator', 'anonymous', 'webuser', 'app_owner', 'auth_owner', 'api_owner')",
    );
    expect(roles.rows).toEqual([]);
  });
});
