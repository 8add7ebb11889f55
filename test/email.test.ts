// Accounts by email (email.sql.md) over HTTP, against the real PostgREST,
// the real mailer and a real SMTP server (the local catcher deploy-local
// starts): every flow end to end, every way a link must be refused, the
// throttles under parallel requests, and that "forgot password" tells
// nobody whether an address has an account.

import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CaughtMessage } from "../src/mail/catcher.js";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { expectStatus, shown } from "./support/app.js";
import { newUser, PASSWORD, TestClient, uniqueEmail } from "./support/client.js";
import { connectPg } from "./support/gateway.js";
import { fastestApart } from "./support/timing.js";

let deployment: LocalDeployment;
let api: string;
let admin: pg.Client;

beforeAll(async () => {
  deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    ...(process.env.TEST_IDENTITY === "inline" ? { identity: "inline" as const } : {}),
  });
  api = deployment.url;
  admin = await deployment.connect();
});

afterAll(async () => {
  await admin?.end();
  await deployment?.stop();
});

function catcher() {
  const mail = deployment.mail;
  if (!mail) throw new Error("deploy-local started no mail for a project with email.sql.md");
  return mail.catcher;
}

/** The newest message to `address` whose subject matches, once it arrives. */
async function mailTo(address: string, subject: RegExp, after = 0): Promise<CaughtMessage> {
  return catcher().waitFor(
    (m) => m.id > after && m.to.includes(address) && subject.test(m.subject),
    15_000,
  );
}

/** The id of the newest caught message (0: none): later messages come after it. */
function lastMailId(): number {
  return catcher().messages.at(-1)?.id ?? 0;
}

/** The token in a message's link, for the fragment key `kind`. */
function tokenIn(message: CaughtMessage, kind: string): string {
  const match = new RegExp(`#${kind}=([A-Za-z0-9_-]{43})`).exec(message.text);
  expect(match, `no #${kind}= link in:\n${message.text}`).not.toBeNull();
  return match?.[1] as string;
}

async function setting(assignments: string): Promise<void> {
  await admin.query(`update auth.settings set ${assignments}`);
}

describe("verifying an address", () => {
  it("registration mails a link that verifies the address, once; the API says what is verified", async () => {
    const user = await newUser(api, "verify");
    const status = await user.client.get("/rpc/email_status");
    expect(status.body, shown(status)).toEqual({ email: user.email, email_verified: false });
    const message = await mailTo(user.email, /confirm your email/i);
    expect(message.text).toContain(`${deployment.demoUrl}#verify-email=`);
    expect(message.html, "plain text and HTML").toContain("<a href=");
    const token = tokenIn(message, "verify-email");

    const verified = await user.client.post("/rpc/verify_email", { token });
    expectStatus(verified, 200);
    expect(verified.body.email_verified).toBe(true);
    expect((await user.client.get("/rpc/email_status")).body.email_verified).toBe(true);
    const again = await user.client.post("/rpc/verify_email", { token });
    expectStatus(again, 400);
    expect(again.body.message).toMatch(/not valid/);
    const audit = await admin.query(
      "select count(*)::int as n from auth.audit where event = 'email_verified' and user_id = $1",
      [user.userId],
    );
    expect(audit.rows[0].n).toBe(1);
  });

  it("a resend replaces the link: the older one is refused, the newer one works", async () => {
    const user = await newUser(api, "resend");
    const first = await mailTo(user.email, /confirm your email/i);
    const resent = await user.client.post("/rpc/resend_verification");
    expectStatus(resent, 200);
    const second = await mailTo(user.email, /confirm your email/i, first.id);
    const stranger = new TestClient(api);
    expectStatus(
      await stranger.post("/rpc/verify_email", { token: tokenIn(first, "verify-email") }),
      400,
    );
    expectStatus(
      await stranger.post("/rpc/verify_email", { token: tokenIn(second, "verify-email") }),
      200,
    );
    const done = await user.client.post("/rpc/resend_verification");
    expectStatus(done, 409);
  });

  it("with login_requires_verified_email, an unverified account is not logged in until its link is followed", async () => {
    await setting("login_requires_verified_email = true");
    try {
      const client = new TestClient(api);
      const email = uniqueEmail("strict");
      const registered = await client.register(email, "Strict");
      expectStatus(registered, 200);
      expect(registered.body.logged_in).toBe(false);
      expect(client.sessionToken, "no session before the address is proven").toBeUndefined();
      const refused = await client.login(email);
      expectStatus(refused, 403);
      expect(refused.body.message).toMatch(/not verified/);
      expectStatus(await client.login(email, "wrong password!"), 401);
      const message = await mailTo(email, /confirm your email/i);
      expectStatus(
        await client.post("/rpc/verify_email", { token: tokenIn(message, "verify-email") }),
        200,
      );
      expectStatus(await client.login(email), 200);
      expect(client.sessionToken).toBeDefined();
    } finally {
      await setting("login_requires_verified_email = false");
    }
  });

  it("an expired link is refused", async () => {
    const user = await newUser(api, "expired");
    const message = await mailTo(user.email, /confirm your email/i);
    await admin.query(
      "update auth.email_links set expires = now() - interval '1 second' where user_id = $1",
      [user.userId],
    );
    expectStatus(
      await user.client.post("/rpc/verify_email", { token: tokenIn(message, "verify-email") }),
      400,
    );
  });
});

describe("a forgotten password", () => {
  it("the link sets a new password once, ends every session, door connections included, and proves the address", async () => {
    const user = await newUser(api, "reset");
    await admin.query("select auth.grant_door($1)", [user.userId]);
    const laptop = new TestClient(api);
    expectStatus(await laptop.login(user.email), 200);
    const doors = deployment.doors;
    if (!doors) throw new Error("deploy-local started no doors");
    const door = await connectPg(
      { host: doors.gateway.host, port: doors.gateway.port, database: deployment.database },
      user.email,
      PASSWORD,
    );
    const doorEnded = new Promise<void>((resolve) => door.once("end", () => resolve()));
    expect((await door.query("select 1 as one")).rows[0].one).toBe(1);
    const ticket = await user.client.post("/rpc/pgweb_ticket");
    expectStatus(ticket, 200);

    const browser = new TestClient(api);
    const before = lastMailId();
    const asked = await browser.post("/rpc/request_password_reset", { email: user.email });
    expectStatus(asked, 200);
    const message = await mailTo(user.email, /reset your password/i, before);
    const token = tokenIn(message, "reset-password");

    const reset = await browser.post("/rpc/reset_password", {
      token,
      new_password: "a brand new password",
    });
    expectStatus(reset, 200);
    expect(browser.sessionToken, "the reset logs in").toBeDefined();
    expectStatus(await user.client.currentUser(), 401);
    expectStatus(await laptop.currentUser(), 401);
    await Promise.race([
      doorEnded,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("the door connection outlived the reset")), 5_000),
      ),
    ]);
    const redeemed = await admin.query(
      "select * from auth.door_redeem_ticket($1, 'email test', '127.0.0.1')",
      [ticket.body.ticket],
    );
    expect(redeemed.rows, "the pgweb ticket died with its session").toEqual([]);
    const me = await browser.get("/rpc/email_status");
    expect(me.body.email_verified, shown(me)).toBe(true);
    expectStatus(await new TestClient(api).login(user.email, "a brand new password"), 200);
    expectStatus(await new TestClient(api).login(user.email), 401);
    const reused = await new TestClient(api).post("/rpc/reset_password", {
      token,
      new_password: "yet another password",
    });
    expectStatus(reused, 400);
  });

  it("refuses a link of the wrong kind, of another account, replaced by a newer one, expired, or outlived by a password change", async () => {
    const owner = await newUser(api, "reset-refusals");
    const verification = tokenIn(await mailTo(owner.email, /confirm your email/i), "verify-email");
    const stranger = new TestClient(api);
    expectStatus(
      await stranger.post("/rpc/reset_password", {
        token: verification,
        new_password: "wrong kind of link",
      }),
      400,
    );

    const ask = async () => {
      const before = lastMailId();
      expectStatus(
        await new TestClient(api).post("/rpc/request_password_reset", { email: owner.email }),
        200,
      );
      return tokenIn(await mailTo(owner.email, /reset your password/i, before), "reset-password");
    };
    const first = await ask();
    const other = await newUser(api, "reset-other");
    const foreign = await other.client.post("/rpc/reset_password", {
      token: first,
      new_password: "taking over an account",
    });
    expectStatus(foreign, 403);
    expect(foreign.body.message).toMatch(/another account/);

    const second = await ask();
    expectStatus(
      await stranger.post("/rpc/reset_password", { token: first, new_password: "stale link pass" }),
      400,
    );
    await admin.query(
      "update auth.email_links set expires = now() - interval '1 second' where user_id = $1",
      [owner.userId],
    );
    expectStatus(
      await stranger.post("/rpc/reset_password", {
        token: second,
        new_password: "expired link pass",
      }),
      400,
    );

    await admin.query("delete from auth.outbox where user_id = $1", [owner.userId]);
    const third = await ask();
    expectStatus(
      await owner.client.post("/rpc/change_password", {
        current_password: PASSWORD,
        new_password: "changed meanwhile",
      }),
      200,
    );
    expectStatus(
      await stranger.post("/rpc/reset_password", { token: third, new_password: "too late now" }),
      400,
    );
  });

  it("answers an unknown address and a known one alike, in status, body and time", async () => {
    // Both kinds are asked the same number of times, with limits high
    // enough for every request to be a real one.
    await setting("mail_client_requests = 10000, mail_per_address = 100, mail_per_account = 100");
    try {
      const ADDRESSES = 3;
      const ROUNDS = 10;
      const known = await Promise.all(
        Array.from({ length: ADDRESSES }, () => newUser(api, "forgot-known")),
      );
      const unknown = Array.from({ length: ADDRESSES }, () => uniqueEmail("forgot-nobody"));
      const client = new TestClient(api);
      const bodies = new Set<string>();
      const timings = { known: [] as number[], unknown: [] as number[] };
      const attempt = async (email: string): Promise<number> => {
        const started = performance.now();
        const response = await client.post("/rpc/request_password_reset", { email });
        const took = performance.now() - started;
        expectStatus(response, 200);
        bodies.add(`${response.status} ${response.text}`);
        return took;
      };
      await attempt(uniqueEmail("forgot-warmup"));
      const round = async () => {
        for (let i = 0; i < ADDRESSES; i++) {
          timings.unknown.push(await attempt(unknown[i] as string));
          timings.known.push(await attempt(known[i]?.email as string));
        }
      };
      // As for logins (security.test.ts): the fastest answers show the work
      // done; the slow ones show whatever else the machine was doing.
      const apart = await fastestApart(
        async () => {
          for (let r = 0; r < ROUNDS; r++) await round();
        },
        { known: timings.known, unknown: timings.unknown },
      );
      expect([...bodies], "one answer for every address").toHaveLength(1);
      for (const user of known) await mailTo(user.email, /reset your password/i);
      expect(apart.difference, apart.shown).toBeLessThan(0.25);
    } finally {
      await setting("mail_client_requests = 20, mail_per_address = 3, mail_per_account = 5");
    }
  });
});

describe("limits", () => {
  it("parallel requests for one address send at most mail_per_address links, and all get the same answer", async () => {
    const user = await newUser(api, "flood-address");
    await mailTo(user.email, /confirm your email/i); // one of the three already
    const answers = await Promise.all(
      Array.from({ length: 12 }, () =>
        new TestClient(api).post("/rpc/request_password_reset", { email: user.email }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    expect(new Set(answers.filter((a) => a.status === 200).map((a) => a.text)).size).toBe(1);
    // A request that waited its turn longer than password_wait is told to try
    // again (429), like a login; none may get through past the limit.
    expect(
      statuses.every((s) => s === 200 || s === 429),
      statuses.join(" "),
    ).toBe(true);
    const { rows } = await admin.query(
      `select count(*)::int as n from auth.outbox
        where to_key = $1 and created > now() - interval '1 hour' and data ? 'purpose'`,
      [user.email.toLowerCase()],
    );
    expect(rows[0].n).toBe(3);
  });

  it("one client's requests for mail are limited (mail_client_requests), whatever the addresses", async () => {
    await setting("mail_client_requests = 5");
    try {
      const client = new TestClient(api);
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) {
        const response = await client.post("/rpc/request_password_reset", {
          email: uniqueEmail("flood-client"),
        });
        statuses.push(response.status);
      }
      expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
      expectStatus(
        await new TestClient(api).post("/rpc/request_password_reset", {
          email: uniqueEmail("other-client"),
        }),
        200,
      );
    } finally {
      await setting("mail_client_requests = 20");
    }
  });
});

describe("changing the address", () => {
  it("needs the password, confirms at the new address, tells the old one, and moves only when confirmed", async () => {
    const user = await newUser(api, "move");
    const newEmail = uniqueEmail("moved");
    const wrong = await user.client.post("/rpc/change_email", {
      new_email: newEmail,
      password: "not the password",
    });
    expectStatus(wrong, 403);
    const before = lastMailId();
    const asked = await user.client.post("/rpc/change_email", {
      new_email: newEmail,
      password: PASSWORD,
    });
    expectStatus(asked, 200);
    const confirm = await mailTo(newEmail, /confirm your new email/i, before);
    const notice = await mailTo(user.email, /may move to another address/i, before);
    expect(notice.text).toContain(newEmail);
    expect(notice.text, "the notice carries no link").not.toMatch(/#[a-z-]+=/);
    expect((await user.client.currentUser()).body.email).toBe(user.email);

    const other = await newUser(api, "move-other");
    const foreign = await other.client.post("/rpc/confirm_email_change", {
      token: tokenIn(confirm, "confirm-email"),
    });
    expectStatus(foreign, 403);
    const confirmed = await user.client.post("/rpc/confirm_email_change", {
      token: tokenIn(confirm, "confirm-email"),
    });
    expectStatus(confirmed, 200);
    const me = await user.client.get("/rpc/email_status");
    expect(me.body).toEqual({ email: newEmail, email_verified: true });
    expectStatus(await new TestClient(api).login(newEmail), 200);
    expectStatus(await new TestClient(api).login(user.email), 401);
  });

  it("an address that has a verified account is told so, and the asker learns nothing more", async () => {
    const owner = await newUser(api, "taken");
    const token = tokenIn(await mailTo(owner.email, /confirm your email/i), "verify-email");
    expectStatus(await owner.client.post("/rpc/verify_email", { token }), 200);
    const user = await newUser(api, "wants-taken");
    const freeEmail = uniqueEmail("free");
    const free = await user.client.post("/rpc/change_email", {
      new_email: freeEmail,
      password: PASSWORD,
    });
    const before = lastMailId();
    const taken = await user.client.post("/rpc/change_email", {
      new_email: owner.email,
      password: PASSWORD,
    });
    expectStatus(taken, 200);
    expect(taken.text.replace(owner.email, "ADDRESS")).toBe(
      free.text.replace(freeEmail, "ADDRESS"),
    );
    const told = await mailTo(owner.email, /already has an account/i, before);
    expect(told.text).not.toMatch(/#[a-z-]+=/);
  });
});

describe("sign-in links", () => {
  it("are off by default; on, a link logs in once, as a session of its own kind", async () => {
    const user = await newUser(api, "magic");
    const browser = new TestClient(api);
    expectStatus(await browser.post("/rpc/request_sign_in_link", { email: user.email }), 403);
    await setting("sign_in_links = true");
    try {
      const before = lastMailId();
      const asked = await browser.post("/rpc/request_sign_in_link", { email: user.email });
      expectStatus(asked, 200);
      const unknown = await new TestClient(api).post("/rpc/request_sign_in_link", {
        email: uniqueEmail("magic-nobody"),
      });
      expect(unknown.text).toBe(asked.text);
      const token = tokenIn(await mailTo(user.email, /sign-in link/i, before), "sign-in");
      expectStatus(await browser.post("/rpc/sign_in_with_link", { token }), 200);
      const sessions = await browser.get("/session_details?current=is.true");
      expect(sessions.body[0]?.via, shown(sessions)).toBe("email link");
      expectStatus(await new TestClient(api).post("/rpc/sign_in_with_link", { token }), 400);
    } finally {
      await setting("sign_in_links = false");
    }
  });
});

describe("deploy-local's mail page", () => {
  it("lists the caught messages with their links clickable", async () => {
    const user = await newUser(api, "page");
    const message = await mailTo(user.email, /confirm your email/i);
    const page = await fetch(deployment.mail?.pageUrl as string);
    expect(page.status).toBe(200);
    const html = await page.text();
    const link = /https?:\/\/\S+#verify-email=[A-Za-z0-9_-]{43}/.exec(message.text)?.[0];
    expect(html).toContain(`<a href="${link}">`);
    const json = (await (await fetch(`${api}/mail/messages.json`)).json()) as CaughtMessage[];
    expect(json.some((m) => m.id === message.id)).toBe(true);
  });
});
