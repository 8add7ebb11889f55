// The delivery process, `postgrest-sessions mailer`, as a production
// deployment runs it: a child process with a database URL and an SMTP URL.
// Stopped in the middle of a batch and started again, it loses nothing and
// sends nothing twice; an SMTP server that refuses for a while gets the
// message once it recovers; one that refuses for good gets it marked failed.

import type pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type MailCatcher, startMailCatcher } from "../src/mail/catcher.js";
import { startMailer } from "../src/mail/mailer.js";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { spawnCli } from "./support/deploy-local-process.js";

let deployment: LocalDeployment;
let admin: pg.Client;
let mailerUrl: string;
const catchers: MailCatcher[] = [];

beforeAll(async () => {
  deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    fixtures: false,
    gateway: false,
    mail: false,
  });
  admin = await deployment.connect();
  await admin.query("update auth.settings set link_base_url = 'https://app.example/account'");
  mailerUrl = deployment.cluster.uri("mailer", deployment.database);
});

afterEach(async () => {
  await admin.query("delete from auth.outbox");
});

afterAll(async () => {
  for (const catcher of catchers) await catcher.close();
  await admin?.end();
  await deployment?.stop();
});

async function catcher(options: Parameters<typeof startMailCatcher>[0] = {}) {
  const started = await startMailCatcher(options);
  catchers.push(started);
  return started;
}

/** Queues `count` messages (notices: no link needed) and returns their addresses. */
async function queue(count: number, label: string): Promise<string[]> {
  const addresses = Array.from({ length: count }, (_, i) => `${label}-${i}@example.com`);
  await admin.query(
    `select auth.queue_mail(null, 'address_in_use', a, '{"purpose": "notice"}') from unnest($1::text[]) a`,
    [addresses],
  );
  return addresses;
}

async function statuses(): Promise<Record<string, number>> {
  const { rows } = await admin.query<{ status: string; n: number }>(
    "select status, count(*)::int as n from auth.outbox group by status",
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("postgrest-sessions mailer", () => {
  it("stopped mid-batch (SIGTERM) and started again: every message arrives exactly once", async () => {
    const smtp = await catcher({ delayMs: 120 });
    const addresses = await queue(15, "batch");
    const env = {
      MAILER_DATABASE_URL: mailerUrl,
      SMTP_URL: smtp.url,
      MAIL_FROM: "App <no-reply@example.com>",
    };
    const first = spawnCli(["mailer"], env);
    await until(() => smtp.messages.length >= 4, 20_000, "the first messages");
    first.child.kill("SIGTERM");
    expect(await first.exited, first.stderr()).toBe(0);
    const afterStop = smtp.messages.length;
    expect(afterStop, "stopped before the end of the batch").toBeLessThan(15);
    expect((await statuses()).sent).toBe(afterStop);

    const second = spawnCli(["mailer"], env);
    try {
      await until(() => smtp.messages.length >= 15, 20_000, "the rest of the batch");
      await new Promise((r) => setTimeout(r, 300)); // nothing more may come
    } finally {
      second.child.kill("SIGTERM");
      await second.exited;
    }
    expect(smtp.messages).toHaveLength(15);
    expect(new Set(smtp.messages.map((m) => m.messageId)).size).toBe(15);
    expect(smtp.messages.flatMap((m) => m.to).sort()).toEqual([...addresses].sort());
    expect(await statuses()).toEqual({ sent: 15 });
    expect(smtp.messages[0]?.from).toBe("no-reply@example.com");
    expect(first.stderr()).toMatch(/the message in hand is finished first/);
  });

  it("an SMTP server that refuses for a while (451) gets the message when it recovers", async () => {
    let refusals = 3;
    const smtp = await catcher({ refuse: () => (refusals-- > 0 ? 451 : undefined) });
    const mailer = await startMailer({
      connection: { connectionString: mailerUrl },
      smtpUrl: smtp.url,
      from: "no-reply@example.com",
      retryBaseMs: 100,
      pollMs: 100,
    });
    try {
      const [address] = await queue(1, "flaky");
      await smtp.waitFor((m) => m.to.includes(address as string), 15_000);
      // (Received before the mailer records it: wait for the record.)
      await until(
        async () => (await statuses()).sent === 1,
        5_000,
        "the message to be marked sent",
      );
      const { rows } = await admin.query(
        "select status, attempts, last_error from auth.outbox where to_address = $1",
        [address],
      );
      expect(rows[0]).toMatchObject({ status: "sent", attempts: 4, last_error: null });
      expect(mailer.failed).toBe(3);
      expect(mailer.sent).toBe(1);
    } finally {
      await mailer.stop();
    }
  });

  it("a message refused for good (550) is marked failed with the reason, its link erased, the rest still sent", async () => {
    const smtp = await catcher({
      refuse: ({ to }) => (to.some((a) => a.startsWith("bounce")) ? 550 : undefined),
    });
    await admin.query(
      `select auth.queue_mail(null, 'sign_in_link', 'bounce@example.com',
                              '{"purpose": "sign_in", "link": "https://app.example/#sign-in=x"}')`,
    );
    const [fine] = await queue(1, "fine");
    const mailer = await startMailer({
      connection: { connectionString: mailerUrl },
      smtpUrl: smtp.url,
      from: "no-reply@example.com",
    });
    try {
      await smtp.waitFor((m) => m.to.includes(fine as string), 10_000);
      await until(
        async () => (await statuses()).failed === 1,
        10_000,
        "the refused message to be marked failed",
      );
      const { rows } = await admin.query(
        "select attempts, last_error, data ? 'link' as has_link from auth.outbox where to_address = 'bounce@example.com'",
      );
      expect(rows[0].attempts).toBe(1);
      expect(rows[0].last_error).toMatch(/550/);
      expect(rows[0].has_link).toBe(false);
    } finally {
      await mailer.stop();
    }
  });

  it("two mailers on one outbox never send the same message", async () => {
    const smtp = await catcher({ delayMs: 20 });
    await queue(30, "pair");
    const options = {
      connection: { connectionString: mailerUrl },
      smtpUrl: smtp.url,
      from: "no-reply@example.com",
    };
    const one = await startMailer(options);
    const two = await startMailer(options);
    try {
      await until(() => smtp.messages.length >= 30, 20_000, "30 messages");
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await one.stop();
      await two.stop();
    }
    expect(smtp.messages).toHaveLength(30);
    expect(new Set(smtp.messages.map((m) => m.messageId)).size).toBe(30);
    expect(one.sent, "both took part").toBeGreaterThan(0);
    expect(two.sent, "both took part").toBeGreaterThan(0);
  });

  it("says what is missing when started without its settings, and as a role that may not claim mail", async () => {
    const bare = spawnCli(["mailer"], {
      MAILER_DATABASE_URL: "",
      SMTP_URL: "",
      MAIL_FROM: "",
    });
    expect(await bare.exited).toBe(2);
    expect(bare.stderr()).toMatch(/--database-url .* is required/);
    expect(bare.stderr()).toMatch(/--smtp-url .* is required/);
    expect(bare.stderr()).toMatch(/--from .* is required/);
    const smtp = await catcher();
    const wrongRole = spawnCli(["mailer"], {
      MAILER_DATABASE_URL: deployment.cluster.uri("anonymous", deployment.database),
      SMTP_URL: smtp.url,
      MAIL_FROM: "no-reply@example.com",
    });
    const code = await Promise.race([
      wrongRole.exited,
      new Promise((r) => setTimeout(() => r("still running"), 10_000)),
    ]);
    if (code === "still running") wrongRole.child.kill("SIGKILL");
    expect(code, wrongRole.stderr()).toBe(1);
    expect(wrongRole.stderr()).toMatch(/permission denied|may not log in|not permitted/);
  });
});
