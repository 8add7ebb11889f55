// postgrest-sessions token-exchange: opaque identity-provider tokens at
// POST /rpc/login_with_token in production. nginx sends that route here when
// the bearer token is not a JWT; the exchange asks the provider's userinfo
// endpoint, puts a one-minute JWT of its own in the token's place (signed
// with --key-file, whose public half postgrest-conf --exchange-key adds to
// PostgREST's keys), and passes the request on to PostgREST, whose answer
// (the session cookie, or a refusal) goes back unchanged. See
// src/serving/token-exchange.ts and docs/single-sign-on.md.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { Command, Option } from "commander";
import { registerCleanup, setSignalExitCode } from "../cleanup.js";
import { listen } from "../net.js";
import { endToEndHeaders, endToEndRawHeaders } from "../serving/proxy.js";
import { exchangeKey, LOGIN_WITH_TOKEN, tokenExchange } from "../serving/token-exchange.js";
import { userinfoChecker } from "../serving/userinfo.js";
import { assertNoProblems, runAction, type SsoFlags, ssoOptions } from "./common.js";
import { parseAddress } from "./gateway.js";

interface ExchangeFlags extends SsoFlags {
  listen: string;
  postgrest: string;
  keyFile?: string;
}

/** A login request is a small JSON body; anything bigger is refused. */
const MAX_BODY = 64 * 1024;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function answer(res: http.ServerResponse, status: number, message: string): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
  res.end(JSON.stringify({ code: `PT${status}`, details: null, hint: null, message }));
}

export function tokenExchangeCommand(): Command {
  return new Command("token-exchange")
    .summary("let an identity provider's opaque access tokens log in at /rpc/login_with_token")
    .description(
      "Serve POST /rpc/login_with_token for tokens that are not JWTs (nginx routes them here): " +
        "ask the provider's userinfo endpoint, then pass the login on to PostgREST with a " +
        "one-minute JWT signed with --key-file in the token's place. PostgREST must trust that " +
        "key (postgrest-conf --exchange-key). A token the provider refuses gets 401; one it " +
        "cannot be asked about, 503.",
    )
    .addOption(
      new Option("--listen <host:port>", "where nginx sends the opaque logins")
        .env("TOKEN_EXCHANGE_LISTEN")
        .default("127.0.0.1:3002"),
    )
    .addOption(
      new Option("--postgrest <url>", "PostgREST, where the logins go on")
        .env("TOKEN_EXCHANGE_POSTGREST")
        .default("http://127.0.0.1:3000"),
    )
    .addOption(
      new Option("--key-file <file>", "its EC P-256 private key (PEM)").env(
        "TOKEN_EXCHANGE_KEY_FILE",
      ),
    )
    .addOption(new Option("--oidc-issuer <url>", "the identity provider").env("OIDC_ISSUER"))
    .addOption(
      new Option("--oidc-audience <aud>", "this deployment's audience").env("OIDC_AUDIENCE"),
    )
    .addOption(
      new Option("--oidc-userinfo <url>", "the provider's userinfo endpoint").env("OIDC_USERINFO"),
    )
    .action((flags: ExchangeFlags) => runAction(() => runExchange(flags)));
}

async function runExchange(flags: ExchangeFlags): Promise<void> {
  const problems: string[] = [];
  const sso = ssoOptions(flags, problems);
  if (!sso) problems.push("--oidc-issuer (or OIDC_ISSUER) is required");
  if (sso && !sso.userinfo) problems.push("--oidc-userinfo (or OIDC_USERINFO) is required");
  if (!flags.keyFile) problems.push("--key-file (or TOKEN_EXCHANGE_KEY_FILE) is required");
  const at = parseAddress(flags.listen, "--listen", problems);
  let upstream: URL | undefined;
  try {
    upstream = new URL(flags.postgrest);
    if (upstream.protocol !== "http:") problems.push("--postgrest must be an http:// URL");
  } catch {
    problems.push(`--postgrest is not a URL: "${flags.postgrest}"`);
  }
  assertNoProblems(problems);
  const key = await exchangeKey(await readFile(flags.keyFile as string, "utf8"), flags.keyFile);
  const { issuer, audience, userinfo } = sso as {
    issuer: string;
    audience: string;
    userinfo: string;
  };
  const exchange = tokenExchange(userinfoChecker({ issuer, audience, userinfo }), key, log);
  const target = upstream as URL;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method !== "POST" || path !== LOGIN_WITH_TOKEN) {
      return answer(res, 404, `this serves only POST ${LOGIN_WITH_TOKEN}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        answer(res, 413, "the request body is too large");
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > MAX_BODY) return;
      void (async () => {
        const exchanged = await exchange(req.headers.authorization);
        if (exchanged.kind === "refused") {
          res.writeHead(exchanged.status, { "content-type": "application/json; charset=utf-8" });
          res.end(exchanged.body);
          return;
        }
        const body = Buffer.concat(chunks);
        const headers = endToEndHeaders(req.headers);
        if (exchanged.kind === "replaced") headers.authorization = exchanged.authorization;
        headers["content-length"] = body.length;
        const forwarded = http.request(
          {
            host: target.hostname,
            port: target.port || 80,
            method: "POST",
            path: req.url,
            headers,
            agent,
          },
          (reply) => {
            res.writeHead(
              reply.statusCode ?? 502,
              reply.statusMessage,
              endToEndRawHeaders(reply.rawHeaders),
            );
            reply.pipe(res);
          },
        );
        forwarded.on("error", (error) => {
          log(`token exchange: PostgREST at ${flags.postgrest}: ${error.message}`);
          if (!res.headersSent) answer(res, 502, "the API is not reachable");
          else res.destroy();
        });
        forwarded.end(body);
      })().catch((error: Error) => {
        log(`token exchange: ${error.message}`);
        if (!res.headersSent) answer(res, 500, "the token exchange failed");
      });
    });
  });
  const port = await listen(server, at?.host as string, at?.port as number);
  registerCleanup({
    name: "the token exchange",
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
    lastResort: () => server.closeAllConnections(),
  });
  setSignalExitCode(() => 0);
  log(`token exchange: listening on ${at?.host}:${port}, passing logins on to ${flags.postgrest}`);
}
