// The mailer: delivers the messages email.sql.md writes into auth.outbox.
//
// It logs in as the `mailer` role, listens on the auth_mail channel, and
// sends one message per transaction: auth.mail_next() takes the oldest due
// message FOR UPDATE SKIP LOCKED (several mailers never take the same one),
// the message goes to the SMTP server, and auth.mail_sent() or
// auth.mail_failed() records what happened before the commit. Asked to stop,
// it finishes the message it holds first, so that a clean stop sends nothing
// twice and loses nothing.

import { hostname } from "node:os";
import nodemailer, { type Transporter } from "nodemailer";
import pg from "pg";
import { MailTemplates } from "./templates.js";

export interface MailerOptions {
  /** The database, as the mailer role (or any role that may call auth.mail_*). */
  connection: pg.ClientConfig;
  /** The SMTP server: smtp://user:password@host:587 (STARTTLS when offered) or smtps://...:465. */
  smtpUrl: string;
  /** The From: address. */
  from: string;
  /** A directory whose templates replace the built-in ones (templates/mail/). */
  templates?: string;
  /** What {{app}} says in messages (default: the host of the link, or "our service"). */
  appName?: string;
  /** The first retry's delay; each later one doubles it, up to an hour (default 10 s). */
  retryBaseMs?: number;
  /** How often to look for due retries without being woken (default 5 s). */
  pollMs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface Mailer {
  /** Messages this mailer sent, and attempts that failed. */
  readonly sent: number;
  readonly failed: number;
  /** Finishes the message in hand, then disconnects. */
  stop(): Promise<void>;
}

const MAX_RETRY_MS = 3_600_000;

interface OutboxMessage {
  message_id: string;
  template: string;
  to_address: string;
  data: Record<string, unknown>;
  attempts: number;
}

/** Whether an SMTP failure is final (5xx: the server refuses this message for good). */
function permanent(error: unknown): boolean {
  const code = (error as { responseCode?: number }).responseCode;
  return typeof code === "number" && code >= 500 && code < 600;
}

export async function startMailer(options: MailerOptions): Promise<Mailer> {
  const log = options.log ?? (() => {});
  const templates = new MailTemplates(options.templates);
  const retryBaseMs = options.retryBaseMs ?? 10_000;
  const pollMs = options.pollMs ?? 5_000;
  const transport: Transporter = nodemailer.createTransport({
    url: options.smtpUrl,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
  });
  const messageHost = hostname() || "postgrest-sessions";
  let sent = 0;
  let failed = 0;
  let stopping = false;
  let client: pg.Client | undefined;
  let wake: (() => void) | undefined;
  // A notification that came while a message was in hand: look again at once.
  let notified = false;
  let nextRetryAt = Number.POSITIVE_INFINITY;

  const connect = async (): Promise<pg.Client> => {
    const next = new pg.Client({
      connectionTimeoutMillis: 10_000,
      // A connection that died without a word (a network partition) is
      // noticed, and a statement that never answers does not hold stop().
      keepAlive: true,
      query_timeout: 60_000,
      ...options.connection,
    });
    next.on("error", (error) => {
      log(`mailer: database connection lost: ${error.message}`);
      wake?.();
    });
    next.on("notification", () => {
      notified = true;
      wake?.();
    });
    try {
      await next.connect();
      await next.query("listen auth_mail");
    } catch (error) {
      await next.end().catch(() => {});
      throw error;
    }
    return next;
  };

  /** Sends the next due message; false when none was due. */
  const deliverOne = async (db: pg.Client): Promise<boolean> => {
    // Requests become messages with links, committed before any is sent.
    await db.query("select auth.mail_resolve()");
    await db.query("begin");
    try {
      const { rows } = await db.query<OutboxMessage>("select * from auth.mail_next()");
      const message = rows[0];
      if (!message) {
        await db.query("commit");
        return false;
      }
      const data = message.data;
      const link = typeof data.link === "string" ? data.link : undefined;
      try {
        const values: Record<string, string> = {
          app: options.appName ?? (link ? new URL(link).host : "our service"),
          email: message.to_address,
          name: typeof data.name === "string" ? data.name : "",
          link: link ?? "",
          new_email: typeof data.new_email === "string" ? data.new_email : "",
        };
        const mail = templates.render(message.template, values);
        await transport.sendMail({
          from: options.from,
          to: message.to_address,
          subject: mail.subject,
          text: mail.text,
          ...(mail.html ? { html: mail.html } : {}),
          // One id per outbox row: a receiver can tell a resend from a new message.
          messageId: `<outbox-${message.message_id}@${messageHost}>`,
        });
        await db.query("select auth.mail_sent($1)", [message.message_id]);
        sent++;
        log(`mailer: sent message ${message.message_id} (${message.template})`);
      } catch (error) {
        failed++;
        const final = permanent(error) || !(error as { code?: string }).code;
        const delay = Math.min(MAX_RETRY_MS, retryBaseMs * 2 ** message.attempts);
        const reason = (error as Error).message;
        await db.query("select auth.mail_failed($1, $2, $3::interval)", [
          message.message_id,
          reason,
          final ? null : `${delay} milliseconds`,
        ]);
        if (!final) nextRetryAt = Math.min(nextRetryAt, Date.now() + delay);
        log(
          `mailer: message ${message.message_id} (${message.template}) failed: ${reason}` +
            (final ? " (given up)" : ` (again in ${Math.round(delay / 1000)} s)`),
        );
      }
      await db.query("commit");
      return true;
    } catch (error) {
      await db.query("rollback").catch(() => {});
      throw error;
    }
  };

  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      if (stopping) {
        resolve();
        return;
      }
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      }
      wake = done;
    });

  let lastCleanup = 0;
  const loop = async () => {
    let backoff = 500;
    while (!stopping) {
      try {
        client ??= await connect();
        // Expired links and month-old messages go, once an hour.
        if (Date.now() - lastCleanup > 3_600_000) {
          lastCleanup = Date.now();
          await client.query("select auth.mail_cleanup()");
        }
        notified = false;
        const delivered = await deliverOne(client);
        // A round that worked: the next failure waits the shortest again.
        backoff = 500;
        if (delivered) continue;
        if (notified) continue;
        // Nothing due: wait for a notification, the next retry this mailer
        // scheduled (a retry already past was someone else's to send), or the poll.
        const now = Date.now();
        if (nextRetryAt <= now) nextRetryAt = Number.POSITIVE_INFINITY;
        await pause(Math.max(10, Math.min(pollMs, nextRetryAt + 20 - now)));
      } catch (error) {
        if (stopping) break;
        log(`mailer: ${(error as Error).message}; trying again in ${backoff} ms`);
        await client?.end().catch(() => {});
        client = undefined;
        await pause(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  };

  // The first connection before returning: a wrong URL or role fails now.
  client = await connect();
  const { rows } = await client
    .query<{ allowed: boolean | null }>(
      "select has_function_privilege(to_regprocedure('auth.mail_next()'), 'execute') as allowed",
    )
    .catch(async (error: Error) => {
      await client?.end().catch(() => {});
      transport.close();
      throw error;
    });
  if (!rows[0]?.allowed) {
    await client.end().catch(() => {});
    transport.close();
    throw new Error(
      rows[0]?.allowed === null
        ? "this database has no outbox (auth.mail_next): load email.sql.md"
        : `the role ${String(options.connection.user ?? "given")} may not claim mail: connect as the mailer role`,
    );
  }
  const running = loop();
  return {
    get sent() {
      return sent;
    },
    get failed() {
      return failed;
    },
    async stop() {
      stopping = true;
      wake?.();
      await running;
      await client?.end().catch(() => {});
      client = undefined;
      transport.close();
    },
  };
}
