// An existing server instead of a throwaway cluster (TEST_DATABASE_URL):
// the app runs in a database of its own, and stopping removes that database
// and the roles the document created.

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeFailures, type PgTapRun } from "../src/document/pgtap.js";
import { freePort } from "../src/net.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";
import { deployLocal } from "../src/serving/deploy.js";

let server: Cluster;
let url: string;

beforeAll(async () => {
  // Stands in for "a PostgreSQL server somewhere": reached over TCP only, and
  // checking passwords (a throwaway cluster with a TCP port always does).
  server = await startCluster({ tcpPort: await freePort() });
  url = `postgres://postgres:${server.tcpPassword}@127.0.0.1:${server.port}/postgres`;
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

/**
 * Everything cluster-wide, as rows of text: roles (attributes and password
 * hashes), memberships, comments on roles, per-role and per-database
 * settings, databases. Written independently of src/existing.ts.
 */
async function clusterState(): Promise<Record<string, string[]>> {
  const rows = async (sql: string) =>
    (await serverQuery(sql)).rows.map((row) => JSON.stringify(row)).sort();
  return {
    roles: await rows(
      "select rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolpassword, rolvaliduntil from pg_authid",
    ),
    memberships: await rows(
      "select r.rolname as role, m.rolname as member, a.admin_option from pg_auth_members a join pg_authid r on r.oid = a.roleid join pg_authid m on m.oid = a.member",
    ),
    comments: await rows(
      "select r.rolname, d.description from pg_shdescription d join pg_authid r on r.oid = d.objoid",
    ),
    settings: await rows(
      "select coalesce(r.rolname, '*') as role, coalesce(d.datname, '*') as db, s.setconfig from pg_db_role_setting s left join pg_authid r on r.oid = s.setrole left join pg_database d on d.oid = s.setdatabase",
    ),
    databases: await rows("select datname, datacl from pg_database"),
  };
}

describe("deploying onto an existing server", () => {
  it("leaves a server that already has the roles exactly as it found it (passwords, memberships, comments, settings)", async () => {
    // Another application's PostgREST already uses this server's authenticator.
    await serverQuery(`
      create role authenticator login noinherit password 'their own password';
      create role anonymous nologin;
      comment on role anonymous is 'theirs';
      alter role authenticator set statement_timeout = '5s';
    `);
    await serverQuery("create database their_app");
    const before = await clusterState();
    const deployment = await deployLocal({
      existingServer: url,
      database: "pgs_existing_shared",
      port: await freePort(),
    });
    try {
      const pgtap = await deployment.pgtap;
      expect(pgtap?.ok, describeFailures(pgtap as PgTapRun).join("\n")).toBe(true);
      const login = await fetch(`${deployment.url}/rpc/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
      });
      expect(login.status).toBe(200);
      // Meanwhile the other application can still log in with its password.
      const theirs = new pg.Client({
        connectionString: `postgres://authenticator:their%20own%20password@127.0.0.1:${server.port}/their_app`,
      });
      await theirs.connect();
      await theirs.end();
    } finally {
      await deployment.stop();
    }
    expect(await clusterState()).toEqual(before);
    await serverQuery("drop database their_app");
    await serverQuery("drop role authenticator");
    await serverQuery("drop role anonymous");
  });

  it("puts back only what it changed: a password a DBA rotates meanwhile stays", async () => {
    await serverQuery(`
      create role authenticator login noinherit password 'their own password';
      create role anonymous nologin;
      comment on role anonymous is 'theirs';
    `);
    const deployment = await deployLocal({
      existingServer: url,
      database: "pgs_existing_rotated",
      port: await freePort(),
      tests: false,
    });
    try {
      // PostgREST's own login role has the authenticator's protections.
      const login = await serverQuery(`
        select s.setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
         where r.rolname like 'pgs\\_login\\_%'`);
      expect(login.rows[0]?.setconfig).toEqual(
        expect.arrayContaining([
          "statement_timeout=5s",
          "log_parameter_max_length=0",
          "log_parameter_max_length_on_error=0",
        ]),
      );
      // Meanwhile a DBA rotates the other application's password and comments a role.
      await serverQuery(`
        alter role authenticator password 'rotated by the DBA';
        comment on role anonymous is 'the DBA''s';
      `);
    } finally {
      await deployment.stop();
    }
    const theirs = new pg.Client({
      connectionString: `postgres://authenticator:rotated%20by%20the%20DBA@127.0.0.1:${server.port}/postgres`,
    });
    await theirs.connect();
    await theirs.end();
    const comment = await serverQuery(
      "select shobj_description('anonymous'::regrole, 'pg_authid') as c",
    );
    expect(comment.rows[0]?.c).toBe("the DBA's");
    await serverQuery("drop role authenticator");
    await serverQuery("drop role anonymous");
  });

  it("serves the app from its own database, then removes the database and the new roles", async () => {
    const deployment = await deployLocal({
      existingServer: url,
      database: "pgs_existing_test",
      port: await freePort(),
    });
    try {
      const pgtap = await deployment.pgtap;
      expect(pgtap?.ok, describeFailures(pgtap as PgTapRun).join("\n")).toBe(true);
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
