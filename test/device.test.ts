// psql signs in through the browser (device.sql.md): a real libpq 18 (the
// one psycopg's binary wheel bundles) speaks OAUTHBEARER to the gateway's
// OAuth door, runs the device flow against the application through libpq's
// token hook (test/support/libpq18_oauth.py: what libpq-oauth's builtin
// flow does, over HTTP), and a person approves the code in Chromium with the
// session they are logged in with.

import { randomBytes } from "node:crypto";
import { generateKeyPair, SignJWT } from "jose";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { expectStatus } from "./support/app.js";
import type { LoggedInUser } from "./support/client.js";
import { SESSION_COOKIE } from "./support/client.js";
import { query } from "./support/database.js";
import { doorUser, providedDoors } from "./support/gateway.js";
import { type Event, Libpq18, libpq18Python } from "./support/libpq18.js";

const api = inject("apiUrl");
const provided = providedDoors(inject("doors"), "test/device.test.ts");
if (provided && !provided.oauthPort) {
  throw new Error(
    "the gateway's OAuth door is not running: the deployment must load device.sql.md",
  );
}
const suite = provided ? describe : describe.skip;
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
let python = "";

const clients: Libpq18[] = [];
function libpq(user = "", env: Record<string, string> = {}): Libpq18 {
  const conninfo =
    `host=127.0.0.1 port=${provided?.oauthPort} dbname=app user=${user} sslmode=disable ` +
    `oauth_issuer=${api} oauth_client_id=psql`;
  const client = new Libpq18(python, conninfo, env);
  clients.push(client);
  return client;
}

/** The device flow over plain HTTP, approved by `user`: an access token. */
async function tokenFor(user: LoggedInUser): Promise<string> {
  const form = (fields: Record<string, string>) => ({
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  const grant = (await (
    await fetch(`${api}/rpc/device_authorization`, form({ client_id: "psql" }))
  ).json()) as { device_code: string; user_code: string };
  expectStatus(
    await user.client.post("/rpc/device_decide", { user_code: grant.user_code, approve: true }),
    200,
  );
  const answer = await fetch(
    `${api}/rpc/oauth_token`,
    form({
      grant_type: "urn:ietf:params:oauth:grant-type:device_code",
      device_code: grant.device_code,
      client_id: "psql",
    }),
  );
  const body = (await answer.json()) as { access_token?: string; error?: string };
  if (!body.access_token) throw new Error(`no token: ${answer.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

/** Connects with this token (no flow) and reports what happened. */
async function connectWith(token: string, user = ""): Promise<Event> {
  const client = libpq(user, { OAUTH_TOKEN: token });
  const outcome = await client.next(["connected", "connect_failed"]);
  await client.end();
  return outcome;
}

async function sessionsOf(
  user: LoggedInUser,
): Promise<{ session_id: number; via: string; client: string }[]> {
  const response = await user.client.get("/session_details");
  expectStatus(response, 200);
  return response.body as { session_id: number; via: string; client: string }[];
}

suite("psql signs in through the browser (OAuth device flow, libpq 18)", () => {
  let browser: Browser;

  beforeAll(async () => {
    // The same set-up .ci/run does; here so that a plain `npm test` has it too.
    python = libpq18Python();
    // Polls every second (the default is 5), and room for every code this file asks for.
    await query(
      "update auth.settings set device_poll_interval = 1, device_requests_per_address = 1000",
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await browser?.close();
    await query(
      "update auth.settings set device_poll_interval = 5, device_requests_per_address = 10",
    );
  });

  it("discovers the issuer through the door, approves in Chromium, and queries as the person", async () => {
    const person = await doorUser(api, "device-chromium");
    const client = libpq();
    const hook = await client.next(["hook"]);
    // libpq asked the door (empty auth=), and the challenge named our issuer.
    expect(hook.openid_configuration).toBe(`${api}/.well-known/openid-configuration`);
    expect(hook.scope).toBe("database");
    const discovered = await client.next(["discovered"]);
    expect(discovered.issuer).toBe(api);
    const code = (await client.next(["code"])).user_code as string;
    expect(code).toMatch(/^[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}$/);

    // The person, logged in in their browser, types the code on the demo page.
    const context = await browser.newContext();
    try {
      await context.addCookies([
        { name: SESSION_COOKIE, value: person.client.sessionToken as string, url: api },
      ]);
      const page = await context.newPage();
      await page.goto(`${api}/demo/#device`);
      const form = page.locator("#device-form");
      await form.locator('input[name="user_code"]').fill(code.toLowerCase());
      await form.locator('button[type="submit"]').click();
      // What asks is shown before anything is approved.
      await page.locator("#device-request").waitFor({ state: "visible", timeout: 10_000 });
      expect(await page.locator("#device-client").textContent()).toBe("psql from 127.0.0.1");
      await page.locator("#device-approve").click();
      await page.locator("#message.info").filter({ hasText: "is signed in as you" }).waitFor();
      // The session list shows the client as one more session.
      await page
        .locator("#sessions tr", { hasText: "database: device: psql from 127.0.0.1" })
        .waitFor();
    } finally {
      await context.close();
    }

    await client.next(["connected"]);
    const who = await client.query("select current_user");
    expect(who.rows).toEqual([
      [expect.stringMatching(new RegExp(`^pgs_user_\\d+_${person.userId}$`))],
    ]);
    const device = (await sessionsOf(person)).filter((s) => s.via === "database: device");
    expect(device).toHaveLength(1);
  });

  it("ends the live connection when the person ends that session", async () => {
    const person = await doorUser(api, "device-revoke");
    const token = await tokenFor(person);
    const client = libpq("", { OAUTH_TOKEN: token });
    await client.next(["connected"]);
    expect((await client.query("select 1")).rows).toEqual([["1"]]);
    const [session] = (await sessionsOf(person)).filter((s) => s.via === "database: device");
    expectStatus(await person.client.delete(`/sessions?session_id=eq.${session?.session_id}`), 204);
    // The gateway looks every quarter second: the next statements fail soon.
    let outcome: Event | undefined;
    for (let i = 0; i < 40; i++) {
      outcome = await client.query("select 1");
      if (outcome.event === "error") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(outcome?.event).toBe("error");
    expect(String(outcome?.error)).toMatch(/session has ended|terminat|closed/i);
  });

  it("refuses when the person denies the code", async () => {
    const person = await doorUser(api, "device-deny");
    const client = libpq();
    const code = (await client.next(["code"])).user_code as string;
    expectStatus(
      await person.client.post("/rpc/device_decide", { user_code: code, approve: false }),
      200,
    );
    const failed = await client.next(["flow_failed"]);
    expect(failed.error).toMatch(/access_denied/);
    const outcome = await client.next(["connect_failed"]);
    expect(outcome.error).toMatch(/OAuth flow failed/);
  });

  it("tells a client that polls too fast to slow down, and lets it in when it does", async () => {
    const person = await doorUser(api, "device-slow");
    const client = libpq("", { OAUTH_POLL_AT_ONCE: "1" });
    const code = (await client.next(["code"])).user_code as string;
    const slow = await client.next(["poll"]);
    // Two polls at once: the second comes before the interval is up.
    const second = await client.next(["poll"], client.events.indexOf(slow) + 1);
    expect([slow.error, second.error]).toContain("slow_down");
    expectStatus(
      await person.client.post("/rpc/device_decide", { user_code: code, approve: true }),
      200,
    );
    await client.next(["connected"], 0, 30_000);
  }, 40_000);

  it("refuses a made-up token, a reused one, an expired one and another issuer's", async () => {
    const person = await doorUser(api, "device-tokens");
    const failedAuth = /OAuth bearer authentication failed/;

    const madeUp = await connectWith(randomBytes(32).toString("base64url"));
    expect(madeUp.event).toBe("connect_failed");
    expect(madeUp.error).toMatch(failedAuth);

    const token = await tokenFor(person);
    expect((await connectWith(token)).event).toBe("connected");
    const reused = await connectWith(token);
    expect(reused.event, "a token opens one connection").toBe("connect_failed");
    expect(reused.error).toMatch(failedAuth);

    const stale = await tokenFor(person);
    await query(
      "update auth.device_grants set token_expires = now() - interval '1 second' where user_id = $1 and state = 'issued'",
      [person.userId],
    );
    const expired = await connectWith(stale);
    expect(expired.event).toBe("connect_failed");
    expect(expired.error).toMatch(failedAuth);

    // A JWT of some other issuer: no key of this deployment verifies it.
    const { privateKey } = await generateKeyPair("ES256");
    const foreign = await new SignJWT({ sub: "someone", email: person.email })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer("https://elsewhere.example")
      .setAudience("psql")
      .setExpirationTime("5m")
      .sign(privateKey);
    const other = await connectWith(foreign);
    expect(other.event).toBe("connect_failed");
    expect(other.error).toMatch(failedAuth);
  });

  it("refuses a token for one account presented under another account's email", async () => {
    const person = await doorUser(api, "device-owner");
    const someoneElse = await doorUser(api, "device-other");
    const token = await tokenFor(person);
    const outcome = await connectWith(token, someoneElse.email);
    expect(outcome.event).toBe("connect_failed");
    const [row] = await query<{ state: string }>(
      "select state from auth.device_grants where user_id = $1 order by grant_id desc limit 1",
      [person.userId],
    );
    expect(row?.state, "the token was taken: a mismatch spends it").toBe("used");
  });
});
