// A local SMTP server that keeps what it receives, for deploy-local and
// tests: a real SMTP conversation (smtp-server), messages parsed with
// mailparser, and a page that lists them with their links clickable.

import type http from "node:http";
import { simpleParser } from "mailparser";
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import { escapeHtml } from "./templates.js";

export interface CaughtMessage {
  /** Order of arrival, from 1. */
  id: number;
  received: string;
  from: string;
  to: string[];
  subject: string;
  text: string;
  html: string | undefined;
  messageId: string | undefined;
}

export interface MailCatcherOptions {
  /**
   * Decides, for each message, whether to refuse it: an SMTP reply code
   * (451: try later, 550: never) or undefined to accept. Tests use it.
   */
  refuse?: (message: { to: string[] }) => number | undefined;
  /** Time taken to accept each message (tests: a slow server). */
  delayMs?: number;
}

export interface MailCatcher {
  readonly host: string;
  readonly port: number;
  /** smtp://127.0.0.1:port, for the mailer. */
  readonly url: string;
  /** What arrived, oldest first. */
  readonly messages: readonly CaughtMessage[];
  /** Resolves with the first message that matches, waiting up to timeoutMs. */
  waitFor(match: (message: CaughtMessage) => boolean, timeoutMs?: number): Promise<CaughtMessage>;
  /** The /mail/ page and its JSON (GET /mail/messages.json); false for other paths. */
  serve(req: http.IncomingMessage, res: http.ServerResponse): boolean;
  close(): Promise<void>;
}

export async function startMailCatcher(options: MailCatcherOptions = {}): Promise<MailCatcher> {
  const messages: CaughtMessage[] = [];
  const waiters = new Set<() => void>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback) {
      const to = session.envelope.rcptTo.map((r) => r.address);
      simpleParser(stream)
        .then(async (parsed) => {
          if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
          const code = options.refuse?.({ to });
          if (code !== undefined) {
            const error = Object.assign(new Error(`refused by the test server (${code})`), {
              responseCode: code,
            });
            callback(error);
            return;
          }
          messages.push({
            id: messages.length + 1,
            received: new Date().toISOString(),
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            to,
            subject: parsed.subject ?? "",
            text: parsed.text ?? "",
            html: typeof parsed.html === "string" ? parsed.html : undefined,
            messageId: parsed.messageId,
          });
          for (const waiter of waiters) waiter();
          callback();
        })
        .catch((error: Error) => callback(error));
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  // A sender that goes away mid-message is its own problem, not the catcher's.
  server.on("error", () => {});
  const address = server.server.address();
  const port = typeof address === "object" && address ? address.port : 0;

  const waitFor = (match: (message: CaughtMessage) => boolean, timeoutMs = 10_000) =>
    new Promise<CaughtMessage>((resolve, reject) => {
      const check = () => {
        const found = messages.find(match);
        if (!found) return false;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(`no such message arrived within ${timeoutMs} ms (${messages.length} caught)`),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });

  const serve = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    // Reads only: anything else under /mail is the application's.
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path === "/mail") {
      res.writeHead(301, { location: "/mail/" }).end();
      return true;
    }
    if (path === "/mail/messages.json") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(messages));
      return true;
    }
    if (path !== "/mail/") return false;
    res.writeHead(200, {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
      "referrer-policy": "same-origin",
    });
    res.end(mailPage(messages));
    return true;
  };

  return {
    host: "127.0.0.1",
    port,
    url: `smtp://127.0.0.1:${port}`,
    get messages() {
      return messages;
    },
    waitFor,
    serve,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Plain text with its http(s) links made clickable, everything else escaped. */
function linkified(text: string): string {
  return text
    .split(/(https?:\/\/[^\s<>"]+)/g)
    .map((part, i) =>
      i % 2 === 1 ? `<a href="${escapeHtml(part)}">${escapeHtml(part)}</a>` : escapeHtml(part),
    )
    .join("");
}

function mailPage(messages: readonly CaughtMessage[]): string {
  const items = [...messages]
    .reverse()
    .map(
      (m) => `<article>
<h2>${escapeHtml(m.subject)}</h2>
<p class="meta">#${m.id} to ${escapeHtml(m.to.join(", "))} from ${escapeHtml(m.from)} at ${escapeHtml(m.received)}</p>
<pre>${linkified(m.text)}</pre>
</article>`,
    )
    .join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mail caught by deploy-local</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}
article{border-top:1px solid #ccc;padding:.5rem 0}h2{font-size:1.1rem;margin:.5rem 0 0}
.meta{color:#666;margin:0}pre{white-space:pre-wrap;font:inherit}</style></head>
<body><h1>Mail caught by deploy-local</h1>
<p>Nothing here left this machine: the mailer sends to a local SMTP server, which keeps messages in memory until deploy-local stops. Newest first; reload for more.</p>
${items || "<p>No mail yet.</p>"}
</body></html>
`;
}
