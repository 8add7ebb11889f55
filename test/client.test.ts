// The test client's cookie jar: the HTTP tests trust it to behave like a
// browser, so it gets tests of its own (no server needed, except one local
// node:http server to check what goes over the wire).

import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CookieJar,
  defaultCookiePath,
  parseSetCookie,
  pathMatches,
  TestClient,
  uniqueEmail,
} from "./support/client.js";

describe("parseSetCookie", () => {
  it("reads the name, value and every attribute of a session cookie", () => {
    const c = parseSetCookie(
      "session_token=abc-_123; Path=/; HttpOnly; SameSite=Lax; Max-Age=1800",
    );
    expect(c).toMatchObject({
      name: "session_token",
      value: "abc-_123",
      path: "/",
      httpOnly: true,
      secure: false,
      sameSite: "Lax",
      maxAge: 1800,
      expires: undefined,
    });
    expect(c.attributes).toEqual({ path: "/", httponly: "", samesite: "Lax", "max-age": "1800" });
  });

  it("is case-insensitive about attribute names and tolerant of spacing", () => {
    const c = parseSetCookie("a=b;path=/x;  SECURE ;httponly;max-age=0");
    expect(c).toMatchObject({ path: "/x", secure: true, httpOnly: true, maxAge: 0 });
  });

  it("keeps '=' inside values and strips surrounding quotes", () => {
    expect(parseSetCookie("a=b=c; Path=/").value).toBe("b=c");
    expect(parseSetCookie('a="quoted"').value).toBe("quoted");
    expect(parseSetCookie("a=; Max-Age=0").value).toBe("");
  });

  it("parses Expires and ignores a non-numeric Max-Age", () => {
    const c = parseSetCookie("a=b; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=soon");
    expect(c.expires?.getTime()).toBe(0);
    expect(c.maxAge).toBeUndefined();
  });
});

describe("path rules (RFC 6265 5.1.4)", () => {
  it("matches equal paths, sub-paths at a '/' boundary, and nothing else", () => {
    expect(pathMatches("/", "/anything")).toBe(true);
    expect(pathMatches("/rpc", "/rpc")).toBe(true);
    expect(pathMatches("/rpc", "/rpc/login")).toBe(true);
    expect(pathMatches("/rpc/", "/rpc/login")).toBe(true);
    expect(pathMatches("/rpc", "/rpcx")).toBe(false);
    expect(pathMatches("/rpc", "/todos")).toBe(false);
    expect(pathMatches("/rpc", "/rpc?x=1")).toBe(true);
  });

  it("defaults a missing Path to the request's directory", () => {
    expect(defaultCookiePath("/rpc/login")).toBe("/rpc");
    expect(defaultCookiePath("/login")).toBe("/");
    expect(defaultCookiePath("/a/b/c?x=/y")).toBe("/a/b");
    expect(defaultCookiePath("")).toBe("/");
  });
});

describe("CookieJar", () => {
  it("sends what it stored and replaces a value with the same name and path", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("session_token=one; Path=/"));
    jar.store(parseSetCookie("session_token=two; Path=/"));
    expect(jar.header("/rpc/current_user")).toBe("session_token=two");
    expect(jar.size).toBe(1);
  });

  it("keeps cookies with the same name on different paths apart, most specific first", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("t=root; Path=/"));
    jar.store(parseSetCookie("t=rpc; Path=/rpc"));
    expect(jar.header("/rpc/login")).toBe("t=rpc; t=root");
    expect(jar.header("/todos")).toBe("t=root");
    expect(jar.get("t", "/rpc/x")).toBe("rpc");
  });

  it("only sends a cookie to paths it matches", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("a=1; Path=/admin"));
    expect(jar.header("/")).toBeUndefined();
    expect(jar.header("/administrator")).toBeUndefined();
    expect(jar.header("/admin/x")).toBe("a=1");
  });

  it("uses the default path when the cookie has none", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("a=1"), "/rpc/login");
    expect(jar.header("/rpc/current_user")).toBe("a=1");
    expect(jar.header("/todos")).toBeUndefined();
  });

  it("deletes on Max-Age=0 (the way the server clears the session cookie)", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("session_token=abc; Path=/; Max-Age=1800"));
    jar.store(parseSetCookie("session_token=; Path=/; Max-Age=0"));
    expect(jar.header("/")).toBeUndefined();
    expect(jar.size).toBe(0);
  });

  it("does not delete when the clearing cookie has another path", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("session_token=abc; Path=/"));
    jar.store(parseSetCookie("session_token=; Path=/rpc; Max-Age=0"));
    expect(jar.get("session_token")).toBe("abc");
  });

  it("deletes on a negative Max-Age and on Expires in the past", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("a=1; Path=/"));
    jar.store(parseSetCookie("b=2; Path=/"));
    jar.store(parseSetCookie("a=; Path=/; Max-Age=-1"));
    jar.store(parseSetCookie("b=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"));
    expect(jar.size).toBe(0);
  });

  it("lets Max-Age win over Expires", () => {
    const jar = new CookieJar();
    jar.store(parseSetCookie("a=1; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60"));
    expect(jar.get("a")).toBe("1");
  });

  it("forgets a cookie once its Max-Age has run out", () => {
    let now = 1_000_000;
    const jar = new CookieJar(() => now);
    jar.store(parseSetCookie("a=1; Path=/; Max-Age=60"));
    now += 59_000;
    expect(jar.get("a")).toBe("1");
    now += 2_000;
    expect(jar.get("a")).toBeUndefined();
  });

  it("forgets a cookie once its Expires date has passed", () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    const jar = new CookieJar(() => now);
    jar.store(parseSetCookie("a=1; Path=/; Expires=Tue, 01 Jan 2030 00:01:00 GMT"));
    expect(jar.get("a")).toBe("1");
    now += 120_000;
    expect(jar.get("a")).toBeUndefined();
  });

  it("can have a cookie planted by the test (as a script or attacker could)", () => {
    const jar = new CookieJar();
    jar.set("session_token", "planted");
    expect(jar.header("/rpc/login")).toBe("session_token=planted");
    jar.clear();
    expect(jar.size).toBe(0);
  });
});

describe("uniqueEmail", () => {
  it("never repeats and is a plausible address", () => {
    const emails = new Set(Array.from({ length: 100 }, () => uniqueEmail("x")));
    expect(emails.size).toBe(100);
    for (const email of emails) expect(email).toMatch(/^x-[0-9a-f]+-\d+-\d+@example\.com$/);
  });
});

describe("TestClient over the wire", () => {
  // A tiny server that records what it received and answers with the
  // Set-Cookie headers a test asks for in the x-reply-cookies header.
  const seen: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const wanted = req.headers["x-reply-cookies"];
      if (typeof wanted === "string") res.setHeader("Set-Cookie", JSON.parse(wanted));
      if (req.url === "/text") {
        res.setHeader("Content-Type", "text/plain");
        res.end("plain");
      } else {
        res.setHeader("Content-Type", "application/json; charset=utf-8");
        res.end(JSON.stringify({ ok: true }));
      }
    });
  });
  let client: TestClient;

  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    client = new TestClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const replyCookies = (...cookies: string[]) => ({ "x-reply-cookies": JSON.stringify(cookies) });

  it("stores several Set-Cookie headers from one response and sends them back", async () => {
    const first = await client.get(
      "/",
      replyCookies("session_token=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=1800", "other=1"),
    );
    expect(first.setCookies.map((c) => c.name)).toEqual(["session_token", "other"]);
    expect(first.sessionCookie).toMatchObject({ value: "abc", httpOnly: true, maxAge: 1800 });
    expect(first.body).toEqual({ ok: true });
    await client.get("/next");
    expect(seen.at(-1)?.headers.cookie).toBe("session_token=abc; other=1");
    expect(client.sessionToken).toBe("abc");
  });

  it("sends JSON bodies with a JSON content type and returns text bodies as text", async () => {
    const response = await client.post("/text", { a: 1 }, { Origin: "https://evil.example" });
    expect(response.body).toBe("plain");
    const request = seen.at(-1);
    expect(request?.method).toBe("POST");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.headers.origin).toBe("https://evil.example");
    expect(JSON.parse(request?.body ?? "")).toEqual({ a: 1 });
  });

  it("stops sending a cookie the server cleared", async () => {
    await client.get("/", replyCookies("session_token=abc; Path=/"));
    await client.get("/", replyCookies("session_token=; Path=/; Max-Age=0"));
    await client.get("/after");
    expect(seen.at(-1)?.headers.cookie ?? "").not.toContain("session_token");
  });

  it("lets an explicit Cookie header override the jar", async () => {
    await client.get("/", { Cookie: "session_token=mine" });
    expect(seen.at(-1)?.headers.cookie).toBe("session_token=mine");
  });

  it("gives a copied session to a second browser, and nothing else", async () => {
    await client.get("/", replyCookies("session_token=stolen; Path=/", "other=2; Path=/"));
    const thief = client.withCopiedSession();
    await thief.get("/x");
    expect(seen.at(-1)?.headers.cookie).toBe("session_token=stolen");
  });
});
