// PostgreSQL's connection errors, with what to do about them. "database
// "app" does not exist" is exact but leaves the reader to work out the next
// step; the hint names it.

import { parse as parseConnectionString } from "pg-connection-string";

/** The error, its message extended with a hint when one applies. */
export function withConnectionHint(error: unknown, url: string): unknown {
  const { code, message } = error as { code?: string; message?: string };
  if (typeof message !== "string") return error;
  // Read as node-postgres reads it (a socket directory in ?host= included).
  let target: ReturnType<typeof parseConnectionString>;
  try {
    target = parseConnectionString(url);
  } catch {
    return error;
  }
  const database = target.database || "(the user's name)";
  const user = target.user || "(your login)";
  const where = target.host
    ? `${target.host}${target.port ? `:${target.port}` : ""}`
    : "the server";
  const hints: Record<string, string> = {
    "3D000": `create it first, as a role allowed to: createdb -h ${target.host || "<host>"} -p ${target.port || 5432} -U ${target.user || "<role>"} ${database} (or in SQL: create database "${database}")`,
    "28P01": `check the password of role "${user}" in the URL (percent-encode special characters)`,
    "28000": `the server does not let role "${user}" in: check that the role exists and the server's pg_hba.conf`,
    ECONNREFUSED: `nothing listens at ${where}: is PostgreSQL running, and is the host and port right?`,
    ENOTFOUND: `the host name in the URL does not resolve`,
  };
  const hint = code ? hints[code] : undefined;
  if (!hint) return error;
  (error as { message: string }).message = `${message}\n  hint: ${hint}`;
  return error;
}
