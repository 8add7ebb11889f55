// A minimal reverse proxy on the user's port, in front of whichever PostgREST
// currently serves the document. Watch mode starts the next PostgREST beside
// the old one and flips the target once the new one is ready, so a reload
// never refuses a connection.

import http from "node:http";
import { registerCleanup } from "./cleanup.js";
import { assertPortFree } from "./postgrest.js";

export interface FrontProxy {
  readonly url: string;
  /** Send new requests to PostgREST on this port (in-flight ones finish where they are). */
  setTarget(port: number): void;
  close(): Promise<void>;
}

/** Starts the proxy; until a target is set it answers 503. */
export async function startFrontProxy(port: number, targetPort?: number): Promise<FrontProxy> {
  await assertPortFree(port);
  let target = targetPort;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
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
    setTarget: (next) => {
      target = next;
    },
    close,
  };
}
