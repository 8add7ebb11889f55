// The front door on the user's port: a minimal reverse proxy to whichever
// PostgREST currently serves the document, plus the static demo page under
// /demo/ on the same origin (so the session cookie, SameSite=Lax and the
// CSRF check behave exactly as they would behind a production proxy).
// Watch mode starts the next PostgREST beside the old one and flips the
// target once the new one is ready, so a reload never refuses a connection.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { extname, join } from "node:path";
import { registerCleanup } from "../cleanup.js";
import { assertPortFree, listen } from "../net.js";
import { type Exchanged, LOGIN_WITH_TOKEN } from "./token-exchange.js";

export interface FrontProxy {
  readonly url: string;
  /** The frontend's address (undefined when the project has none). */
  readonly demoUrl: string | undefined;
  /** Send new requests to PostgREST on this port (in-flight ones finish where they are). */
  setTarget(port: number): void;
  /**
   * Send reads (GET, HEAD) to these PostgRESTs in turn (PostgRESTs of read
   * replicas), except from a client that wrote in the last READ_OWN_WRITES_SECONDS:
   * it reads from the primary's, and sees its own writes.
   */
  setReadTargets(ports: number[]): void;
  /**
   * Resolves once no request is in flight to PostgREST on this port (true),
   * or after the timeout (false). Stop a replaced PostgREST only after this.
   */
  drained(port: number, timeoutMs?: number): Promise<boolean>;
  /**
   * Adds pages of the toolkit's own beside the API (deploy-local's /mail/):
   * the handler answers and returns true, or returns false to pass.
   */
  addPages(handler: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): void;
  /**
   * Opaque provider tokens at POST /rpc/login_with_token: the exchange
   * replaces one with a JWT PostgREST trusts, or refuses (token-exchange.ts).
   */
  setLoginExchange(exchange: (authorization: string | undefined) => Promise<Exchanged>): void;
  close(): Promise<void>;
}

const DEMO_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

/** Serves /favicon.ico and /demo/ files; returns false for everything else (the API). */
async function serveDemo(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  demoDir: string | undefined,
): Promise<boolean> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  if (path === "/favicon.ico") {
    // Browsers ask for it on every origin; PostgREST would answer with a
    // database error about a relation named favicon.ico.
    res.writeHead(404, { "content-type": "text/plain" }).end("no favicon here");
    return true;
  }
  if (demoDir === undefined || (path !== "/demo" && !path.startsWith("/demo/"))) return false;
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return true;
  }
  if (path === "/demo") {
    res.writeHead(301, { location: "/demo/" }).end();
    return true;
  }
  const name = path === "/demo/" ? "index.html" : path.slice("/demo/".length);
  // Flat directory, plain names only: nothing can climb out of it.
  const type = DEMO_TYPES[extname(name)];
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(name) || !type) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    return true;
  }
  try {
    const body = await readFile(join(demoDir, name));
    res.writeHead(200, {
      "content-type": type,
      "content-length": body.length,
      "cache-control": "no-cache",
      "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
      "x-content-type-options": "nosniff",
      "referrer-policy": "same-origin",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  } catch {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
  return true;
}

// Hop-by-hop headers (RFC 9110, 7.6.1) describe one connection, not the
// request: the client's "Connection: close" is about its socket to us and
// must not reach the pooled keep-alive socket to PostgREST, which PostgREST
// would then close under a request the pool hands it next.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

export function endToEndHeaders(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const named = String(headers.connection ?? "")
    .split(",")
    .map((name) => name.trim().toLowerCase());
  const kept: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name) && !named.includes(name)) kept[name] = value;
  }
  return kept;
}

/** The response's raw headers without hop-by-hop ones (repeats such as Set-Cookie kept). */
export function endToEndRawHeaders(raw: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!HOP_BY_HOP.has((raw[i] as string).toLowerCase()))
      kept.push(raw[i] as string, raw[i + 1] as string);
  }
  return kept;
}

const SESSION_COOKIES = ["session_token", "__Host-session_token"];

/**
 * Where OAuth clients look for an issuer's metadata (RFC 8414 and OpenID
 * Connect Discovery), answered by the device flow's discovery function
 * (device.sql.md); every other path goes to PostgREST as it came.
 */
const WELL_KNOWN = new Set([
  "/.well-known/openid-configuration",
  "/.well-known/oauth-authorization-server",
]);

export function apiPath(url: string): string {
  const question = url.indexOf("?");
  const path = question < 0 ? url : url.slice(0, question);
  return WELL_KNOWN.has(path) ? "/rpc/openid_configuration" : url;
}

/**
 * With read replicas, a client that wrote (a login, a new todo) reads from
 * the primary for this long, so that it never reads a replica that has not
 * replayed its write yet (replication takes milliseconds; see
 * docs/production.md, "Scaling out"). A cookie, because it must follow the
 * browser, not a connection.
 */
export const READ_OWN_WRITES_SECONDS = 2;
export const READ_OWN_WRITES_COOKIE = "pgs_read_primary";

function hasCookie(header: string | undefined, name: string): boolean {
  return (header ?? "").split(";").some((pair) => pair.trim().startsWith(`${name}=`));
}

/**
 * A Cookie header without the session cookie when it comes more than once.
 * A sibling subdomain can plant a second `session_token` (cookie tossing);
 * PostgREST would keep whichever came last, so the request would run in the
 * attacker's session. None of them is trusted then: the request is anonymous.
 */
export function withoutAmbiguousSessionCookies(header: string): string {
  const pairs = header
    .split(";")
    .map((pair) => pair.trim())
    .filter(Boolean);
  const nameOf = (pair: string) => pair.slice(0, Math.max(pair.indexOf("="), 0)).trim();
  const ambiguous = SESSION_COOKIES.filter(
    (name) => pairs.filter((pair) => nameOf(pair) === name).length > 1,
  );
  if (ambiguous.length === 0) return header;
  return pairs.filter((pair) => !ambiguous.includes(nameOf(pair))).join("; ");
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

/**
 * PostgREST's 503 for a database it cannot reach carries the driver's error
 * in `details`, which names the server's socket path or host. That is for
 * PostgREST's log, not for every client: the body is passed on without it.
 */
function answerUnavailable(
  answer: http.IncomingMessage,
  res: http.ServerResponse,
  settle: () => void,
  extraHeaders: string[],
): void {
  const chunks: Buffer[] = [];
  answer.on("data", (chunk: Buffer) => chunks.push(chunk));
  answer.once("error", settle);
  answer.once("end", () => {
    settle();
    let body = Buffer.concat(chunks).toString("utf8");
    try {
      const error = JSON.parse(body) as Record<string, unknown>;
      if (typeof error.code === "string" && /^PGRST00\d$/.test(error.code)) {
        body = JSON.stringify({ ...error, details: null, hint: "try again in a moment" });
      }
    } catch {
      // Not JSON: passed on as it came.
    }
    const headers = endToEndRawHeaders(answer.rawHeaders);
    const kept: string[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if ((headers[i] as string).toLowerCase() !== "content-length") {
        kept.push(headers[i] as string, headers[i + 1] as string);
      }
    }
    res.writeHead(503, answer.statusMessage, [
      ...kept,
      ...extraHeaders,
      "content-length",
      String(Buffer.byteLength(body)),
    ]);
    res.end(body);
  });
}

/**
 * Requests in flight per PostgREST port, so that a replaced PostgREST is
 * stopped only once it has answered everything it was given.
 */
class InFlight {
  private readonly counts = new Map<number, number>();
  private readonly drainWaiters = new Map<number, Array<() => void>>();

  /** Counts a request to `port`; the returned function uncounts it, once. */
  start(port: number): () => void {
    this.counts.set(port, (this.counts.get(port) ?? 0) + 1);
    let settled = false;
    return () => {
      if (settled) return;
      settled = true;
      const count = (this.counts.get(port) ?? 1) - 1;
      if (count > 0) {
        this.counts.set(port, count);
        return;
      }
      this.counts.delete(port);
      for (const wake of this.drainWaiters.get(port)?.splice(0) ?? []) wake();
    };
  }

  drained(port: number, timeoutMs: number): Promise<boolean> {
    if (!this.counts.has(port)) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      const waiters = this.drainWaiters.get(port) ?? [];
      waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
      this.drainWaiters.set(port, waiters);
    });
  }
}

/** The headers a request carries upstream: end-to-end ones, one session cookie at most, who the client is. */
function upstreamHeaders(req: http.IncomingMessage, body: Buffer): http.OutgoingHttpHeaders {
  const headers = endToEndHeaders(req.headers);
  if (typeof headers.cookie === "string") {
    headers.cookie = withoutAmbiguousSessionCookies(headers.cookie);
  }
  // The client's address, appended as nginx's $proxy_add_x_forwarded_for
  // does: the password line gives each address its share (sessions.sql.md).
  const forwardedFor = req.headers["x-forwarded-for"];
  const remote = req.socket.remoteAddress?.replace(/^::ffff:/, "") ?? "";
  headers["x-forwarded-for"] = forwardedFor ? `${forwardedFor}, ${remote}` : remote;
  if (body.length > 0 || req.headers["content-length"] !== undefined) {
    headers["content-length"] = body.length;
  }
  return headers;
}

/** Starts the proxy; until a target is set, API requests get 503. */
export async function startFrontProxy(
  port: number,
  targetPort?: number,
  /** A directory of static files served under /demo/ (the project's "frontend"). */
  demoDir?: string,
): Promise<FrontProxy> {
  await assertPortFree(port);
  let target = targetPort;
  let readTargets: number[] = [];
  let nextRead = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const inFlight = new InFlight();
  const pages: Array<(req: http.IncomingMessage, res: http.ServerResponse) => boolean> = [];
  let loginExchange: ((authorization: string | undefined) => Promise<Exchanged>) | undefined;

  /**
   * Sends one request upstream. A failure before any answer is retried once
   * when it cannot have reached PostgREST's code: a pooled socket that
   * PostgREST had already closed (ECONNRESET on a reused socket), or a
   * PostgREST that was replaced meanwhile (the retry goes to the new one).
   * The body is buffered, so a retry resends it intact.
   */
  const forward = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    body: Buffer,
    attempt: number,
  ): void => {
    const read = req.method === "GET" || req.method === "HEAD";
    const fromReplica =
      read && readTargets.length > 0 && !hasCookie(req.headers.cookie, READ_OWN_WRITES_COOKIE);
    if (fromReplica) nextRead = (nextRead + 1) % readTargets.length;
    const upstreamPort = fromReplica ? (readTargets[nextRead] as number) : (target as number);
    // A write (whatever its answer: it may have committed) makes the client
    // read from the primary for a moment.
    const afterWrite =
      !read && readTargets.length > 0
        ? [
            "set-cookie",
            `${READ_OWN_WRITES_COOKIE}=1; Path=/; Max-Age=${READ_OWN_WRITES_SECONDS}; HttpOnly; SameSite=Lax`,
          ]
        : [];
    const settle = inFlight.start(upstreamPort);
    const upstream = http.request(
      {
        host: "127.0.0.1",
        port: upstreamPort,
        method: req.method,
        path: apiPath(req.url ?? "/"),
        // Host and Origin pass through untouched: the CSRF check compares them.
        headers: upstreamHeaders(req, body),
        agent,
      },
      (answer) => {
        if (answer.statusCode === 503) {
          answerUnavailable(answer, res, settle, afterWrite);
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, [
          ...endToEndRawHeaders(answer.rawHeaders),
          ...afterWrite,
        ]);
        answer.pipe(res);
        answer.once("end", settle);
        answer.once("error", settle);
        answer.once("close", settle);
      },
    );
    upstream.on("error", (error: NodeJS.ErrnoException) => {
      settle();
      const stale = upstream.reusedSocket && error.code === "ECONNRESET";
      const replaced = !fromReplica && target !== upstreamPort && error.code === "ECONNREFUSED";
      if (!res.headersSent && attempt === 1 && (stale || replaced) && target !== undefined) {
        forward(req, res, body, attempt + 1);
        return;
      }
      if (!res.headersSent) {
        res.writeHead(502, ["content-type", "application/json", ...afterWrite]);
        res.end(JSON.stringify({ message: `PostgREST is not answering: ${error.message}` }));
      } else {
        res.destroy(error);
      }
    });
    upstream.end(body);
  };

  const server = http.createServer(async (req, res) => {
    if (await serveDemo(req, res, demoDir)) return;
    if (pages.some((page) => page(req, res))) return;
    if (target === undefined) {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ message: "no version of the document has loaded yet" }));
      return;
    }
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch {
      return; // the client went away
    }
    if (
      loginExchange &&
      req.method === "POST" &&
      new URL(req.url ?? "/", "http://localhost").pathname === LOGIN_WITH_TOKEN
    ) {
      let exchanged: Exchanged;
      try {
        exchanged = await loginExchange(req.headers.authorization);
      } catch (error) {
        process.stderr.write(`token exchange: ${(error as Error).message}\n`);
        res.writeHead(500, { "content-type": "application/json; charset=utf-8" });
        res.end(
          JSON.stringify({
            code: "PT500",
            details: null,
            hint: null,
            message: "the token exchange failed",
          }),
        );
        return;
      }
      if (exchanged.kind === "refused") {
        res.writeHead(exchanged.status, { "content-type": "application/json; charset=utf-8" });
        res.end(exchanged.body);
        return;
      }
      if (exchanged.kind === "replaced") req.headers.authorization = exchanged.authorization;
    }
    forward(req, res, body, 1);
  });
  await listen(server, "127.0.0.1", port);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      agent.destroy();
      unregister();
    });
    return closing;
  };
  const unregister = registerCleanup({
    name: `proxy on port ${port}`,
    stop: close,
    lastResort: () => {
      server.closeAllConnections();
    },
  });
  return {
    url: `http://127.0.0.1:${port}`,
    demoUrl: demoDir === undefined ? undefined : `http://127.0.0.1:${port}/demo/`,
    setTarget: (next) => {
      target = next;
    },
    setLoginExchange: (exchange) => {
      loginExchange = exchange;
    },
    setReadTargets: (ports) => {
      readTargets = [...ports];
    },
    drained: (upstreamPort, timeoutMs = 10_000) => inFlight.drained(upstreamPort, timeoutMs),
    addPages: (handler) => {
      pages.push(handler);
    },
    close,
  };
}
