// The front proxy under load: every answer comes from PostgREST, whether the
// client keeps its connection alive or closes it after each request, and
// while watch mode swaps one PostgREST for the next.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../src/net.js";
import { deployLocal } from "../src/serving/deploy.js";
import { type WatchSession, watchDocument } from "../src/serving/watch.js";

interface LoadResult {
  /** Answers by status. */
  statuses: Record<number, number>;
  /** Answers that did not come from PostgREST: proxy errors and broken connections. */
  proxyErrors: string[];
}

/**
 * Sends `total` GET requests from `concurrency` workers. With `close`, each
 * request says `Connection: close` on a connection of its own (as curl
 * -H 'Connection: close' or Python's urllib do); otherwise the workers share a
 * keep-alive pool.
 */
async function load(
  url: string,
  total: number,
  concurrency: number,
  close: boolean,
): Promise<LoadResult> {
  const target = new URL(url);
  const agent = close ? undefined : new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses: Record<number, number> = {};
  const proxyErrors: string[] = [];
  let sent = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const request = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: `${target.pathname}${target.search}`,
          headers: close ? { connection: "close" } : {},
          agent: agent ?? false,
        },
        (response) => {
          let body = "";
          response.on("data", (chunk: Buffer) => {
            body += chunk.toString();
          });
          response.on("end", () => {
            const status = response.statusCode ?? 0;
            statuses[status] = (statuses[status] ?? 0) + 1;
            // PostgREST never answers 502 or 503 here; the proxy does when it fails.
            if (status === 502 || status === 503) proxyErrors.push(`${status} ${body}`);
            resolve();
          });
          response.on("error", (error) => {
            proxyErrors.push(`response: ${error.message}`);
            resolve();
          });
        },
      );
      request.on("error", (error) => {
        proxyErrors.push(`request: ${error.message}`);
        resolve();
      });
      request.end();
    });
  const worker = async () => {
    while (sent < total) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent?.destroy();
  return { statuses, proxyErrors };
}

describe("the front proxy under load", () => {
  const apiUrl = inject("apiUrl");

  it("answers 1,500 requests that each send Connection: close, all from PostgREST", async () => {
    const result = await load(`${apiUrl}/todos`, 1500, 3, true);
    expect(result.proxyErrors).toEqual([]);
    expect(result.statuses[401]).toBe(1500);
  });

  it("answers 1,500 keep-alive requests, all from PostgREST", async () => {
    const result = await load(`${apiUrl}/todos`, 1500, 3, false);
    expect(result.proxyErrors).toEqual([]);
    expect(result.statuses[401]).toBe(1500);
  });
});

describe("when the database is down", () => {
  it("PostgREST's 503 reaches the client without the server's socket path", async () => {
    const deployment = await deployLocal({ port: await freePort(), tests: false, gateway: false });
    try {
      await deployment.cluster.stop();
      // The first request may meet a pooled connection as it dies; PostgREST
      // then notices the database is gone and answers 503.
      let response = await fetch(`${deployment.url}/todos`);
      for (let i = 0; i < 50 && response.status !== 503; i++) {
        await response.text();
        await new Promise((r) => setTimeout(r, 100));
        response = await fetch(`${deployment.url}/todos`);
      }
      const text = await response.text();
      expect(response.status).toBe(503);
      expect(JSON.parse(text)).toMatchObject({
        code: expect.stringMatching(/^PGRST00/),
        details: null,
      });
      expect(text).not.toContain(deployment.cluster.socketDir);
      expect(text).not.toContain(".s.PGSQL");
    } finally {
      await deployment.stop();
    }
  });
});

describe("what the proxy answers itself", () => {
  it("answers /favicon.ico with a plain 404, not a database error", async () => {
    const response = await fetch(`${inject("apiUrl")}/favicon.ico`);
    expect(response.status).toBe(404);
    const body = await response.text();
    expect(body).not.toMatch(/relation|api\.|permission|PGRST/i);
  });
});

describe("the front proxy during watch reloads", () => {
  const minimal = readFileSync(join(import.meta.dirname, "fixtures", "minimal.sql.md"), "utf8");
  let dir: string;
  let session: WatchSession;
  let reloads = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "proxy-watch-"));
    writeFileSync(join(dir, "app.sql.md"), minimal);
    session = await watchDocument({
      file: join(dir, "app.sql.md"),
      port: await freePort(),
      tests: false,
      onReload: (outcome) => {
        if (outcome.kind === "loaded") reloads++;
      },
    });
  });

  afterAll(async () => {
    await session?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("never answers with a proxy error while PostgREST is replaced, with or without keep-alive", async () => {
    const before = reloads;
    let saving = true;
    const saves = (async () => {
      for (let version = 1; version <= 5; version++) {
        writeFileSync(
          join(dir, "app.sql.md"),
          `${minimal}\n\`\`\`sql\ncreate function api.v${version}() returns int language sql as $$ select ${version} $$;\n\`\`\`\n`,
        );
        const target = before + version;
        const deadline = Date.now() + 20_000;
        while (reloads < target && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 20));
      }
      await session.idle();
      saving = false;
    })();
    const results: LoadResult[] = [];
    while (saving) {
      results.push(
        ...(await Promise.all([
          load(`${session.url}/rpc/hello?name=you`, 150, 2, true),
          load(`${session.url}/rpc/hello?name=you`, 150, 2, false),
        ])),
      );
    }
    await saves;
    expect(reloads - before).toBe(5);
    expect(results.flatMap((r) => r.proxyErrors)).toEqual([]);
    const answered = results.reduce((sum, r) => sum + (r.statuses[200] ?? 0), 0);
    expect(answered).toBe(results.length * 150);
  });
});
