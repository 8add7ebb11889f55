// CONTRACT.md, row by row, through the door a browser uses: real HTTP to the
// real PostgREST that the global setup started. Each `describe` is one row of
// the endpoint table; each failure status the row names has its own test.
//
// Every test makes its own users (unique per run), so tests run in any order
// and the file passes again against the same instance.

import { beforeAll, describe, expect, inject, it } from "vitest";
import {
  AUDIT_TABLE,
  countTodos,
  createTodo,
  expect2xx,
  expectClientError,
  expectNoSessionSet,
  expectNotAllowed,
  expectSessionCookieCleared,
  expectStatus,
  newSessionToken,
  RETURN_REPRESENTATION,
  storedTodo,
  type Todo,
  USERS_TABLE,
  usersWithEmail,
} from "./support/app.js";
import { newUser, PASSWORD, type SetCookie, TestClient, uniqueEmail } from "./support/client.js";
import { cookieSecure, idleTimeoutSeconds, withDatabase } from "./support/database.js";

const api = inject("apiUrl");
const browser = () => new TestClient(api);

let idleSeconds: number;
let secure: boolean;

beforeAll(async () => {
  await withDatabase(async (db) => {
    idleSeconds = await idleTimeoutSeconds(db);
    secure = await cookieSecure(db);
  });
});

/** CONTRACT.md "Session cookie": the attributes on every cookie that sets a session. */
function expectSessionCookieAttributes(cookie: SetCookie | undefined): void {
  expect(cookie).toBeDefined();
  if (!cookie) return;
  // 256 bits in base64url without padding is 43 characters.
  expect(cookie.value).toMatch(/^[A-Za-z0-9_-]{43,}$/);
  expect(cookie.path).toBe("/");
  expect(cookie.httpOnly).toBe(true);
  expect(cookie.sameSite?.toLowerCase()).toBe("lax");
  expect(cookie.maxAge).toBe(idleSeconds);
  expect(cookie.secure).toBe(secure);
}

describe("POST /rpc/register", () => {
  it("registers, sets a session cookie and logs the new user in", async () => {
    const client = browser();
    const email = uniqueEmail("register");
    const response = await client.register(email, "Ada Lovelace", PASSWORD);
    expect2xx(response);
    expectSessionCookieAttributes(response.sessionCookie);
    const me = await client.currentUser();
    expectStatus(me, 200);
    expect(me.body).toMatchObject({ email, name: "Ada Lovelace" });
  });

  it.each([
    ["empty", ""],
    ["no at sign", "not-an-email"],
    ["no domain", "missing-domain@"],
    ["no local part", "@example.com"],
  ])("answers 400 for an invalid email (%s)", async (_, email) => {
    const client = browser();
    const response = await client.register(email, "Someone", PASSWORD);
    expectClientError(response, 400);
    expect(response.body.message).toEqual(expect.any(String));
    expectNoSessionSet(response);
  });

  it("answers 400 for an empty name", async () => {
    const email = uniqueEmail("noname");
    const response = await browser().register(email, "", PASSWORD);
    expectClientError(response, 400);
    expectNoSessionSet(response);
    expect(await withDatabase((db) => usersWithEmail(db, email))).toBe(0);
  });

  it("answers 400 for a password shorter than 8 characters, counting characters, not bytes", async () => {
    // 7 characters but 14 bytes: a byte count would wrongly accept it.
    for (const password of ["1234567", "ééééééé"]) {
      const email = uniqueEmail("short");
      const response = await browser().register(email, "Short", password);
      expectClientError(response, 400);
      expect(await withDatabase((db) => usersWithEmail(db, email))).toBe(0);
    }
  });

  it("accepts exactly 8 characters and exactly 72 bytes", async () => {
    for (const password of ["12345678", "x".repeat(72), "é".repeat(36), "ü".repeat(8)]) {
      const response = await browser().register(uniqueEmail("bounds"), "Bounds", password);
      expect2xx(response);
    }
  });

  it("answers 400 for a password longer than 72 bytes, counting bytes, not characters", async () => {
    // bcrypt ignores everything after byte 72, so a longer password would be
    // silently truncated. 37 "é" are 37 characters but 74 bytes; 19 emoji are
    // 19 characters but 76 bytes.
    for (const password of ["x".repeat(73), "é".repeat(37), "😀".repeat(19)]) {
      const email = uniqueEmail("long");
      const response = await browser().register(email, "Long", password);
      expectClientError(response, 400);
      expect(await withDatabase((db) => usersWithEmail(db, email))).toBe(0);
    }
  });

  it("answers 409 for an email that is already registered, whatever its case", async () => {
    const email = uniqueEmail("dup");
    expect2xx(await browser().register(email, "First", PASSWORD));
    const again = await browser().register(email, "Second", PASSWORD);
    expectClientError(again, 409);
    expectNoSessionSet(again);
    const shouted = await browser().register(email.toUpperCase(), "Third", PASSWORD);
    expectClientError(shouted, 409);
    expect(await withDatabase((db) => usersWithEmail(db, email))).toBe(1);
  });

  it("is not allowed when already logged in", async () => {
    const { client } = await newUser(api, "logged-in-register");
    const email = uniqueEmail("second-account");
    expectNotAllowed(await client.register(email, "Second", PASSWORD));
    expect(await withDatabase((db) => usersWithEmail(db, email))).toBe(0);
  });
});

describe("POST /rpc/login", () => {
  it("lets ten people who log in at the same moment all in", async () => {
    const people = await Promise.all(
      Array.from({ length: 10 }, (_, i) => newUser(api, `burst-${i}`)),
    );
    const answers = await Promise.all(
      people.map((person) => browser().login(person.email, person.password)),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(200));
  });

  it("logs in, sets a session cookie, and issues a new token every time", async () => {
    const user = await newUser(api, "login");
    const tokens = new Set([user.client.sessionToken]);
    for (let i = 0; i < 2; i++) {
      const client = browser();
      const response = await client.login(user.email, user.password);
      expect2xx(response);
      expectSessionCookieAttributes(response.sessionCookie);
      tokens.add(newSessionToken(response));
      expect((await client.currentUser()).body).toMatchObject({ email: user.email });
    }
    expect(tokens.size).toBe(3);
  });

  it("answers 401 with the same body and no cookie for a wrong password and an unknown email", async () => {
    const user = await newUser(api, "login-fail");
    const wrongPassword = await browser().login(user.email, "not the password");
    const unknownEmail = await browser().login(uniqueEmail("nobody"), "not the password");
    expectStatus(wrongPassword, 401);
    expectStatus(unknownEmail, 401);
    expect(wrongPassword.body).toEqual(unknownEmail.body);
    expect(wrongPassword.body.message).toEqual(expect.any(String));
    expectNoSessionSet(wrongPassword);
    expectNoSessionSet(unknownEmail);
  });

  it("answers 429 after 5 failed attempts, even with the right password", async () => {
    const user = await newUser(api, "throttle");
    const attacker = browser();
    for (let attempt = 1; attempt <= 5; attempt++) {
      expectStatus(await attacker.login(user.email, `guess ${attempt}`), 401);
    }
    const rightPassword = await browser().login(user.email, user.password);
    expectStatus(rightPassword, 429);
    expectNoSessionSet(rightPassword);
  });

  it("is not allowed when already logged in", async () => {
    const user = await newUser(api, "logged-in-login");
    const before = user.client.sessionToken;
    const response = await user.client.login(user.email, user.password);
    expectNotAllowed(response);
    expectNoSessionSet(response);
    expect(user.client.sessionToken).toBe(before);
  });
});

describe("POST /rpc/logout", () => {
  it("clears the cookie and revokes the session, so replaying the old cookie is anonymous", async () => {
    const { client } = await newUser(api, "logout");
    const stolenCopy = client.withCopiedSession();
    const response = await client.logout();
    expect2xx(response);
    expectSessionCookieCleared(response);
    expect(client.sessionToken).toBeUndefined();
    expectStatus(await client.currentUser(), 401);
    expectStatus(await stolenCopy.currentUser(), 401);
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().logout(), 401);
  });
});

describe("POST /rpc/logout_everywhere", () => {
  it("revokes every session of the user and clears the cookie, leaving other users alone", async () => {
    const user = await newUser(api, "everywhere");
    const laptop = browser();
    expect2xx(await laptop.login(user.email, user.password));
    const bystander = await newUser(api, "bystander");

    const response = await user.client.post("/rpc/logout_everywhere");
    expect2xx(response);
    expectSessionCookieCleared(response);
    expectStatus(await user.client.currentUser(), 401);
    expectStatus(await laptop.currentUser(), 401);
    expectStatus(await bystander.client.currentUser(), 200);
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().post("/rpc/logout_everywhere"), 401);
  });
});

describe("POST /rpc/refresh_session", () => {
  it("sets the cookie again with a fresh Max-Age and keeps the session working", async () => {
    const { client } = await newUser(api, "refresh");
    const response = await client.post("/rpc/refresh_session");
    expect2xx(response);
    expectSessionCookieAttributes(response.sessionCookie);
    expectStatus(await client.currentUser(), 200);
  });

  // That the idle deadline really moves is shown in security.test.ts, by
  // ageing the session in the database around a refresh.

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().post("/rpc/refresh_session"), 401);
  });
});

describe("GET /rpc/current_user", () => {
  it("answers 200 with exactly {user_id, name, email}", async () => {
    const user = await newUser(api, "me");
    const response = await user.client.currentUser();
    expectStatus(response, 200);
    expect(response.body).toEqual({ user_id: user.userId, name: user.name, email: user.email });
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().currentUser(), 401);
  });
});

describe("POST /rpc/change_password", () => {
  const NEW_PASSWORD = "a brand new passphrase";

  it("is not allowed with a wrong current password, and changes nothing", async () => {
    const user = await newUser(api, "chpw-wrong");
    const response = await user.client.post("/rpc/change_password", {
      current_password: "not my password",
      new_password: NEW_PASSWORD,
    });
    expectNotAllowed(response);
    expectStatus(await user.client.currentUser(), 200);
    expect2xx(await browser().login(user.email, user.password));
    expectStatus(await browser().login(user.email, NEW_PASSWORD), 401);
  });

  it.each([
    ["too short", "1234567"],
    ["longer than 72 bytes", "é".repeat(37)],
  ])("answers 400 for an invalid new password (%s)", async (_, newPassword) => {
    const user = await newUser(api, "chpw-invalid");
    const response = await user.client.post("/rpc/change_password", {
      current_password: user.password,
      new_password: newPassword,
    });
    expectClientError(response, 400);
    expect2xx(await browser().login(user.email, user.password));
  });

  it("sets a new token and revokes every other session of the user", async () => {
    const user = await newUser(api, "chpw");
    const phone = browser();
    expect2xx(await phone.login(user.email, user.password));
    const oldToken = user.client.sessionToken;
    const oldCopy = user.client.withCopiedSession();

    const response = await user.client.post("/rpc/change_password", {
      current_password: user.password,
      new_password: NEW_PASSWORD,
    });
    expect2xx(response);
    expectSessionCookieAttributes(response.sessionCookie);
    expect(newSessionToken(response)).not.toBe(oldToken);

    expectStatus(await user.client.currentUser(), 200);
    expectStatus(await phone.currentUser(), 401);
    expectStatus(await oldCopy.currentUser(), 401);
    expect2xx(await browser().login(user.email, NEW_PASSWORD));
    expectStatus(await browser().login(user.email, user.password), 401);
  });

  it("answers 401 when not logged in", async () => {
    const response = await browser().post("/rpc/change_password", {
      current_password: PASSWORD,
      new_password: NEW_PASSWORD,
    });
    expectStatus(response, 401);
  });
});

interface SessionRow {
  session_id: number;
  created: string;
  expires: string;
  current: boolean;
}

describe("GET /sessions", () => {
  it("lists the caller's own live sessions with exactly the contract's fields", async () => {
    const user = await newUser(api, "sessions");
    const laptop = browser();
    expect2xx(await laptop.login(user.email, user.password));
    const gone = browser();
    expect2xx(await gone.login(user.email, user.password));
    expect2xx(await gone.logout());
    await newUser(api, "sessions-other"); // someone else's session must not show

    const response = await user.client.get("/sessions");
    expectStatus(response, 200);
    const sessions = response.body as SessionRow[];
    expect(sessions).toHaveLength(2);
    for (const session of sessions) {
      expect(Object.keys(session).sort()).toEqual(["created", "current", "expires", "session_id"]);
      expect(Date.parse(session.expires)).toBeGreaterThan(Date.now());
      expect(Date.parse(session.created)).toBeLessThanOrEqual(Date.parse(session.expires));
    }
    expect(sessions.filter((s) => s.current)).toHaveLength(1);

    // `current` follows the caller: the laptop sees the other row as current.
    const fromLaptop = (await laptop.get("/sessions")).body as SessionRow[];
    const currentHere = sessions.find((s) => s.current)?.session_id;
    const currentThere = fromLaptop.find((s) => s.current)?.session_id;
    expect(currentThere).toBeDefined();
    expect(currentThere).not.toBe(currentHere);
  });

  it("never exposes a token or its hash", async () => {
    const { client } = await newUser(api, "sessions-secret");
    const response = await client.get("/sessions?select=*");
    expect(response.text).not.toContain(client.sessionToken ?? "<none>");
    for (const column of ["token", "token_hash", "hash"]) {
      expectClientError(await client.get(`/sessions?select=${column}`), 400);
    }
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().get("/sessions"), 401);
  });
});

describe("DELETE /sessions?session_id=eq.N", () => {
  it("revokes the caller's own session", async () => {
    const user = await newUser(api, "revoke");
    const tablet = browser();
    expect2xx(await tablet.login(user.email, user.password));
    const sessions = (await tablet.get("/sessions")).body as SessionRow[];
    const tabletSession = sessions.find((s) => s.current)?.session_id;

    expect2xx(await user.client.delete(`/sessions?session_id=eq.${tabletSession}`));
    expectStatus(await tablet.currentUser(), 401);
    expectStatus(await user.client.currentUser(), 200);
  });

  it("leaves another user's session untouched", async () => {
    const victim = await newUser(api, "revoke-victim");
    const victimSession = ((await victim.client.get("/sessions")).body as SessionRow[])[0]
      ?.session_id;
    expect(victimSession).toBeDefined();
    const attacker = await newUser(api, "revoke-attacker");

    const response = await attacker.client.delete(`/sessions?session_id=eq.${victimSession}`, {
      ...RETURN_REPRESENTATION,
    });
    expect(response.status).toBeLessThan(500);
    if (response.status === 200) expect(response.body).toEqual([]);
    expectStatus(await victim.client.currentUser(), 200);
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().delete("/sessions?session_id=eq.1"), 401);
  });
});

describe("GET /users", () => {
  it("answers 200 with [{user_id, name}] and nothing more", async () => {
    const user = await newUser(api, "users");
    const response = await user.client.get("/users");
    expectStatus(response, 200);
    const users = response.body as Record<string, unknown>[];
    for (const row of users) expect(Object.keys(row).sort()).toEqual(["name", "user_id"]);
    expect(users).toContainEqual({ user_id: user.userId, name: user.name });
  });

  it("answers 401 when not logged in", async () => {
    expectStatus(await browser().get("/users"), 401);
  });
});

describe("/todos", () => {
  it("GET answers 200 with own todos and other users' public todos, not their private ones", async () => {
    const owner = await newUser(api, "todo-owner");
    const reader = await newUser(api, "todo-reader");
    const mine = await createTodo(reader.client, "reader's own private todo", false);
    const shared = await createTodo(owner.client, "owner's public todo", true);
    const hidden = await createTodo(owner.client, "owner's private todo", false);

    const response = await reader.client.get("/todos");
    expectStatus(response, 200);
    const ids = (response.body as Todo[]).map((t) => t.todo_id);
    expect(ids).toContain(mine.todo_id);
    expect(ids).toContain(shared.todo_id);
    expect(ids).not.toContain(hidden.todo_id);
  });

  it("POST answers 201 and records the caller as the owner", async () => {
    const user = await newUser(api, "todo-create");
    const response = await user.client.post(
      "/todos",
      { description: "write tests" },
      RETURN_REPRESENTATION,
    );
    expectStatus(response, 201);
    expect(response.body).toEqual([
      expect.objectContaining({ user_id: user.userId, description: "write tests", done: false }),
    ]);
    // Without Prefer, PostgREST answers 201 with an empty body.
    expectStatus(await user.client.post("/todos", { description: "and more", public: true }), 201);
  });

  it("POST rejects a user_id that is someone else's", async () => {
    const victim = await newUser(api, "todo-victim");
    const forger = await newUser(api, "todo-forger");
    const description = `forged ${forger.email}`;
    const response = await forger.client.post("/todos", {
      description,
      user_id: victim.userId,
    });
    expectClientError(response);
    expect(await withDatabase((db) => countTodos(db, { description }))).toBe(0);
  });

  it("PATCH answers 2xx and changes own todos only", async () => {
    const owner = await newUser(api, "todo-patch-owner");
    const other = await newUser(api, "todo-patch-other");
    const own = await createTodo(owner.client, "patch me");
    const theirs = await createTodo(other.client, "not yours", true);

    const patched = await owner.client.patch(
      `/todos?todo_id=eq.${own.todo_id}`,
      { description: "patched", done: true, public: true },
      RETURN_REPRESENTATION,
    );
    expect2xx(patched);
    expect(patched.body).toEqual([
      expect.objectContaining({ todo_id: own.todo_id, description: "patched", done: true }),
    ]);

    const refused = await owner.client.patch(
      `/todos?todo_id=eq.${theirs.todo_id}`,
      { done: true },
      RETURN_REPRESENTATION,
    );
    expect(refused.status).toBeLessThan(500);
    if (refused.status === 200) expect(refused.body).toEqual([]);
    const stored = await withDatabase((db) => storedTodo(db, theirs.todo_id));
    expect(stored).toMatchObject({ done: false, description: "not yours" });
  });

  it("DELETE answers 2xx and deletes own todos only", async () => {
    const owner = await newUser(api, "todo-delete-owner");
    const other = await newUser(api, "todo-delete-other");
    const own = await createTodo(owner.client, "delete me");
    const theirs = await createTodo(other.client, "keep me", true);

    expect2xx(await owner.client.delete(`/todos?todo_id=eq.${own.todo_id}`));
    expect2xx(await owner.client.delete(`/todos?todo_id=eq.${theirs.todo_id}`));
    await withDatabase(async (db) => {
      expect(await storedTodo(db, own.todo_id)).toBeUndefined();
      expect(await storedTodo(db, theirs.todo_id)).toBeDefined();
    });
  });

  it.each([
    ["GET", (c: TestClient) => c.get("/todos")],
    ["POST", (c: TestClient) => c.post("/todos", { description: "anonymous" })],
    ["PATCH", (c: TestClient) => c.patch("/todos?todo_id=gt.0", { done: true })],
    ["DELETE", (c: TestClient) => c.delete("/todos?todo_id=gt.0")],
  ])("%s answers 401 when not logged in", async (_, send) => {
    expectStatus(await send(browser()), 401);
  });
});

describe("audit trail", () => {
  it("records every auth event of a user's journey, with the user agent", async () => {
    const agent = `contract-test/${uniqueEmail("agent")}`;
    const client = new TestClient(api, { headers: { "User-Agent": agent } });
    const email = uniqueEmail("audit");
    expect2xx(await client.register(email, "Audited", PASSWORD));
    const phone = new TestClient(api, { headers: { "User-Agent": agent } });
    expectStatus(await phone.login(email, "wrong password"), 401);
    expect2xx(await phone.login(email, PASSWORD));
    const sessions = (await client.get("/sessions?current=is.false")).body as SessionRow[];
    expect2xx(await client.delete(`/sessions?session_id=eq.${sessions[0]?.session_id}`));
    expect2xx(
      await client.post("/rpc/change_password", {
        current_password: PASSWORD,
        new_password: "a brand new passphrase",
      }),
    );
    expect2xx(await client.logout());
    expect2xx(await client.login(email, "a brand new passphrase"));
    expect2xx(await client.post("/rpc/logout_everywhere"));

    const rows = await withDatabase(async (db) => {
      const { rows } = await db.query<{ event: string; user_agent: string }>(
        `select a.event::text as event, a.user_agent from ${AUDIT_TABLE} a
           join ${USERS_TABLE} u using (user_id)
          where lower(u.email::text) = lower($1)`,
        [email],
      );
      return rows;
    });
    const counts: Record<string, number> = {};
    for (const row of rows) counts[row.event] = (counts[row.event] ?? 0) + 1;
    expect(counts).toEqual({
      register: 1,
      login_failed: 1,
      login: 2,
      session_revoked: 1,
      password_changed: 1,
      logout: 1,
      logout_everywhere: 1,
    });
    for (const row of rows) expect(row.user_agent).toBe(agent);
  });
});
