// An existing PostgreSQL server in place of a throwaway cluster: the test
// suite (TEST_DATABASE_URL) and deploy-local (--database-url) create their
// own database on it and drop it afterwards.
//
// The document creates cluster-wide roles (authenticator, anonymous, webuser,
// app_owner, auth_owner, api_owner). Those that did not exist before are
// dropped again on stop; those that did are left as they were, except that
// the authenticator gets a random password so that PostgREST can log in over
// TCP whatever the server's authentication method.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { registerCleanup } from "./cleanup.js";
import type { Cluster } from "./cluster.js";

async function query<T extends pg.QueryResultRow>(
  config: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
): Promise<pg.QueryResult<T>> {
  const client = new pg.Client(config);
  client.on("error", () => {});
  await client.connect();
  try {
    return await client.query<T>(sql, params);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Uses the server at `url` (a superuser, or a role with CREATEDB and
 * CREATEROLE) as the cluster. Databases created through it whose names start
 * with `pgs_` are dropped on stop.
 */
export async function useExistingServer(url: string): Promise<Cluster> {
  const parsed = new URL(url);
  const adminDatabase = decodeURIComponent(parsed.pathname.slice(1)) || "postgres";
  const base: pg.ClientConfig = { connectionString: url };
  const version = await query<{ v: string }>(base, "show server_version");
  const versionText = version.rows[0]?.v ?? "0";
  const rolesBefore = new Set(
    (await query<{ rolname: string }>(base, "select rolname from pg_roles")).rows.map(
      (r) => r.rolname,
    ),
  );
  const password = randomBytes(18).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "pgs-existing-"));
  const created = new Set<string>();

  const connectionConfig = (database = adminDatabase): pg.ClientConfig => {
    const copy = new URL(url);
    copy.pathname = `/${encodeURIComponent(database)}`;
    return { connectionString: copy.toString() };
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const databases = await query<{ datname: string }>(
        base,
        "select datname from pg_database where datname like 'pgs\\_%'",
      );
      for (const { datname } of databases.rows) {
        if (!created.has(datname)) continue;
        await query(
          base,
          `drop database if exists "${datname.replaceAll('"', '""')}" with (force)`,
        );
      }
      const roles = await query<{ rolname: string }>(base, "select rolname from pg_roles");
      for (const { rolname } of roles.rows) {
        if (rolesBefore.has(rolname) || rolname.startsWith("pg_")) continue;
        await query(base, `drop role if exists "${rolname.replaceAll('"', '""')}"`).catch(() => {});
      }
      rmSync(dir, { recursive: true, force: true });
      unregister();
    })();
    return stopping;
  };
  const unregister = registerCleanup({
    name: `databases on ${parsed.host}`,
    stop,
    lastResort: () => rmSync(dir, { recursive: true, force: true }),
  });

  return {
    dir,
    socketDir: "",
    port: Number(parsed.port || 5432),
    tcp: true,
    superuser: decodeURIComponent(parsed.username),
    bin: {
      binDir: `server at ${parsed.host}`,
      source: "option",
      version: versionText,
      major: Number(versionText.split(".")[0]),
    },
    logFile: join(dir, "(server log is on the server)"),
    connectionConfig,
    uri: (user, database) => {
      const target = new URL(url);
      target.username = encodeURIComponent(user);
      target.password = user === "authenticator" ? password : target.password;
      target.pathname = `/${encodeURIComponent(database)}`;
      return target.toString();
    },
    // Without the password: secrets stay out of what we print.
    psqlCommand: (database = adminDatabase) => {
      const shown = new URL(connectionConfig(database).connectionString as string);
      shown.password = "";
      return `psql "${shown.toString()}"`;
    },
    restart: async () => {
      throw new Error("an existing server cannot be restarted from here");
    },
    stop,
    noteDatabase: (name) => {
      created.add(name);
    },
    prepareAuthenticator: async (database) => {
      await query(connectionConfig(database), `alter role authenticator password '${password}'`);
    },
  };
}
