// End-to-end: the demo page in real Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser is ever downloaded). The browser is
// the user here: cookies, SameSite and cross-site rules are Chromium's own.

import { existsSync, mkdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import pg from "pg";
import {
  type Browser,
  type BrowserContext,
  chromium,
  type Locator,
  type Page,
} from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../src/net.js";
import { newUser } from "./support/client.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SCREENSHOTS = join(import.meta.dirname, "..", "test-results", "screenshots");
const apiUrl = inject("apiUrl");
const demoUrl = `${apiUrl}/demo/`;
const runId = Math.random().toString(36).slice(2, 8);
let counter = 0;

let browser: Browser;

function uniqueEmail(who: string): string {
  return `${who}-${runId}-${++counter}@e2e.example`;
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/**
 * Submits a form and waits for `done` to appear. Other test files hash
 * passwords at the same time; when the page says the server is busy (after
 * its own retries), a person would press the button again, and so do we,
 * for up to 30 s. Any other message fails at once, with the page's words.
 */
async function submitUntil(page: Page, form: Locator, done: Locator): Promise<void> {
  // An error, not the "Welcome!" note a successful registration shows.
  const message = page.locator("#message:not(.info)");
  const giveUpAt = Date.now() + 30_000;
  for (;;) {
    await form.locator('button[type="submit"]').click();
    await done
      .filter({ visible: true })
      .or(message.filter({ visible: true }))
      .first()
      .waitFor({ timeout: Math.max(1, giveUpAt - Date.now()) });
    if (await done.isVisible()) return;
    const text = (await message.textContent()) ?? "";
    if (!/busy/i.test(text) || Date.now() > giveUpAt) {
      throw new Error(`the page said "${text}" instead of going on`);
    }
    await page.waitForTimeout(500);
  }
}

async function register(
  page: Page,
  email: string,
  name: string,
  password = "correct horse 1",
  at = demoUrl,
) {
  await page.goto(at);
  const form = page.locator("#register-form");
  await form.locator('input[name="email"]').fill(email);
  await form.locator('input[name="name"]').fill(name);
  await form.locator('input[name="password"]').fill(password);
  await submitUntil(page, form, page.locator("#whoami-name").filter({ hasText: name }));
}

async function login(page: Page, email: string, password = "correct horse 1") {
  await page.goto(demoUrl);
  const form = page.locator("#login-form");
  await form.locator('input[name="email"]').fill(email);
  await form.locator('input[name="password"]').fill(password);
  await submitUntil(page, form, page.locator("#signed-in"));
}

/**
 * What a person sees: exactly one of the two screens, and the "Signed in as"
 * bar only when signed in. Checks visibility as rendered (CSS included), not
 * mere presence in the DOM.
 */
async function expectScreen(page: Page, screen: "signed-in" | "signed-out"): Promise<void> {
  const signedIn = screen === "signed-in";
  await page.locator(`#${screen}`).waitFor({ state: "visible" });
  await expect(page.locator("#whoami").isVisible()).resolves.toBe(signedIn);
  await expect(page.getByText("Signed in as").isVisible()).resolves.toBe(signedIn);
  await expect(page.locator("#signed-in").isVisible()).resolves.toBe(signedIn);
  await expect(page.locator("#signed-out").isVisible()).resolves.toBe(!signedIn);
  await expect(page.locator("#logout").isVisible()).resolves.toBe(signedIn);
}

async function addTodo(page: Page, description: string, isPublic: boolean) {
  const form = page.locator("#todo-form");
  await form.locator('input[name="description"]').fill(description);
  if (isPublic) await form.locator('input[name="public"]').check();
  await form.locator('button[type="submit"]').click();
  await page.locator("#todos li", { hasText: description }).waitFor();
}

async function newContext(): Promise<BrowserContext> {
  return browser.newContext({ viewport: { width: 1000, height: 800 } });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is required for the end-to-end tests and was not found at ${CHROMIUM}: ` +
        "install it with `apt-get install chromium` (scripts/setup-system.sh chromium does), " +
        "or set CHROMIUM_PATH",
    );
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      // Sibling subdomains for the cookie-tossing and same-site tests.
      "--host-resolver-rules=MAP *.pgs.test 127.0.0.1",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
});

describe("demo page in Chromium", () => {
  it("registers and logs in through the forms; the cookie is HttpOnly and SameSite=Lax", async () => {
    const context = await newContext();
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    page.on("console", (message) => {
      // The page asks who is logged in; a stranger's 401 is the answer, not an error of the page.
      if (message.type() === "error" && !/status of 401/.test(message.text())) {
        consoleErrors.push(message.text());
      }
    });
    page.on("pageerror", (error) => consoleErrors.push(error.message));
    await page.goto(demoUrl);
    await page.locator("#register-form").waitFor();
    // The page loads without a complaint (its own icon within its CSP, say).
    expect(consoleErrors).toEqual([]);
    await expectScreen(page, "signed-out");
    await screenshot(page, "01-signed-out");
    const email = uniqueEmail("ada");
    await register(page, email, "Ada");
    await expectScreen(page, "signed-in");
    await expect(page.locator("#whoami-name").textContent()).resolves.toBe("Ada");
    await screenshot(page, "02-registered");

    const cookies = await context.cookies(apiUrl);
    const session = cookies.find((c) => c.name === "session_token");
    expect(session, "the browser stored a session cookie").toBeDefined();
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe("Lax");
    expect(session?.path).toBe("/");
    expect(await page.evaluate("document.cookie")).not.toContain("session_token");

    // Log out: the "Signed in as" bar goes away with the rest of the screen.
    await page.locator("#logout").click();
    await expectScreen(page, "signed-out");
    await expect(page.getByText("Ada", { exact: true }).isVisible()).resolves.toBe(false);
    await login(page, email);
    await expectScreen(page, "signed-in");
    await expect(page.locator("#whoami-email").textContent()).resolves.toBe(email);
    await context.close();
  });

  it("shows API errors in words", async () => {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(demoUrl);
    const form = page.locator("#login-form");
    await form.locator('input[name="email"]').fill(uniqueEmail("nobody"));
    await form.locator('input[name="password"]').fill("not the password");
    await form.locator('button[type="submit"]').click();
    await page.locator("#message", { hasText: "Wrong email or password." }).waitFor();
    await screenshot(page, "03-wrong-password");
    await context.close();
  });

  it("two users in two browsers see only what RLS allows", async () => {
    const alice = await newContext();
    const bob = await newContext();
    const alicePage = await alice.newPage();
    const bobPage = await bob.newPage();
    await register(alicePage, uniqueEmail("alice"), "Alice");
    await register(bobPage, uniqueEmail("bob"), "Bob");
    const secret = `alice private ${runId}`;
    const shared = `alice public ${runId}`;
    await addTodo(alicePage, secret, false);
    await addTodo(alicePage, shared, true);
    await addTodo(bobPage, `bob private ${runId}`, false);
    await screenshot(alicePage, "04-todos");

    await bobPage.reload();
    await bobPage.locator("#todos li", { hasText: shared }).waitFor();
    const bobSees = await bobPage.locator("#todos li").allTextContents();
    expect(bobSees.join("\n")).toContain(shared);
    expect(bobSees.join("\n")).not.toContain(secret);
    // Bob cannot edit Alice's public todo: no buttons, a disabled checkbox.
    const foreign = bobPage.locator("#todos li", { hasText: shared });
    await expect(foreign.locator("button").count()).resolves.toBe(0);
    await expect(foreign.locator('input[type="checkbox"]').isDisabled()).resolves.toBe(true);

    await alicePage.reload();
    // The list renders after its fetch: wait for it before reading it.
    await alicePage.locator("#todos li", { hasText: secret }).waitFor();
    const aliceSees = (await alicePage.locator("#todos li").allTextContents()).join("\n");
    expect(aliceSees).toContain(secret);
    expect(aliceSees).not.toContain(`bob private ${runId}`);
    await alice.close();
    await bob.close();
  });

  it("logging out in one tab makes the other tab anonymous on its next request", async () => {
    const context = await newContext();
    const first = await context.newPage();
    await register(first, uniqueEmail("tabs"), "Tabs");
    const second = await context.newPage();
    await second.goto(demoUrl);
    await second.locator("#signed-in").waitFor();

    await first.locator("#logout").click();
    await expectScreen(first, "signed-out");

    // The second tab still shows the old screen until it talks to the API.
    await addTodoExpectingLogout(second);
    await context.close();
  });

  it("revoking a session from the sessions list logs that browser out", async () => {
    const email = uniqueEmail("revoke");
    const laptop = await newContext();
    const phone = await newContext();
    const laptopPage = await laptop.newPage();
    const phonePage = await phone.newPage();
    await register(laptopPage, email, "Rev");
    await login(phonePage, email);

    await laptopPage.reload();
    await laptopPage.locator("#sessions tr").nth(1).waitFor();
    await screenshot(laptopPage, "05-sessions");
    const other = laptopPage.locator("#sessions tr", { hasNotText: "(this browser)" });
    await expect(other.count()).resolves.toBe(1);
    await other.locator("button").click();
    await laptopPage.locator("#message", { hasText: "Session revoked." }).waitFor();
    // The list reloads after the message: wait for the revoked row to go.
    await laptopPage.locator("#sessions tr").nth(1).waitFor({ state: "detached" });
    await expect(laptopPage.locator("#sessions tr").count()).resolves.toBe(1);

    await addTodoExpectingLogout(phonePage);
    // The laptop is still logged in.
    await laptopPage.reload();
    await laptopPage.locator("#signed-in").waitFor();
    await laptop.close();
    await phone.close();
  });
});

/**
 * Opens deploy-local's mail page in `page` and follows the newest link in
 * the message to `email` whose subject matches, as a person reading their
 * mail would (the page is reloaded until the message has arrived).
 */
async function followMailedLink(page: Page, email: string, subject: RegExp): Promise<void> {
  const giveUpAt = Date.now() + 15_000;
  for (;;) {
    const response = await page.goto(`${apiUrl}/mail/`);
    if (response?.status() !== 200) {
      throw new Error(
        `the mail page answered ${response?.status()}: these tests need deploy-local's mail (email.sql.md and its catcher)`,
      );
    }
    const message = page.locator("article", { hasText: email }).filter({ hasText: subject });
    if ((await message.count()) > 0) {
      await message.first().locator("a").first().click();
      return;
    }
    if (Date.now() > giveUpAt) throw new Error(`no message "${subject}" to ${email} arrived`);
    await page.waitForTimeout(200);
  }
}

describe("accounts by email in Chromium", () => {
  it("register, open the caught mail, follow the link: verified", async () => {
    const context = await newContext();
    const page = await context.newPage();
    const email = uniqueEmail("verify");
    await register(page, email, "Vera");
    await page.locator("#unverified").waitFor({ state: "visible" });
    await screenshot(page, "06-unverified");
    await followMailedLink(page, email, /Confirm your email address/);
    await page.locator("#message", { hasText: "Your address is verified" }).waitFor();
    await expectScreen(page, "signed-in");
    await page.locator("#unverified").waitFor({ state: "hidden" });
    expect(page.url(), "the token is taken out of the address bar").not.toContain("#");
    await context.close();
  });

  it("forgot password, follow the link, set a new one: the old sessions are gone", async () => {
    const email = uniqueEmail("forgot");
    const laptop = await newContext();
    const laptopPage = await laptop.newPage();
    await register(laptopPage, email, "Fern");

    const phone = await newContext();
    const page = await phone.newPage();
    await page.goto(demoUrl);
    const form = page.locator("#forgot-form");
    await form.locator('input[name="email"]').fill(email);
    await form.locator('button[type="submit"]').click();
    await page.locator("#message", { hasText: "Check your mail" }).waitFor();
    await followMailedLink(page, email, /Reset your password/);
    const reset = page.locator("#reset-form");
    await reset.waitFor({ state: "visible" });
    expect(page.url()).not.toContain("reset-password");
    await reset.locator('input[name="new_password"]').fill("a fresh password 2");
    await screenshot(page, "07-reset-password");
    await reset.locator('button[type="submit"]').click();
    await page.locator("#message", { hasText: "Your password is set" }).waitFor();
    await expectScreen(page, "signed-in");
    await expect(page.locator("#whoami-email").textContent()).resolves.toBe(email);

    // The laptop's session ended with the reset.
    await addTodoExpectingLogout(laptopPage);
    await login(laptopPage, email, "a fresh password 2");
    await expectScreen(laptopPage, "signed-in");
    await laptop.close();
    await phone.close();
  });
});

/**
 * Tries to add a todo and expects the page to discover that its session is
 * gone. The page may find out first on its own: it asks the API again when
 * its window gets the focus, and then hides the form and says so.
 */
async function addTodoExpectingLogout(page: Page): Promise<void> {
  const form = page.locator("#todo-form");
  try {
    await form.locator('input[name="description"]').fill("should not be saved", { timeout: 5000 });
    await form.locator('button[type="submit"]').click({ timeout: 5000 });
  } catch {
    // The form went away: the focus check got there first.
  }
  await page.locator("#message", { hasText: "Your session has ended" }).waitFor();
  await expectScreen(page, "signed-out");
}

describe("a page on another site", () => {
  let evil: http.Server;
  let evilUrl: string;

  beforeAll(async () => {
    // 127.0.0.1 and localhost are different sites to the browser.
    const port = await freePort();
    const target = apiUrl;
    evil = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html>
<form id="attack" method="post" action="${target}/todos">
  <input name="description" value="planted by a cross-site form">
</form>
<button id="fire-fetch" onclick="
  fetch('${target}/todos', { method: 'POST', credentials: 'include', mode: 'no-cors',
    headers: { 'Content-Type': 'text/plain' },
    body: JSON.stringify({ description: 'planted by a cross-site fetch' }) })
  .then(() => document.title = 'sent', () => document.title = 'blocked')">fetch</button>
<button id="fire-logout" onclick="
  fetch('${target}/rpc/logout', { method: 'POST', credentials: 'include', mode: 'no-cors' })
  .then(() => document.title = 'sent', () => document.title = 'blocked')">logout</button>`);
    });
    await new Promise<void>((r) => evil.listen(port, "127.0.0.1", () => r()));
    evilUrl = `http://localhost:${port}/`;
  });

  afterAll(() => {
    evil?.close();
  });

  it("cannot post a form or a fetch to the API, and changes nothing", async () => {
    const context = await newContext();
    const page = await context.newPage();
    const email = uniqueEmail("victim");
    await register(page, email, "Victim");

    const database = new pg.Client(inject("database"));
    await database.connect();
    const countTodos = async () =>
      Number(
        (
          await database.query<{ n: string }>(
            "select count(*) as n from app.todos where description like 'planted by%'",
          )
        ).rows[0]?.n,
      );
    const before = await countTodos();

    const attacker = await context.newPage();
    const responses: number[] = [];
    attacker.on("response", (response) => {
      if (response.url().startsWith(apiUrl)) responses.push(response.status());
    });
    await attacker.goto(evilUrl);
    await Promise.all([
      attacker.waitForNavigation(),
      attacker
        .locator("#attack")
        .evaluate((form) => (form as unknown as { submit(): void }).submit()),
    ]);
    expect(responses).toContain(403);
    await attacker.goto(evilUrl);
    await attacker.locator("#fire-fetch").click();
    await attacker.waitForFunction("document.title !== ''");
    await attacker.locator("#fire-logout").click();
    await attacker.waitForTimeout(200);

    expect(await countTodos()).toBe(before);
    await database.end();
    // The victim is still logged in: the cross-site logout did nothing.
    await page.reload();
    await expectScreen(page, "signed-in");
    await context.close();
  });
});

// A sibling subdomain (evil.pgs.test next to app.pgs.test) is the same *site*
// to the browser: SameSite=Lax cookies go along, and it may set cookies for
// the whole domain. Both are attacks of their own.
describe("a page on a sibling subdomain", () => {
  let evil: http.Server;
  let evilOrigin: string;
  const appOrigin = apiUrl.replace("127.0.0.1", "app.pgs.test");
  let plantedToken = "";

  beforeAll(async () => {
    const port = await freePort();
    evil = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      if (req.url === "/toss") {
        // Cookie tossing: a cookie for the whole domain, carrying the
        // attacker's own session.
        res.end(`<!doctype html><script>
          document.cookie = "session_token=${plantedToken}; Domain=pgs.test; Path=/; Max-Age=3600";
          document.title = "tossed";
        </script>`);
        return;
      }
      res.end(`<!doctype html>
<form id="attack" method="post" action="${appOrigin}/todos">
  <input name="description" value="planted from a sibling subdomain">
</form>`);
    });
    await new Promise<void>((r) => evil.listen(port, "127.0.0.1", () => r()));
    evilOrigin = `http://evil.pgs.test:${port}`;
  });

  afterAll(() => {
    evil?.close();
  });

  async function countPlanted(description: string, userId?: number): Promise<number> {
    const database = new pg.Client(inject("database"));
    await database.connect();
    try {
      const { rows } = await database.query<{ n: number }>(
        "select count(*)::int as n from app.todos where description = $1 and ($2::bigint is null or user_id = $2)",
        [description, userId ?? null],
      );
      return rows[0]?.n ?? 0;
    } finally {
      await database.end();
    }
  }

  it("cannot write with the victim's cookie through a form (Sec-Fetch-Site: same-site is refused)", async () => {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(`${appOrigin}/demo/`);
    await register(
      page,
      uniqueEmail("sibling-victim"),
      "Victim",
      "correct horse 1",
      `${appOrigin}/demo/`,
    );
    const statuses: number[] = [];
    page.on("response", (response) => {
      if (response.url().startsWith(appOrigin)) statuses.push(response.status());
    });
    await page.goto(evilOrigin);
    await Promise.all([
      page.waitForNavigation(),
      page.locator("#attack").evaluate((form) => (form as unknown as { submit(): void }).submit()),
    ]);
    expect(statuses).toContain(403);
    expect(await countPlanted("planted from a sibling subdomain")).toBe(0);
    await context.close();
  });

  it("cannot make the victim work inside the attacker's account by tossing a cookie", async () => {
    // The attacker's own account and session.
    const attacker = await newUser(apiUrl, "Tosser");
    plantedToken = attacker.client.sessionToken ?? "";
    expect(plantedToken).not.toBe("");

    const context = await newContext();
    const page = await context.newPage();
    await register(
      page,
      uniqueEmail("toss-victim"),
      "Victim",
      "correct horse 1",
      `${appOrigin}/demo/`,
    );
    await page.goto(`${evilOrigin}/toss`);
    await page.waitForFunction("document.title === 'tossed'");
    const cookies = await context.cookies(appOrigin);
    expect(cookies.filter((c) => c.name === "session_token")).toHaveLength(2);

    // Back on the app, the victim's requests carry both cookies. Neither is
    // trusted: the victim is logged out, never logged in as the attacker.
    await page.goto(`${appOrigin}/demo/`);
    await expectScreen(page, "signed-out");
    await expect(page.getByText("Tosser").isVisible()).resolves.toBe(false);
    const status = await page.evaluate(async () => {
      const response = await fetch("/todos", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ description: "victim's secret" }),
      });
      return response.status;
    });
    expect(status).toBe(401);
    expect(await countPlanted("victim's secret", attacker.userId)).toBe(0);
    await context.close();
  });
});
