// An existing PostgreSQL server in place of a throwaway cluster: the test
// suite (TEST_DATABASE_URL) and deploy-local create their own database on it
// and drop it afterwards.
//
// A server we are a guest on must look exactly as we found it when we leave.
// The document touches cluster-wide state: it creates roles (authenticator,
// anonymous, webuser and the owners), grants memberships, comments on roles.
// So the server's shared state (roles with their attributes, passwords and
// comments, memberships, per-role settings, databases) is recorded before we
// start and put back on stop: roles we created are dropped, and whatever the
// document changed about roles that were already there is undone.
//
// PostgREST never logs in as a pre-existing `authenticator`, whose password
// belongs to someone else (another PostgREST may share the server): it logs
// in as a login role of our own, `pgs_login_<random>`, a member of
// authenticator with a random password, dropped on stop.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { registerCleanup } from "../cleanup.js";
import { scramVerifier } from "../gateway/scram.js";
import type { Cluster } from "./cluster.js";
import { withClient } from "./db.js";

function query<T extends pg.QueryResultRow>(
  config: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
): Promise<pg.QueryResult<T>> {
  return withClient(config, (client) => client.query<T>(sql, params));
}

/** The cluster-wide state a guest must leave as it found it. */
export interface SharedState {
  roles: Record<string, { attributes: unknown[]; comment: string | null }>;
  /** Password hashes by role; null when we may not read them (not a superuser). */
  passwords: Record<string, string | null> | null;
  /** [role, member, admin option] */
  memberships: Array<[string, string, boolean]>;
  /** [database ("" for all), role ("" for all), settings] */
  settings: Array<[string, string, string[]]>;
  /** [name, owner, acl] */
  databases: Array<[string, string, string | null]>;
}

const SHARED_STATE_QUERY = `
  select json_build_object(
    'roles', (select json_object_agg(r.rolname, json_build_object(
                'attributes', json_build_array(r.rolsuper, r.rolinherit, r.rolcreaterole,
                  r.rolcreatedb, r.rolcanlogin, r.rolreplication, r.rolbypassrls,
                  r.rolconnlimit, r.rolvaliduntil),
                'comment', shobj_description(r.oid, 'pg_authid')))
              from pg_roles r),
    'passwords', case when (select rolsuper from pg_roles where rolname = current_user)
                   then (select json_object_agg(a.rolname, a.rolpassword) from pg_authid a) end,
    'memberships', (select coalesce(json_agg(json_build_array(r.rolname, m.rolname, a.admin_option)
                      order by r.rolname, m.rolname), '[]')
                      from pg_auth_members a
                      join pg_roles r on r.oid = a.roleid
                      join pg_roles m on m.oid = a.member),
    'settings', (select coalesce(json_agg(json_build_array(coalesce(d.datname, ''),
                   coalesce(r.rolname, ''), s.setconfig) order by 1), '[]')
                   from pg_db_role_setting s
                   left join pg_database d on d.oid = s.setdatabase
                   left join pg_roles r on r.oid = s.setrole),
    'databases', (select json_agg(json_build_array(d.datname, pg_get_userbyid(d.datdba), d.datacl::text)
                    order by d.datname) from pg_database d)
  ) as state`;

export async function readSharedState(config: pg.ClientConfig): Promise<SharedState> {
  const result = await query<{ state: SharedState }>(config, SHARED_STATE_QUERY);
  return result.rows[0]?.state as SharedState;
}

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;
const literal = (value: string) => `'${value.replaceAll("'", "''")}'`;
const ROLE_ATTRIBUTES = [
  ["SUPERUSER", "NOSUPERUSER"],
  ["INHERIT", "NOINHERIT"],
  ["CREATEROLE", "NOCREATEROLE"],
  ["CREATEDB", "NOCREATEDB"],
  ["LOGIN", "NOLOGIN"],
  ["REPLICATION", "NOREPLICATION"],
  ["BYPASSRLS", "NOBYPASSRLS"],
] as const;

/**
 * The statements that put `before` back, for roles and databases that existed
 * then (what did not exist then has been dropped already). Only what this run
 * changed is put back: what differs between `before` and `ours` (the state
 * once our changes were made) and has not been changed again since (`now`
 * still equals `ours` there). A password a DBA rotated during the run stays.
 */
export function restoreStatements(
  before: SharedState,
  ours: SharedState,
  now: SharedState,
): string[] {
  const statements: string[] = [];
  const existed = (role: string) => role in before.roles && role in now.roles;
  /** Changed by us, and left as we left it. */
  const undo = (then: unknown, left: unknown, current: unknown) =>
    JSON.stringify(then) !== JSON.stringify(left) &&
    JSON.stringify(left) === JSON.stringify(current);
  for (const [role, then] of Object.entries(before.roles)) {
    const current = now.roles[role];
    const left = ours.roles[role];
    if (!current || !left) continue;
    const changes: string[] = [];
    ROLE_ATTRIBUTES.forEach(([on, off], i) => {
      if (undo(then.attributes[i], left.attributes[i], current.attributes[i])) {
        changes.push(then.attributes[i] ? on : off);
      }
    });
    if (undo(then.attributes[7], left.attributes[7], current.attributes[7])) {
      changes.push(`CONNECTION LIMIT ${Number(then.attributes[7])}`);
    }
    if (changes.length > 0) statements.push(`alter role ${ident(role)} ${changes.join(" ")}`);
    if (undo(then.comment, left.comment, current.comment)) {
      statements.push(
        `comment on role ${ident(role)} is ${then.comment === null ? "null" : literal(then.comment)}`,
      );
    }
    const password = before.passwords?.[role];
    if (
      before.passwords &&
      ours.passwords &&
      now.passwords &&
      undo(password ?? null, ours.passwords[role] ?? null, now.passwords[role] ?? null)
    ) {
      // A stored hash given back as the password restores it exactly.
      statements.push(
        `alter role ${ident(role)} password ${password == null ? "null" : literal(password)}`,
      );
    }
  }
  const key = (m: [string, string, boolean]) => `${m[0]}\0${m[1]}`;
  const thenMembers = new Map(before.memberships.map((m) => [key(m), m]));
  const ourMembers = new Map(ours.memberships.map((m) => [key(m), m]));
  const nowMembers = new Map(now.memberships.map((m) => [key(m), m]));
  for (const [k, [role, member]] of nowMembers) {
    if (!thenMembers.has(k) && ourMembers.has(k) && existed(role) && existed(member)) {
      statements.push(`revoke ${ident(role)} from ${ident(member)} cascade`);
    }
  }
  for (const [k, [role, member, admin]] of thenMembers) {
    const left = ourMembers.get(k);
    const current = nowMembers.get(k);
    if (!existed(role) || !existed(member)) continue;
    if (!undo(admin, left?.[2] ?? null, current?.[2] ?? null)) continue;
    if (current && !admin)
      statements.push(`revoke admin option for ${ident(role)} from ${ident(member)}`);
    else
      statements.push(
        `grant ${ident(role)} to ${ident(member)}${admin ? " with admin option" : ""}`,
      );
  }
  const settingKey = (s: [string, string, string[]]) => `${s[0]}\0${s[1]}`;
  const thenSettings = new Map(before.settings.map((s) => [settingKey(s), s]));
  const ourSettings = new Map(ours.settings.map((s) => [settingKey(s), s]));
  const nowSettings = new Map(now.settings.map((s) => [settingKey(s), s]));
  for (const k of new Set([...thenSettings.keys(), ...nowSettings.keys()])) {
    const then = thenSettings.get(k);
    const current = nowSettings.get(k);
    const [database, role] = (then ?? current) as [string, string, string[]];
    if (role !== "" && !existed(role)) continue;
    if (database !== "" && !before.databases.some(([name]) => name === database)) continue;
    if (!undo(then?.[2] ?? [], ourSettings.get(k)?.[2] ?? [], current?.[2] ?? [])) continue;
    const target =
      role === ""
        ? `alter database ${ident(database)}`
        : `alter role ${ident(role)}${database === "" ? "" : ` in database ${ident(database)}`}`;
    statements.push(`${target} reset all`);
    for (const setting of then?.[2] ?? []) {
      const at = setting.indexOf("=");
      statements.push(`${target} set ${setting.slice(0, at)} = ${literal(setting.slice(at + 1))}`);
    }
  }
  return statements;
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
  const before = await readSharedState(base);
  const loginRole = `pgs_login_${randomBytes(6).toString("hex")}`;
  const password = randomBytes(18).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "pgs-existing-"));
  const created = new Set<string>();
  /** The shared state once our changes were made (see restoreStatements). */
  let ours: SharedState | undefined;

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
        if (rolname in before.roles || rolname.startsWith("pg_")) continue;
        await query(base, `drop role if exists ${ident(rolname)}`).catch(() => {});
      }
      const now = await readSharedState(base);
      for (const statement of restoreStatements(before, ours ?? now, now)) {
        await query(base, statement);
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
      const asLogin = user === "authenticator";
      target.username = encodeURIComponent(asLogin ? loginRole : user);
      target.password = asLogin ? password : target.password;
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
    prepareAuthenticator: async () => {
      // SET ROLE follows memberships through authenticator to anonymous and webuser.
      // The verifier only: the password reaches no statement and no log.
      const verifier = await scramVerifier(password);
      await query(base, `create role ${loginRole} login noinherit password ${literal(verifier)}`);
      await query(base, `grant authenticator to ${loginRole}`);
      // Role settings apply to the role that logs in: PostgREST's login gets
      // the authenticator's (the statement timeout, no parameters in the log).
      const { rows } = await query<{ setting: string }>(
        base,
        `select unnest(setconfig) as setting from pg_db_role_setting
          where setrole = 'authenticator'::regrole and setdatabase = 0`,
      );
      for (const { setting } of rows) {
        const at = setting.indexOf("=");
        await query(
          base,
          `alter role ${loginRole} set ${setting.slice(0, at)} = ${literal(setting.slice(at + 1))}`,
        );
      }
      ours = await readSharedState(base);
    },
  };
}
