// A small HTTP client for tests that keeps cookies the way a browser does.
//
// Session tests live and die by cookie handling: a test that "logs out" but
// keeps sending the old cookie proves nothing, and one that drops a cookie the
// browser would keep misses bugs. So the jar follows RFC 6265 where it
// matters for a single-origin API: `Max-Age` (which wins over `Expires`),
// `Expires` in the past, `Path` matching, and replacement by name + path.
// Domain scoping is not modelled: one client talks to one origin.

import { randomBytes } from "node:crypto";
import { Agent, type Dispatcher, request } from "undici";

/** One parsed `Set-Cookie` header, with its attributes kept for assertions. */
export interface SetCookie {
  name: string;
  value: string;
  /** The `Path` attribute as sent, if any. */
  path: string | undefined;
  /** `Max-Age` in seconds, if sent and numeric. */
  maxAge: number | undefined;
  expires: Date | undefined;
  httpOnly: boolean;
  secure: boolean;
  /** `SameSite` as sent (e.g. "Lax"), if any. */
  sameSite: string | undefined;
  domain: string | undefined;
  /** Every attribute by lower-cased name; flags map to "". */
  attributes: Record<string, string>;
  /** The header exactly as received. */
  raw: string;
}

/** Parses one `Set-Cookie` header value (RFC 6265 section 5.2, leniently). */
export function parseSetCookie(header: string): SetCookie {
  const [pair = "", ...rest] = header.split(";");
  const eq = pair.indexOf("=");
  // A pair without "=" is a nameless cookie in RFC 6265; no server we test sends one.
  const name = (eq === -1 ? "" : pair.slice(0, eq)).trim();
  let value = (eq === -1 ? pair : pair.slice(eq + 1)).trim();
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    value = value.slice(1, -1);
  }
  const attributes: Record<string, string> = {};
  for (const part of rest) {
    const i = part.indexOf("=");
    const key = (i === -1 ? part : part.slice(0, i)).trim().toLowerCase();
    if (key === "") continue;
    attributes[key] = i === -1 ? "" : part.slice(i + 1).trim();
  }
  const maxAgeText = attributes["max-age"];
  const maxAge =
    maxAgeText !== undefined && /^-?\d+$/.test(maxAgeText) ? Number(maxAgeText) : undefined;
  const expiresText = attributes.expires;
  const expiresDate = expiresText === undefined ? undefined : new Date(expiresText);
  return {
    name,
    value,
    path: attributes.path,
    maxAge,
    expires: expiresDate && !Number.isNaN(expiresDate.getTime()) ? expiresDate : undefined,
    httpOnly: "httponly" in attributes,
    secure: "secure" in attributes,
    sameSite: attributes.samesite,
    domain: attributes.domain,
    attributes,
    raw: header,
  };
}

/** RFC 6265 5.1.4: the directory of the request path, used when a cookie has no Path. */
export function defaultCookiePath(requestPath: string): string {
  const path = requestPath.split("?")[0] ?? "/";
  if (!path.startsWith("/")) return "/";
  const lastSlash = path.lastIndexOf("/");
  return lastSlash <= 0 ? "/" : path.slice(0, lastSlash);
}

/** RFC 6265 5.1.4: does a cookie with `cookiePath` go with a request for `requestPath`? */
export function pathMatches(cookiePath: string, requestPath: string): boolean {
  const path = requestPath.split("?")[0] || "/";
  if (path === cookiePath) return true;
  if (!path.startsWith(cookiePath)) return false;
  return cookiePath.endsWith("/") || path[cookiePath.length] === "/";
}

interface StoredCookie {
  name: string;
  value: string;
  path: string;
  /** Epoch milliseconds; undefined for a session cookie (kept until the "browser" closes). */
  expiresAt: number | undefined;
}

/** A browser-like cookie store for one origin. */
export class CookieJar {
  #cookies: StoredCookie[] = [];

  /** `now` is injectable so expiry can be unit-tested without waiting. */
  constructor(private readonly now: () => number = Date.now) {}

  /** Applies a `Set-Cookie` received in answer to a request for `requestPath`. */
  store(cookie: SetCookie, requestPath = "/"): void {
    if (cookie.name === "") return;
    const path =
      cookie.path?.startsWith("/") === true ? cookie.path : defaultCookiePath(requestPath);
    let expiresAt: number | undefined;
    if (cookie.maxAge !== undefined) {
      // Max-Age wins over Expires; zero or negative means "delete now".
      expiresAt = cookie.maxAge <= 0 ? Number.NEGATIVE_INFINITY : this.now() + cookie.maxAge * 1000;
    } else if (cookie.expires !== undefined) {
      expiresAt = cookie.expires.getTime();
    }
    // Same name and path replaces; a different path is a different cookie.
    this.#cookies = this.#cookies.filter((c) => !(c.name === cookie.name && c.path === path));
    if (expiresAt !== undefined && expiresAt <= this.now()) return;
    this.#cookies.push({ name: cookie.name, value: cookie.value, path, expiresAt });
  }

  /** Plants a cookie as a page script or an attacker could (e.g. for session fixation tests). */
  set(name: string, value: string, path = "/"): void {
    this.store(parseSetCookie(`${name}=${value}; Path=${path}`));
  }

  /** The live cookies that go with a request for `requestPath`, longest path first. */
  cookiesFor(requestPath: string): { name: string; value: string }[] {
    this.#dropExpired();
    return this.#cookies
      .filter((c) => pathMatches(c.path, requestPath))
      .sort((a, b) => b.path.length - a.path.length)
      .map(({ name, value }) => ({ name, value }));
  }

  /** The `Cookie` request header for `requestPath`, or undefined when there is nothing to send. */
  header(requestPath: string): string | undefined {
    const cookies = this.cookiesFor(requestPath);
    return cookies.length === 0 ? undefined : cookies.map((c) => `${c.name}=${c.value}`).join("; ");
  }

  /** The value a request for `requestPath` would send for `name`. */
  get(name: string, requestPath = "/"): string | undefined {
    return this.cookiesFor(requestPath).find((c) => c.name === name)?.value;
  }

  /** Forgets every cookie, like closing a private window. */
  clear(): void {
    this.#cookies = [];
  }

  /** How many live cookies the jar holds, across all paths. */
  get size(): number {
    this.#dropExpired();
    return this.#cookies.length;
  }

  #dropExpired(): void {
    const now = this.now();
    this.#cookies = this.#cookies.filter((c) => c.expiresAt === undefined || c.expiresAt > now);
  }
}

/**
 * The session cookie's name: `session_token` over plain http (deploy-local),
 * `__Host-session_token` where cookies are Secure (a deployment on https,
 * reached with TEST_API_URL=https://...).
 */
export const SESSION_COOKIE = process.env.TEST_API_URL?.startsWith("https:")
  ? "__Host-session_token"
  : "session_token";

export interface TestResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON when the response says JSON and has a body; otherwise the text. */
  // biome-ignore lint/suspicious/noExplicitAny: tests assert on arbitrary JSON shapes.
  body: any;
  text: string;
  setCookies: SetCookie[];
  /** The Set-Cookie for the session cookie (SESSION_COOKIE), if this response sent one. */
  sessionCookie: SetCookie | undefined;
}

export interface RequestOptions {
  /** Sent as JSON with `Content-Type: application/json`. */
  json?: unknown;
  /** Sent as is; set `Content-Type` in `headers` yourself. */
  body?: string | Buffer;
  headers?: Record<string, string>;
}

type Method = Dispatcher.HttpMethod;

/** Run id: makes test data unique per run so the suite passes twice against one instance. */
export const RUN_ID = randomBytes(4).toString("hex");
let sequence = 0;

/** An email address no other test (in this run or an earlier one) uses. */
export function uniqueEmail(label = "user"): string {
  sequence += 1;
  return `${label}-${RUN_ID}-${process.pid}-${sequence}@example.com`;
}

/** A password that passes the contract's rules (8 characters to 72 bytes). */
export const PASSWORD = "correct horse battery staple";

let clients = 0;

/**
 * For a client of a loopback URL: a dispatcher that connects from a loopback
 * address of its own (the kernel routes all of 127.0.0.0/8 to loopback), so
 * that every test client is a client of its own to the API's per-address
 * limits, as the browsers of different people are.
 */
function ownLoopbackAddress(baseUrl: string): Dispatcher | undefined {
  const host = new URL(baseUrl).hostname;
  if (!/^127\./.test(host) && host !== "localhost") return undefined;
  clients += 1;
  const n = clients + (process.pid % 200) * 30_000;
  const localAddress = `127.${2 + ((n >> 15) & 127)}.${(n >> 7) & 255}.${1 + (n & 127)}`;
  return new Agent({ localAddress });
}

/** A browser for one origin: a cookie jar plus request helpers. */
export class TestClient {
  readonly jar: CookieJar;
  private readonly defaultHeaders: Record<string, string>;

  constructor(
    readonly baseUrl: string,
    options: {
      jar?: CookieJar;
      headers?: Record<string, string>;
      /**
       * An undici dispatcher (e.g. an Agent that accepts a test certificate).
       * By default a client of a loopback URL connects from a loopback
       * address of its own.
       */
      dispatcher?: Dispatcher;
    } = {},
  ) {
    this.jar = options.jar ?? new CookieJar();
    this.defaultHeaders = options.headers ?? {};
    this.dispatcher = options.dispatcher ?? ownLoopbackAddress(baseUrl);
  }

  readonly dispatcher: Dispatcher | undefined;

  /** The session token the next request to `/` would send. */
  get sessionToken(): string | undefined {
    return this.jar.get(SESSION_COOKIE);
  }

  /** The `Host` this client's requests carry (for same-origin `Origin` headers). */
  get host(): string {
    return new URL(this.baseUrl).host;
  }

  /** The `Origin` a page served by this API would send. */
  get origin(): string {
    return new URL(this.baseUrl).origin;
  }

  async request(method: Method, path: string, options: RequestOptions = {}): Promise<TestResponse> {
    const headers: Record<string, string> = { ...this.defaultHeaders };
    let body: string | Buffer | undefined = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    Object.assign(headers, lowerCaseKeys(options.headers ?? {}));
    // A test that sets its own Cookie header means it; otherwise send the jar's.
    if (headers.cookie === undefined) {
      const cookie = this.jar.header(path);
      if (cookie !== undefined) headers.cookie = cookie;
    }
    const send = () =>
      request(new URL(path, this.baseUrl), {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
      });
    const response = await send();
    const text = await response.body.text();
    const raw = response.headers["set-cookie"];
    const setCookies = (raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]).map(
      parseSetCookie,
    );
    for (const cookie of setCookies) this.jar.store(cookie, path);
    const contentType = String(response.headers["content-type"] ?? "");
    let parsed: unknown = text;
    if (text !== "" && /json/i.test(contentType)) {
      try {
        parsed = JSON.parse(text);
      } catch {
        // leave it as text: a test asserting on JSON will fail and show it
      }
    }
    return {
      status: response.statusCode,
      headers: response.headers,
      body: parsed,
      text,
      setCookies,
      sessionCookie: setCookies.find((c) => c.name === SESSION_COOKIE),
    };
  }

  get(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("GET", path, headers ? { headers } : {});
  }

  head(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("HEAD", path, headers ? { headers } : {});
  }

  options(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("OPTIONS", path, headers ? { headers } : {});
  }

  post(path: string, json?: unknown, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("POST", path, withJson(json, headers));
  }

  put(path: string, json?: unknown, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("PUT", path, withJson(json, headers));
  }

  patch(path: string, json?: unknown, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("PATCH", path, withJson(json, headers));
  }

  delete(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.request("DELETE", path, headers ? { headers } : {});
  }

  register(email: string, name: string, password: string = PASSWORD): Promise<TestResponse> {
    return this.post("/rpc/register", { email, name, password });
  }

  login(email: string, password: string = PASSWORD): Promise<TestResponse> {
    return this.post("/rpc/login", { email, password });
  }

  logout(): Promise<TestResponse> {
    return this.post("/rpc/logout");
  }

  currentUser(): Promise<TestResponse> {
    return this.get("/rpc/current_user");
  }

  /** A client sharing nothing with this one: a second browser. */
  fresh(): TestClient {
    return new TestClient(this.baseUrl, { headers: this.defaultHeaders });
  }

  /** A second browser that starts with a copy of this one's session cookie (a stolen cookie). */
  withCopiedSession(): TestClient {
    const copy = this.fresh();
    const token = this.sessionToken;
    if (token !== undefined) copy.jar.set(SESSION_COOKIE, token);
    return copy;
  }
}

function withJson(json: unknown, headers?: Record<string, string>): RequestOptions {
  return {
    ...(json === undefined ? {} : { json }),
    ...(headers ? { headers } : {}),
  };
}

function lowerCaseKeys(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

export interface LoggedInUser {
  client: TestClient;
  email: string;
  name: string;
  password: string;
  userId: number;
}

/**
 * Registers a fresh user and returns a client logged in as them. Fails loudly
 * when registration does not work, so a broken register shows up as itself
 * rather than as a confusing failure further down.
 */
export async function newUser(baseUrl: string, label = "user"): Promise<LoggedInUser> {
  const client = new TestClient(baseUrl);
  const email = uniqueEmail(label);
  const name = `${label} ${RUN_ID}`;
  const registered = await client.register(email, name, PASSWORD);
  if (registered.status >= 300 || client.sessionToken === undefined) {
    throw new Error(
      `registering ${email} failed: ${registered.status} ${registered.text} (cookie: ${client.sessionToken ?? "none"})`,
    );
  }
  const me = await client.currentUser();
  if (me.status !== 200) throw new Error(`current_user after register: ${me.status} ${me.text}`);
  return { client, email, name, password: PASSWORD, userId: me.body.user_id };
}
