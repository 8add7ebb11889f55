// The front door on the user's port: a minimal reverse proxy to whichever
// PostgREST currently serves the document, plus the static demo page under
// /demo/ on the same origin (so the session cookie, SameSite=Lax and the
// CSRF check behave exactly as they would behind a production proxy).
// Watch mode starts the next PostgREST beside the old one and flips the
// target once the new one is ready, so a reload never refuses a connection.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { extname, join } from "node:path";
import { registerCleanup } from "./cleanup.js";
import { assertPortFree } from "./postgrest.js";

export interface FrontProxy {
  readonly url: string;
  /** The demo page's address. */
  readonly demoUrl: string;
  /** Send new requests to PostgREST on this port (in-flight ones finish where they are). */
  setTarget(port: number): void;
  close(): Promise<void>;
}

/** The demo front end shipped with the toolkit. */
export const DEMO_DIR = join(import.meta.dirname, "..", "deploy", "demo");

const DEMO_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

/** Serves /demo/ files; returns false when the request is not for the demo. */
async function serveDemo(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  demoDir: string,
): Promise<boolean> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  if (path !== "/demo" && !path.startsWith("/demo/")) return false;
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
      "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
      "x-content-type-options": "nosniff",
      "referrer-policy": "same-origin",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  } catch {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
  return true;
}

/** Starts the proxy; until a target is set, API requests get 503. */
export async function startFrontProxy(
  port: number,
  targetPort?: number,
  demoDir: string = DEMO_DIR,
): Promise<FrontProxy> {
  await assertPortFree(port);
  let target = targetPort;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer(async (req, res) => {
    if (await serveDemo(req, res, demoDir)) return;
    if (target === undefined) {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ message: "no version of the document has loaded yet" }));
      return;
    }
    const upstream = http.request(
      {
        host: "127.0.0.1",
        port: target,
        method: req.method,
        path: req.url,
        // Host and Origin pass through untouched: the CSRF check compares them.
        headers: req.headers,
        agent,
      },
      (answer) => {
        // rawHeaders keeps repeated headers such as Set-Cookie intact.
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    upstream.on("error", (error) => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "application/json" });
      }
      res.end(JSON.stringify({ message: `PostgREST is not answering: ${error.message}` }));
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
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
    demoUrl: `http://127.0.0.1:${port}/demo/`,
    setTarget: (next) => {
      target = next;
    },
    close,
  };
}
