// pgweb's connect backend. pgweb (--sessions --connect-backend URL
// --connect-token SECRET) sends a browser that opens /connect/<ticket> to a
// database chosen by this backend: it POSTs {"resource": <ticket>, "token":
// <connect token>, "headers": {...}} as JSON and expects 200 with
// {"database_url": "postgres://..."}. The ticket (POST /rpc/pgweb_ticket)
// buys one pgweb session; the URL logs in through the gateway with that
// session's token as the password, so pgweb's connections end with it.

import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { listen } from "../net.js";
import type { Gateway } from "./server.js";

export interface ConnectBackendOptions {
  gateway: Gateway;
  /** The connect token pgweb is started with (--connect-token). */
  token: string;
  host?: string;
  port?: number;
  /** The gateway's address as pgweb reaches it (default: the gateway's own). */
  publicHost?: string;
  publicPort?: number;
  log?: (line: string) => void;
}

export interface ConnectBackend {
  readonly url: string;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;

function sameSecret(given: string, expected: string): boolean {
  // Hashes first: equal lengths for timingSafeEqual, whatever was sent.
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

function answer(response: ServerResponse, status: number, body: object): void {
  response.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  response.end(JSON.stringify(body));
}

async function readBody(request: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export async function startConnectBackend(options: ConnectBackendOptions): Promise<ConnectBackend> {
  if (options.token.length < 16) {
    throw new Error("the pgweb connect token must be at least 16 characters");
  }
  const log = options.log ?? (() => {});
  const { gateway } = options;
  const server = createServer(async (request, response) => {
    try {
      if (request.method !== "POST") {
        return answer(response, 405, { error: "POST only" });
      }
      if (!/^application\/json\b/i.test(request.headers["content-type"] ?? "")) {
        return answer(response, 415, { error: "content-type must be application/json" });
      }
      const text = await readBody(request);
      if (text === undefined) return answer(response, 413, { error: "body too large" });
      let body: { resource?: unknown; token?: unknown };
      try {
        body = JSON.parse(text);
      } catch {
        return answer(response, 400, { error: "the body is not JSON" });
      }
      if (typeof body.token !== "string" || !sameSecret(body.token, options.token)) {
        log("pgweb backend: refused a request with a wrong connect token");
        return answer(response, 401, { error: "wrong connect token" });
      }
      if (typeof body.resource !== "string" || body.resource === "") {
        return answer(response, 400, { error: "resource (the ticket) is missing" });
      }
      const redeemed = await gateway.redeemTicket(body.resource, "pgweb");
      if (!redeemed) {
        log("pgweb backend: refused an unknown, used or expired ticket");
        return answer(response, 404, { error: "unknown, used or expired ticket" });
      }
      const host = options.publicHost ?? gateway.host;
      const port = options.publicPort ?? gateway.port;
      const url =
        `postgres://${encodeURIComponent(redeemed.email)}:${encodeURIComponent(redeemed.token)}` +
        `@${host.includes(":") ? `[${host}]` : host}:${port}/${encodeURIComponent(gateway.database)}` +
        `?sslmode=${gateway.tls ? "require" : "disable"}`;
      log(`pgweb backend: a ticket of ${redeemed.email} redeemed`);
      return answer(response, 200, { database_url: url });
    } catch (error) {
      log(`pgweb backend: ${(error as Error).message}`);
      if (!response.headersSent) answer(response, 503, { error: "the database is unreachable" });
      else response.destroy();
    }
  });
  server.requestTimeout = 10_000;
  const host = options.host ?? "127.0.0.1";
  const port = await listen(server, host, options.port);
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
