// The production recipe of the README, run for real: the documents applied
// with migrate, PostgREST started exactly as deploy/production/postgrest.service
// says (its ExecStart and EnvironmentFile, paths moved into a temp
// directory), and nginx with deploy/production/nginx.conf terminating TLS
// in front, serving the frontend on the same origin. A browser-like client
// registers, keeps a __Host- cookie over https, and is refused cross-origin.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postgrestConf } from "../src/commands/postgrest-conf.js";
import { migrate } from "../src/document/migrate.js";
import { startMailCatcher } from "../src/mail/catcher.js";
import { freePort } from "../src/net.js";
import { type Cluster, startCluster } from "../src/postgres/cluster.js";
import { TestClient } from "./support/client.js";
import { ROOT } from "./support/deploy-local-process.js";
import { type RecipeNginx, requireNginx, startRecipeNginx } from "./support/nginx.js";

const PRODUCTION = join(ROOT, "deploy", "production");
let cluster: Cluster;
let root: string;
let postgrest: ChildProcess | undefined;
let nginx: RecipeNginx | undefined;
let apiPort: number;
let httpsPort: number;

/** `Key=value` lines of a systemd unit's [Service] section. */
function unitSetting(unit: string, key: string): string {
  const line = unit.split("\n").find((l) => l.startsWith(`${key}=`));
  if (!line) throw new Error(`no ${key}= in the unit`);
  return line.slice(key.length + 1);
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not come up`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  requireNginx();
  root = mkdtempSync(join(tmpdir(), "production-"));
  cluster = await startCluster();
  const admin = (await import("pg")).default;
  const client = new admin.Client(cluster.connectionConfig());
  await client.connect();
  await client.query("create database app");
  await client.end();
  await migrate({ databaseUrl: cluster.uri("postgres", "app"), cwd: ROOT });

  // /srv/app: the project, with the toolkit where npm would put it.
  mkdirSync(join(root, "srv", "app", "node_modules"), { recursive: true });
  symlinkSync(ROOT, join(root, "srv", "app", "node_modules", "postgrest-sessions"));
  symlinkSync(join(ROOT, "deploy", "demo"), join(root, "srv", "app", "frontend"));
  // /etc/postgrest: the generated configuration and the environment file.
  mkdirSync(join(root, "etc", "postgrest"), { recursive: true });
  writeFileSync(join(root, "etc", "postgrest", "postgrest.conf"), await postgrestConf());
  apiPort = await freePort();
  writeFileSync(
    join(root, "etc", "postgrest", "env"),
    [
      `DB_URI=${cluster.uri("authenticator", "app")}`,
      `PORT=${apiPort}`,
      `ADMIN_PORT=${await freePort()}`,
      "",
    ].join("\n"),
  );

  // PostgREST exactly as the unit starts it.
  const unit = readFileSync(join(PRODUCTION, "postgrest.service"), "utf8");
  const moved = (text: string) =>
    text
      .replaceAll("/srv/app", join(root, "srv", "app"))
      .replaceAll("/etc/postgrest", join(root, "etc", "postgrest"));
  const environment = Object.fromEntries(
    readFileSync(moved(unitSetting(unit, "EnvironmentFile")), "utf8")
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  const [command, ...args] = moved(unitSetting(unit, "ExecStart")).split(" ");
  expect(command).toBe("/usr/bin/node");
  postgrest = spawn(process.execPath, args, {
    env: { ...process.env, ...environment },
    stdio: "ignore",
  });
  await waitFor(
    () =>
      fetch(`http://127.0.0.1:${environment.ADMIN_PORT}/ready`).then(
        (r) => r.ok,
        () => false,
      ),
    "PostgREST",
  );

  // nginx with the recipe's server blocks, in front of it.
  nginx = await startRecipeNginx(root, apiPort);
  httpsPort = Number(new URL(nginx.origin).port);
  insecure = nginx.dispatcher;
}, 120_000);

/** Trusts the test certificate, and nothing else changes. */
let insecure: Agent;

afterAll(async () => {
  await nginx?.stop();
  postgrest?.kill("SIGTERM");
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("production without Docker: systemd's PostgREST behind nginx with TLS", () => {
  it("serves the API and the frontend on one https origin, with a __Host- session cookie", async () => {
    const origin = `https://localhost:${httpsPort}`;
    const client = new TestClient(origin, { dispatcher: insecure });
    const registered = await client.register(
      `prod-${Date.now()}@example.com`,
      "Prod",
      "a production password",
    );
    expect(registered.status, registered.text).toBe(200);
    const cookie = registered.setCookies.find((c) => c.name === "__Host-session_token");
    expect(cookie).toMatchObject({ secure: true, httpOnly: true, path: "/" });
    expect(cookie?.domain).toBeUndefined();
    const headers = { Cookie: `__Host-session_token=${cookie?.value}` };
    expect((await client.get("/rpc/current_user", headers)).status).toBe(200);

    // Same origin (scheme included) may write; the http origin of the same host may not.
    const same = await client.post(
      "/todos",
      { description: "from the https origin" },
      { ...headers, Origin: origin },
    );
    expect(same.status, same.text).toBe(201);
    const plain = await client.post(
      "/todos",
      { description: "from http" },
      { ...headers, Origin: origin.replace("https", "http") },
    );
    expect(plain.status).toBe(403);

    const page = await client.get("/demo/");
    expect(page.status).toBe(200);
    expect(page.text).toContain("<title>Todos");
  });

  it("delivers mail with the mailer started as mailer.service says, links leading to the https origin", async () => {
    const origin = `https://localhost:${httpsPort}`;
    const smtp = await startMailCatcher();
    const etc = join(root, "etc", "postgrest");
    const credentials = join(root, "credentials");
    mkdirSync(credentials, { recursive: true });
    writeFileSync(join(credentials, "smtp-url"), `${smtp.url}\n`, { mode: 0o600 });
    writeFileSync(
      join(etc, "mailer.env"),
      `MAILER_DATABASE_URL=${cluster.uri("mailer", "app")}\nMAIL_FROM=Todos <no-reply@app.example.com>\n`,
    );
    const unit = readFileSync(join(PRODUCTION, "mailer.service"), "utf8");
    expect(unitSetting(unit, "LoadCredential")).toBe("smtp-url:/etc/postgrest/smtp-url");
    const environment = Object.fromEntries(
      readFileSync(unitSetting(unit, "EnvironmentFile").replace("/etc/postgrest", etc), "utf8")
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const [command, ...args] = unitSetting(unit, "ExecStart")
      .replaceAll("/srv/app", join(root, "srv", "app"))
      // biome-ignore lint/suspicious/noTemplateCurlyInString: systemd's syntax, not JavaScript's
      .replaceAll("${CREDENTIALS_DIRECTORY}", credentials)
      .split(" ");
    expect(command).toBe("/usr/bin/node");
    const admin = new (await import("pg")).default.Client(cluster.connectionConfig("app"));
    await admin.connect();
    await admin.query("update auth.settings set link_base_url = $1", [`${origin}/demo/`]);
    await admin.end();
    const mailer = spawn(process.execPath, args, {
      env: { ...process.env, ...environment },
      stdio: "ignore",
    });
    try {
      const email = `prod-mail-${Date.now()}@example.com`;
      const client = new TestClient(origin, { dispatcher: insecure });
      expect((await client.register(email, "Mail", "a production password")).status).toBe(200);
      const message = await smtp.waitFor((m) => m.to.includes(email), 15_000);
      expect(message.from).toBe("no-reply@app.example.com");
      const token = new RegExp(`${origin}/demo/#verify-email=([A-Za-z0-9_-]{43})`).exec(
        message.text,
      )?.[1];
      expect(token, message.text).toBeDefined();
      const verified = await client.post("/rpc/verify_email", { token });
      expect(verified.status, verified.text).toBe(200);
    } finally {
      const exited = new Promise((r) => mailer.once("exit", r));
      mailer.kill("SIGTERM");
      expect(await exited).toBe(0);
      await smtp.close();
    }
  });

  it("limits password checks per client address (a login flood with fresh emails)", async () => {
    const client = new TestClient(`https://localhost:${httpsPort}`, {
      dispatcher: insecure,
    });
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const answer = await client.post("/rpc/login", {
        email: `flood-${i}-${Date.now()}@example.com`,
        password: "a guess 123",
      });
      statuses.push(answer.status);
    }
    // nginx's burst lets the first ones through to the database (401: no
    // such account, or 429 from the module when its slots are busy); the
    // rest are refused by nginx itself, before any hash.
    const byNginx = statuses.filter((s) => s === 429).length;
    expect(statuses.slice(0, 5)).toContain(401);
    expect(byNginx).toBeGreaterThanOrEqual(15);
    // Other endpoints are not limited: the API itself answers (401, no session).
    const other = await client.get("/todos");
    expect(other.status, other.text).toBe(401);
  });
});
