// Single sign-on: an identity provider's access token, verified by
// PostgREST, becomes our ordinary session cookie; nothing else about a
// token (a role claim, a token outside the Authorization header, a forged
// or expired one) gets anyone anywhere.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postgrestConf } from "../src/commands/postgrest-conf.js";
import { type Gateway, startGateway } from "../src/gateway/server.js";
import { upstreamAddress } from "../src/gateway/upstream.js";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { EXCHANGE_KEY_ID, exchangeKey } from "../src/serving/token-exchange.js";
import { PASSWORD, TestClient, uniqueEmail } from "./support/client.js";
import { spawnCli } from "./support/deploy-local-process.js";
import { connectPg, loginError } from "./support/gateway.js";
import { type IdentityProvider, startIdentityProvider } from "./support/identity-provider.js";
import { Libpq18, libpq18Python } from "./support/libpq18.js";
import { postgrestOnConfigFile, type RunningPostgrest } from "./support/postgrest-file.js";

let idp: IdentityProvider;
let deployment: LocalDeployment;
let api: string;
let counter = 0;

function subject(): string {
  return `sub-${Date.now().toString(36)}-${++counter}`;
}

/** POST /rpc/login_with_token with a bearer token; the client keeps the cookie. */
async function loginWithToken(client: TestClient, token: string) {
  return client.post("/rpc/login_with_token", {}, { authorization: `Bearer ${token}` });
}

beforeAll(async () => {
  idp = await startIdentityProvider();
  deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    ...(process.env.TEST_IDENTITY === "inline" ? { identity: "inline" as const } : {}),
    sso: { issuer: idp.issuer, audience: idp.audience },
  });
  api = deployment.url;
});

afterAll(async () => {
  await deployment?.stop();
  await idp?.close();
});

/** A provider user with an account that has a database door. */
async function signedUp(): Promise<{ sub: string; email: string }> {
  const sub = subject();
  const response = await loginWithToken(new TestClient(api), await idp.sign(sub));
  expect(response.status, response.text).toBe(200);
  const email = `${sub}@sso.example`;
  const db = await deployment.connect();
  try {
    await db.query("select auth.grant_door(user_id) from auth.users where email = $1", [email]);
  } finally {
    await db.end();
  }
  return { sub, email };
}

/**
 * A provider's userinfo endpoint, a real HTTP server: it answers for the
 * opaque tokens in `issued`, refuses others with 401, and can be taken down.
 */
async function startUserinfo(issued: Map<string, Record<string, unknown>>) {
  let asked = 0;
  const server = http.createServer((req, res) => {
    asked++;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "";
    const who = issued.get(token);
    res.writeHead(who ? 200 : 401, { "content-type": "application/json" });
    res.end(JSON.stringify(who ?? { error: "invalid_token" }));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    server,
    url: `http://127.0.0.1:${port}/userinfo`,
    /** How many questions it has answered. */
    asked: () => asked,
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A gateway beside the deployment's whose OAuth door names the provider. */
async function providerDoor(userinfo?: string): Promise<Gateway> {
  const doors = deployment.doors;
  if (!doors) throw new Error("the SSO deployment started no gateway");
  const config = deployment.cluster.connectionConfig(deployment.database);
  const keys = await (await fetch(`${idp.issuer}/keys`)).text();
  return startGateway({
    control: doors.control,
    upstream: upstreamAddress(String(config.host), Number(config.port), deployment.database),
    accessTokens: {
      issuer: idp.issuer,
      audience: idp.audience,
      jwks: keys,
      ...(userinfo ? { userinfo } : {}),
    },
    oauth: { issuer: idp.issuer },
  });
}

/** libpq 18 presenting `token` (no flow) at the door's OAuth port, with no user name. */
function presentToken(python: string, gateway: Gateway, token: string): Libpq18 {
  return new Libpq18(
    python,
    `host=127.0.0.1 port=${gateway.oauthPort} dbname=${deployment.database} ` +
      `sslmode=disable oauth_issuer=${idp.issuer} oauth_client_id=psql`,
    { OAUTH_TOKEN: token },
  );
}

describe("a project without sso.sql.md", () => {
  it("deploy-local with an identity provider says which document is missing, and leaves nothing", async () => {
    await expect(
      deployLocal({
        file: join(import.meta.dirname, "..", "sessions.sql.md"),
        port: await freePort(),
        tests: false,
        gateway: false,
        sso: { issuer: idp.issuer, audience: idp.audience },
      }),
    ).rejects.toThrow(/single sign-on needs sso\.sql\.md in the project's documents/);
  });
});

describe("login with an identity provider's token", () => {
  it("turns a valid token into a session cookie for the mapped user, the same user every time", async () => {
    const sub = subject();
    const client = new TestClient(api);
    const first = await loginWithToken(client, await idp.sign(sub));
    expect(first.status, first.text).toBe(200);
    expect(first.sessionCookie?.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(first.sessionCookie?.httpOnly).toBe(true);
    const me = await client.get("/rpc/current_user");
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ email: `${sub}@sso.example`, name: `User ${sub}` });

    const again = new TestClient(api);
    const second = await loginWithToken(again, await idp.sign(sub, { alg: "ES256" }));
    expect(second.status, second.text).toBe(200);
    expect((await again.get("/rpc/current_user")).body).toMatchObject({
      user_id: (me.body as { user_id: number }).user_id,
    });
    // Two logins, two different session tokens.
    expect(second.sessionCookie?.value).not.toBe(first.sessionCookie?.value);
  });

  it.each([
    ["an expired token", () => idp.sign(subject(), { expiresIn: -60 })],
    ["a token not valid yet", () => idp.sign(subject(), { notBefore: 600 })],
    ["a token for another audience", () => idp.sign(subject(), { claims: { aud: "another-app" } })],
    [
      "a token from an issuer that is not accepted",
      () => idp.sign(subject(), { claims: { iss: "https://evil.example" } }),
    ],
    ["a token with a bad signature", () => idp.sign(subject(), { foreignKey: true })],
    ["an unsigned token (alg none)", async () => idp.unsigned(subject())],
    ["an HS256 token signed with the public key", () => idp.hs256WithPublicKey(subject())],
    // PostgREST checks aud and exp only when present; the database requires them.
    ["a token without an audience", () => idp.sign(subject(), { claims: { aud: undefined } })],
    ["a token whose audience is null", () => idp.sign(subject(), { claims: { aud: null } })],
    ["a token without an expiry", () => idp.sign(subject(), { claims: { exp: undefined } })],
  ])("refuses %s with 401 and no cookie", async (_name, makeToken) => {
    const client = new TestClient(api);
    const response = await loginWithToken(client, await makeToken());
    expect(response.status, response.text).toBe(401);
    expect(response.sessionCookie).toBeUndefined();
  });

  it.each([
    ["false", false],
    ['the string "true"', "true"],
    ["the number 1", 1],
  ])("does not sign up or link an email whose email_verified is %s", async (_name, value) => {
    const client = new TestClient(api);
    const response = await loginWithToken(
      client,
      await idp.sign(subject(), { claims: { email_verified: value } }),
    );
    expect(response.status).toBe(403);
    expect(response.sessionCookie).toBeUndefined();
  });

  // A stranger registers someone else's address with a password before its
  // owner first signs in through the provider (pre-registration).
  it.each([
    ["by default", false],
    ["with linking by email on", true],
  ])(
    "gives the provider-verified owner of a pre-registered address an account of their own (%s)",
    async (_name, linkByEmail) => {
      const db = await deployment.connect();
      await db.query("update auth.settings set oidc_link_by_email = $1", [linkByEmail]);
      try {
        const email = uniqueEmail("pre-registered");
        const squatter = new TestClient(api);
        expect(
          (await squatter.post("/rpc/register", { email, name: "Squatter", password: PASSWORD }))
            .status,
        ).toBe(200);
        const squatterId = ((await squatter.get("/rpc/current_user")).body as { user_id: number })
          .user_id;

        const owner = new TestClient(api);
        const response = await loginWithToken(
          owner,
          await idp.sign(subject(), { claims: { email } }),
        );
        expect(response.status, response.text).toBe(200);
        const me = (await owner.get("/rpc/current_user")).body as { user_id: number };
        expect(me.user_id).not.toBe(squatterId);
        expect((await owner.post("/todos", { description: "the owner's secret" })).status).toBe(
          201,
        );

        // The squatter's password opens only the squatter's own, empty account.
        const again = new TestClient(api);
        expect((await again.login(email, PASSWORD)).status).toBe(200);
        expect(((await again.get("/rpc/current_user")).body as { user_id: number }).user_id).toBe(
          squatterId,
        );
        const seen = (await again.get("/todos")).body as Array<{ description: string }>;
        expect(seen.map((t) => t.description)).not.toContain("the owner's secret");
      } finally {
        await db.query("update auth.settings set oidc_link_by_email = false");
        await db.end();
      }
    },
  );

  it("does not link a second identity to a provider-verified account by default", async () => {
    const email = uniqueEmail("verified-owner");
    const first = new TestClient(api);
    expect(
      (await loginWithToken(first, await idp.sign(subject(), { claims: { email } }))).status,
    ).toBe(200);
    const other = new TestClient(api);
    const response = await loginWithToken(other, await idp.sign(subject(), { claims: { email } }));
    expect(response.status).toBe(403);
    expect(response.sessionCookie).toBeUndefined();
    expect((await other.get("/rpc/current_user")).status).toBe(401);
  });

  it("ignores a token sent in a cookie or the query string", async () => {
    const token = await idp.sign(subject());
    const client = new TestClient(api);
    // PostgREST reads tokens from the Authorization header only; in the query
    // string it is just an unknown argument (400).
    const inQuery = await client.post(`/rpc/login_with_token?access_token=${token}`, {});
    expect([400, 401], inQuery.text).toContain(inQuery.status);
    expect(inQuery.sessionCookie).toBeUndefined();
    const inCookie = await client.post(
      "/rpc/login_with_token",
      {},
      { cookie: `access_token=${token}` },
    );
    expect(inCookie.status).toBe(401);
    expect(inCookie.sessionCookie).toBeUndefined();
  });

  it("never lets a role claim choose the database role", async () => {
    for (const role of ["webuser", "postgres", "api_owner"]) {
      const token = await idp.sign(subject(), { claims: { role } });
      const bare = new TestClient(api);
      // The token alone is no session: private endpoints stay closed.
      const todos = await bare.get("/todos", { authorization: `Bearer ${token}` });
      expect(todos.status, `${role}: ${todos.text}`).toBe(401);
      // And logging in with it yields an ordinary session for its user.
      const login = await loginWithToken(bare, token);
      expect(login.status, login.text).toBe(200);
      expect((await bare.get("/rpc/current_user")).status).toBe(200);
    }
  });

  it("leaves password sessions as they were", async () => {
    const email = uniqueEmail("password");
    const client = new TestClient(api);
    expect(
      (await client.post("/rpc/register", { email, name: "Pat", password: PASSWORD })).status,
    ).toBe(200);
    expect((await client.get("/rpc/current_user")).status).toBe(200);
  });

  it("generates a PostgREST configuration (deploy/postgrest.conf plus the provider's keys) that works", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sso-conf-"));
    const file = join(dir, "postgrest.conf");
    writeFileSync(file, await postgrestConf({ issuer: idp.issuer, audience: idp.audience }));
    let postgrest: RunningPostgrest | undefined;
    try {
      postgrest = await postgrestOnConfigFile(
        file,
        deployment.cluster.uri("authenticator", deployment.database),
      );
      const client = new TestClient(postgrest.url);
      const login = await loginWithToken(client, await idp.sign(subject()));
      expect(login.status, login.text).toBe(200);
      expect((await client.get("/rpc/current_user")).status).toBe(200);
    } finally {
      postgrest?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("an access token as the database password (the gateway)", () => {
  async function doorFailures(email: string): Promise<number> {
    const db = await deployment.connect();
    try {
      const { rows } = await db.query<{ n: number }>(
        "select count(*)::int as n from auth.audit where event = 'door_failed' and email = auth.email_key($1)",
        [email],
      );
      return rows[0]?.n ?? 0;
    } finally {
      await db.end();
    }
  }

  function door() {
    const doors = deployment.doors;
    if (!doors) throw new Error("the SSO deployment started no gateway");
    return { host: doors.gateway.host, port: doors.gateway.port };
  }

  it("logs a linked identity in as its user, in a session of its own", async () => {
    const { sub, email } = await signedUp();
    const client = await connectPg(door(), email, await idp.sign(sub, { alg: "ES256" }));
    const { rows } = await client.query<{ email: string; via: string }>(
      `select u.email, s.via from api."current_user"() u, auth.my_sessions() s
        where s.via = 'database: access token'`,
    );
    expect(rows).toEqual([{ email, via: "database: access token" }]);
    await client.end();
  });

  it.each([
    ["an expired token", (sub: string) => idp.sign(sub, { expiresIn: -60 })],
    ["a token not valid yet", (sub: string) => idp.sign(sub, { notBefore: 600 })],
    [
      "a token for another audience",
      (sub: string) => idp.sign(sub, { claims: { aud: "another-app" } }),
    ],
    ["a token without an audience", (sub: string) => idp.sign(sub, { claims: { aud: undefined } })],
    ["a token without an expiry", (sub: string) => idp.sign(sub, { claims: { exp: undefined } })],
    [
      "a token from another issuer",
      (sub: string) => idp.sign(sub, { claims: { iss: "https://evil.example" } }),
    ],
    ["a token with a bad signature", (sub: string) => idp.sign(sub, { foreignKey: true })],
    ["an unsigned token (alg none)", async (sub: string) => idp.unsigned(sub)],
    ["an HS256 token signed with the public key", (sub: string) => idp.hs256WithPublicKey(sub)],
  ])("refuses %s", async (_name, makeToken) => {
    const { sub, email } = await signedUp();
    const error = await loginError(door(), email, await makeToken(sub));
    expect(error?.code).toBe("28P01");
    // A token that fails the gateway's own check cost nothing: it writes nothing.
    expect(await doorFailures(email)).toBe(0);
  });

  it("refuses another user's valid token, and a token of an identity never linked", async () => {
    const first = await signedUp();
    const second = await signedUp();
    expect((await loginError(door(), first.email, await idp.sign(second.sub)))?.code).toBe("28P01");
    const stranger = subject();
    expect(
      (await loginError(door(), `${stranger}@sso.example`, await idp.sign(stranger)))?.code,
    ).toBe("28P01");
  });
});

describe("the provider's token on the OAuth door (libpq 18)", () => {
  // A gateway whose OAuth door sends clients to the provider: a provider
  // user's psql 18 runs its device flow there, and the door takes the token.
  let gateway: Gateway;
  let python: string;
  const clients: Libpq18[] = [];

  beforeAll(async () => {
    python = libpq18Python();
    gateway = await providerDoor();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await gateway?.close();
  });

  function connect(token: string): Libpq18 {
    const client = presentToken(python, gateway, token);
    clients.push(client);
    return client;
  }

  it("names the provider in its challenge and lets a linked identity in, with no user name", async () => {
    const { sub, email } = await signedUp();
    const client = connect(await idp.sign(sub));
    const hook = await client.next(["hook"]);
    expect(hook.openid_configuration).toBe(`${idp.issuer}/.well-known/openid-configuration`);
    await client.next(["connected"]);
    const who = await client.query(`select email from api."current_user"()`);
    expect(who.rows).toEqual([[email]]);
  });

  it("refuses a token of an identity that no account has linked", async () => {
    const client = connect(await idp.sign(subject()));
    const outcome = await client.next(["connected", "connect_failed"]);
    expect(outcome.event).toBe("connect_failed");
    expect(outcome.error).toMatch(/OAuth bearer authentication failed/);
  });
});

describe("opaque provider tokens on the OAuth door, checked at userinfo (libpq 18)", () => {
  const issued = new Map<string, Record<string, unknown>>();
  let userinfo: Awaited<ReturnType<typeof startUserinfo>>;
  let gateway: Gateway;
  let python: string;
  const clients: Libpq18[] = [];

  beforeAll(async () => {
    python = libpq18Python();
    userinfo = await startUserinfo(issued);
    gateway = await providerDoor(userinfo.url);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await gateway?.close();
    await userinfo?.stop();
  });

  async function outcome(token: string): Promise<{ event: string; error?: unknown }> {
    const client = presentToken(python, gateway, token);
    clients.push(client);
    const result = await client.next(["connected", "connect_failed"]);
    if (result.event === "connected") {
      const who = await client.query(`select email from api."current_user"()`);
      await client.end();
      return { event: "connected", error: who.rows };
    }
    await client.end();
    return result;
  }

  it("lets in the linked account the provider names, asks once a minute per token, and refuses tokens it does not know", async () => {
    const { sub, email } = await signedUp();
    const token = randomBytes(24).toString("hex");
    issued.set(token, { sub, email });
    const before = userinfo.asked();
    expect(await outcome(token)).toEqual({ event: "connected", error: [[email]] });
    expect(await outcome(token)).toEqual({ event: "connected", error: [[email]] });
    expect(
      userinfo.asked() - before,
      "the second login used the provider's answer of a moment ago",
    ).toBe(1);

    const unknown = await outcome(randomBytes(24).toString("hex"));
    expect(unknown.event).toBe("connect_failed");
    expect(String(unknown.error)).toMatch(/OAuth bearer authentication failed/);
  });

  it("refuses every token, saying why, while the provider cannot be asked", async () => {
    const token = randomBytes(24).toString("hex");
    issued.set(token, { sub: subject(), email: "nobody@sso.example" });
    await userinfo.stop();
    const down = await outcome(token);
    expect(down.event).toBe("connect_failed");
    expect(String(down.error)).toMatch(/the identity provider could not check the token/);
  });
});

describe("opaque provider tokens at /rpc/login_with_token (the token exchange)", () => {
  const issued = new Map<string, Record<string, unknown>>();
  let userinfo: Awaited<ReturnType<typeof startUserinfo>>;
  let local: LocalDeployment;

  beforeAll(async () => {
    userinfo = await startUserinfo(issued);
    // deploy-local's front door runs the exchange itself.
    local = await deployLocal({
      port: await freePort(),
      tests: false,
      gateway: false,
      sso: { issuer: idp.issuer, audience: idp.audience, userinfo: userinfo.url },
    });
  }, 120_000);

  afterAll(async () => {
    await local?.stop();
    await userinfo?.stop();
  });

  /** An opaque token the provider knows, for a new subject with a verified address. */
  function opaqueToken(): { token: string; email: string } {
    const sub = subject();
    const email = `${sub}@opaque.example`;
    const token = randomBytes(24).toString("hex");
    issued.set(token, { sub, email, email_verified: true });
    return { token, email };
  }

  it("logs a person in with an opaque token the provider vouches for: a session like any other", async () => {
    const { token, email } = opaqueToken();
    const client = new TestClient(local.url);
    const response = await loginWithToken(client, token);
    expect(response.status, response.text).toBe(200);
    const me = await client.get("/rpc/current_user");
    expect(me.status).toBe(200);
    expect((me.body as { email: string }).email).toBe(email);
    // The provider's JWTs still go to PostgREST as they are.
    const jwtClient = new TestClient(local.url);
    expect((await loginWithToken(jwtClient, await idp.sign(subject()))).status).toBe(200);
  });

  it("keeps the same-origin check: a cross-site page cannot log a browser in with a token", async () => {
    const { token } = opaqueToken();
    const response = await new TestClient(local.url).post(
      "/rpc/login_with_token",
      {},
      {
        authorization: `Bearer ${token}`,
        "sec-fetch-site": "cross-site",
        origin: "https://evil.example",
      },
    );
    expect(response.status, response.text).toBe(403);
  });

  it("in production: postgrest-sessions token-exchange in front of PostgREST, trusted through postgrest-conf --exchange-key", async () => {
    const dir = mkdtempSync(join(tmpdir(), "token-exchange-"));
    let production: LocalDeployment | undefined;
    let run: ReturnType<typeof spawnCli> | undefined;
    try {
      const keyFile = join(dir, "exchange.pem");
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
      const key = await exchangeKey(readFileSync(keyFile, "utf8"));
      const conf = await postgrestConf(
        { issuer: idp.issuer, audience: idp.audience },
        "pre-request",
        key,
      );
      const secret = /^jwt-secret = "(.*)"$/m.exec(conf)?.[1]?.replaceAll('\\"', '"') ?? "";
      expect(JSON.parse(secret).keys.map((k: { kid: string }) => k.kid)).toContain(EXCHANGE_KEY_ID);
      // PostgREST with exactly the key set postgrest-conf wrote, no exchange of deploy-local's own.
      production = await deployLocal({
        port: await freePort(),
        tests: false,
        gateway: false,
        sso: { issuer: idp.issuer, audience: idp.audience },
        postgrestEnv: { PGRST_JWT_SECRET: secret },
      });
      const port = await freePort();
      run = spawnCli([
        "token-exchange",
        "--listen",
        `127.0.0.1:${port}`,
        "--postgrest",
        production.postgrest.url,
        "--key-file",
        keyFile,
        "--oidc-issuer",
        idp.issuer,
        "--oidc-audience",
        idp.audience,
        "--oidc-userinfo",
        userinfo.url,
      ]);
      const started = Date.now();
      while (!run.stderr().includes("listening") && Date.now() - started < 15_000) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(run.stderr()).toContain("listening");
      const { token, email } = opaqueToken();
      // As nginx passes it on: Host of the site, the client's address.
      const host = new URL(production.url).host;
      const login = await fetch(`http://127.0.0.1:${port}/rpc/login_with_token`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json", host },
        body: "{}",
      });
      expect(login.status, await login.clone().text()).toBe(200);
      const cookie = login.headers.get("set-cookie")?.split(";")[0] ?? "";
      expect(cookie).toMatch(/^session_token=/);
      const me = await fetch(`${production.url}/rpc/current_user`, { headers: { cookie } });
      expect(((await me.json()) as { email: string }).email).toBe(email);
      const refused = await fetch(`http://127.0.0.1:${port}/rpc/login_with_token`, {
        method: "POST",
        headers: {
          authorization: "Bearer not-a-token-it-knows",
          "content-type": "application/json",
        },
        body: "{}",
      });
      expect(refused.status).toBe(401);
    } finally {
      run?.child.kill("SIGINT");
      if (run) await run.exited;
      await production?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("refuses a token the provider does not know (401), and every token while it cannot be asked (503)", async () => {
    const unknown = await loginWithToken(
      new TestClient(local.url),
      randomBytes(24).toString("hex"),
    );
    expect(unknown.status).toBe(401);
    expect(unknown.text).toContain("the identity provider does not accept this token");
    const { token } = opaqueToken();
    await userinfo.stop();
    const down = await loginWithToken(new TestClient(local.url), token);
    expect(down.status).toBe(503);
    expect(down.text).toContain("the identity provider could not check the token");
  });
});
