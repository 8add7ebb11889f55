// Knowledge of this particular application that several test files share:
// its status conventions, its todos, and where it keeps sessions and audit
// rows. A user adapting the suite to their own app edits this file.
//
// What the helpers assume of the schema (checked when a test uses them):
// auth.users(user_id, email, ...), app.todos(todo_id, user_id, description,
// done, public, ...), auth.sessions(user_id, created..., other timestamps),
// auth.audit(event, user_id, user_agent, ...). The API's todos expose
// todo_id, user_id, description, done and public.

import type pg from "pg";
import { expect } from "vitest";
import { SESSION_COOKIE, type TestClient, type TestResponse } from "./client.js";

/** CONTRACT.md: "2xx" means 200 or 204, whichever PostgREST gives. */
export function expect2xx(response: TestResponse): void {
  expect([200, 204], shown(response)).toContain(response.status);
}

/** CONTRACT.md: "not allowed" means 401 or 403. */
export function expectNotAllowed(response: TestResponse): void {
  expect([401, 403], shown(response)).toContain(response.status);
}

export function expectStatus(response: TestResponse, status: number): void {
  expect(response.status, shown(response)).toBe(status);
}

/** A client error the caller can act on: 4xx with PostgREST's JSON error and a message. */
export function expectClientError(response: TestResponse, status?: number): void {
  if (status === undefined) {
    expect(response.status, shown(response)).toBeGreaterThanOrEqual(400);
    expect(response.status, shown(response)).toBeLessThan(500);
  } else {
    expectStatus(response, status);
  }
}

/** Failure messages that show what the server said, not just the status. */
export function shown(response: TestResponse): string {
  return `HTTP ${response.status}: ${response.text.slice(0, 500)}`;
}

/** The session cookie a response set, asserting it set a live one. */
export function newSessionToken(response: TestResponse): string {
  const cookie = response.sessionCookie;
  expect(cookie, `no session cookie in ${shown(response)}`).toBeDefined();
  expect(cookie?.value).not.toBe("");
  return cookie?.value ?? "";
}

/** Whether a response cleared the session cookie the way CONTRACT.md says. */
export function expectSessionCookieCleared(response: TestResponse): void {
  const cookie = response.sessionCookie;
  expect(cookie, `no Set-Cookie for session_token in ${shown(response)}`).toBeDefined();
  expect(cookie?.value).toBe("");
  expect(cookie?.maxAge).toBe(0);
  expect(cookie?.path).toBe("/");
}

/** No response may set a session where the contract says "no cookie". */
export function expectNoSessionSet(response: TestResponse): void {
  const setting = response.setCookies.filter((c) => c.name === SESSION_COOKIE && c.value !== "");
  expect(setting, shown(response)).toEqual([]);
}

export interface Todo {
  todo_id: number;
  user_id: number | string;
  description: string;
  done: boolean;
  public: boolean;
}

const RETURN_REPRESENTATION = { Prefer: "return=representation" };

/** Creates a todo through the API and returns the row PostgREST gave back. */
export async function createTodo(
  client: TestClient,
  description: string,
  isPublic = false,
): Promise<Todo> {
  const response = await client.post(
    "/todos",
    { description, public: isPublic },
    RETURN_REPRESENTATION,
  );
  expectStatus(response, 201);
  const [row] = response.body as Todo[];
  if (row === undefined) throw new Error(`POST /todos returned no row: ${response.text}`);
  return row;
}

export { RETURN_REPRESENTATION };

/** A todo as stored, read past RLS with the superuser connection. */
export async function storedTodo(
  db: pg.Client,
  todoId: number,
): Promise<Record<string, unknown> | undefined> {
  const { rows } = await db.query(`select * from ${TODOS_TABLE} where todo_id = $1`, [todoId]);
  return rows[0];
}

export const USERS_TABLE = "auth.users";
export const TODOS_TABLE = "app.todos";
export const SESSIONS_TABLE = "auth.sessions";
export const AUDIT_TABLE = "auth.audit";

/** Number of users registered with this email, whatever its case. */
export async function usersWithEmail(db: pg.Client, email: string): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `select count(*) as n from ${USERS_TABLE} where lower(email::text) = lower($1)`,
    [email],
  );
  return Number(rows[0]?.n);
}

/**
 * Moves every timestamp of a user's sessions back by `interval`: the session
 * looks as if it had been created, used and renewed that much earlier. This is
 * how the tests reach "30 minutes idle" or "25 hours old" without waiting.
 */
export async function ageSessions(
  db: pg.Client,
  userId: number | string,
  interval: string,
  columns: "all" | "created" = "all",
): Promise<void> {
  const { rows } = await db.query<{ column: string }>(
    `select attname as column from pg_attribute
      where attrelid = $1::regclass and attnum > 0 and not attisdropped
        and atttypid in ('timestamptz'::regtype, 'timestamp'::regtype)`,
    [SESSIONS_TABLE],
  );
  const chosen = rows.map((r) => r.column).filter((c) => columns === "all" || /^created/.test(c));
  if (chosen.length === 0) throw new Error(`no ${columns} timestamp columns in ${SESSIONS_TABLE}`);
  const sets = chosen
    .map((c) => `${db.escapeIdentifier(c)} = ${db.escapeIdentifier(c)} - $2::interval`)
    .join(", ");
  const result = await db.query(`update ${SESSIONS_TABLE} set ${sets} where user_id = $1`, [
    userId,
    interval,
  ]);
  if ((result.rowCount ?? 0) === 0) throw new Error(`user ${userId} has no sessions to age`);
}

/** How many stored todos match, read past RLS: for "nothing was created" checks. */
export async function countTodos(
  db: pg.Client,
  filter: { userId?: number | string; description?: string },
): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from ${TODOS_TABLE}
      where ($1::text is null or user_id::text = $1::text)
        and ($2::text is null or description = $2::text)`,
    [filter.userId ?? null, filter.description ?? null],
  );
  return rows[0]?.n ?? 0;
}
