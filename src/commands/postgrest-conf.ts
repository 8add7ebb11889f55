// postgrest-sessions postgrest-conf: the PostgREST configuration for a
// deployment, with an identity provider's keys fetched through discovery.

import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Command, Option } from "commander";
import { type IdentityMode, identitySettings } from "../serving/postgrest.js";
import { providerKeys, ssoPostgrestEnv } from "../serving/sso.js";
import {
  EXCHANGE_KEY_ID,
  type ExchangeKey,
  exchangeKey,
  withExchangeKey,
} from "../serving/token-exchange.js";
import { assertNoProblems, runAction, ssoOptions } from "./common.js";

interface ConfFlags {
  identity: IdentityMode;
  oidcIssuer?: string;
  oidcAudience?: string;
  oidcKeys?: string;
  oidcUserinfo?: string;
  exchangeKey?: string;
  output?: string;
}

/** The template in deploy/, plus the JWT settings single sign-on needs. */
export async function postgrestConf(
  sso?: {
    issuer: string;
    audience: string;
    keysFile?: string;
  },
  identity: IdentityMode = "pre-request",
  /** The token exchange's key (opaque provider tokens): its public half is trusted too. */
  exchange?: ExchangeKey,
): Promise<string> {
  const template = withChannel(
    withIdentity(
      await readFile(join(import.meta.dirname, "..", "..", "deploy", "postgrest.conf"), "utf8"),
      identity,
    ),
  );
  if (!sso) return template;
  const providerJwks = await providerKeys(sso);
  const jwks = exchange ? withExchangeKey(providerJwks, exchange) : providerJwks;
  // The config file format is a quoted string; JSON needs its quotes escaped.
  const quoted = (value: string) => `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
  const origin = sso.keysFile
    ? `read from ${sso.keysFile}`
    : "fetched through OpenID Connect discovery";
  // The same settings deploy-local gives PostgREST (PGRST_JWT_SECRET is jwt-secret).
  const settings = Object.entries(ssoPostgrestEnv(jwks, sso.audience))
    .map(
      ([name, value]) =>
        `${name.slice("PGRST_".length).toLowerCase().replaceAll("_", "-")} = ${quoted(value)}`,
    )
    .join("\n");
  const block = /# BEGIN JWT\n[\s\S]*?# END JWT\n/;
  if (!block.test(template))
    throw new Error("deploy/postgrest.conf has no BEGIN JWT ... END JWT block");
  return template.replace(
    block,
    `# BEGIN JWT
# Single sign-on (POST /rpc/login_with_token): the public keys of
# ${sso.issuer}, ${origin} when this file was generated.
# Regenerate it when the provider rotates its keys. Also run:
#   update auth.settings set oidc_issuer = '${sso.issuer}', oidc_audience = '${sso.audience}';
# jwt-role-claim-key names a claim no provider issues: a provider's token
# never chooses a database role.${
      exchange
        ? `
# The key set also holds the public key of postgrest-sessions token-exchange
# (kid ${EXCHANGE_KEY_ID}), which vouches for the provider's opaque tokens.`
        : ""
    }
${settings}
# END JWT
`,
  );
}

/** The template's notification channel, made up now: nobody can guess it. */
function withChannel(template: string): string {
  const line = /^db-channel = "\$\(DB_CHANNEL\)"$/m;
  if (!line.test(template))
    throw new Error("deploy/postgrest.conf no longer has its db-channel line");
  return template.replace(line, `db-channel = "pgrst_${randomBytes(12).toString("hex")}"`);
}

/** The template's identity lines for a mode (the template is written for pre-request). */
function withIdentity(template: string, identity: IdentityMode): string {
  if (identity === "pre-request") return template;
  const { anonRole, preRequest: inlinePreRequest } = identitySettings(identity);
  const anon = /^db-anon-role = "anonymous"$/m;
  const preRequest = /^db-pre-request = "auth\.authenticate"$/m;
  if (!anon.test(template) || !preRequest.test(template)) {
    throw new Error(
      "deploy/postgrest.conf no longer has the db-anon-role and db-pre-request lines to change",
    );
  }
  return template
    .replace(
      anon,
      "# Inline identity (sessions.sql.md): every request runs as webuser, and\n" +
        "# the session is looked up inside the request's own statement.\n" +
        `db-anon-role = "${anonRole}"`,
    )
    .replace(
      preRequest,
      inlinePreRequest
        ? `db-pre-request = "${inlinePreRequest}"`
        : "# No pre-request function in inline mode.",
    );
}

export function postgrestConfCommand(): Command {
  return new Command("postgrest-conf")
    .summary("write the PostgREST configuration, with identity-provider keys")
    .description(
      "Print deploy/postgrest.conf for a deployment. With --oidc-issuer, fetch the providers' " +
        "signing keys through OpenID Connect discovery (or read --oidc-keys) and add the JWT " +
        "settings that /rpc/login_with_token needs.",
    )
    .addOption(
      new Option("--oidc-issuer <url>", "the accepted issuer (one per deployment)").env(
        "OIDC_ISSUER",
      ),
    )
    .addOption(
      new Option("--oidc-audience <aud>", "the audience tokens must carry").env("OIDC_AUDIENCE"),
    )
    .addOption(
      new Option("--oidc-keys <file>", "a JWKS file instead of discovery").env("OIDC_KEYS_FILE"),
    )
    .addOption(
      new Option(
        "--exchange-key <file>",
        "trust postgrest-sessions token-exchange's key too (its EC P-256 private key, PEM; only the public half is written)",
      ).env("TOKEN_EXCHANGE_KEY_FILE"),
    )
    .addOption(
      new Option("--identity <mode>", "how requests are identified: pre-request or inline")
        .choices(["pre-request", "inline"])
        .default("pre-request")
        .env("IDENTITY_MODE"),
    )
    .option("-o, --output <file>", "write to this file instead of standard output")
    .action((flags: ConfFlags) =>
      runAction(async () => {
        const problems: string[] = [];
        const sso = ssoOptions(flags, problems);
        if (flags.exchangeKey && !sso) problems.push("--exchange-key needs --oidc-issuer");
        assertNoProblems(problems);
        const exchange = flags.exchangeKey
          ? await exchangeKey(await readFile(flags.exchangeKey, "utf8"), flags.exchangeKey)
          : undefined;
        const text = await postgrestConf(sso, flags.identity, exchange);
        if (flags.output) await writeFile(flags.output, text);
        else process.stdout.write(text);
      }),
    );
}
