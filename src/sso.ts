// Single sign-on configuration: the identity provider's signing keys for
// PostgREST, found through OpenID Connect discovery or read from a file.
//
// PostgREST verifies the provider's access tokens itself (signature, expiry,
// audience); the app's /rpc/login_with_token turns a verified token into a
// session. Two settings keep a provider from ever choosing a database role:
// the role claim key points at a claim no provider issues, and the
// authenticator can only become anonymous or webuser anyway.

import { readFile } from "node:fs/promises";

export interface SsoOptions {
  /** Accepted issuers (the `iss` of their tokens), e.g. https://keycloak.example.com/realms/main. */
  issuers: string[];
  /** The audience PostgREST requires in the `aud` claim. */
  audience: string;
  /** A JWKS file to use instead of fetching keys through discovery (offline use). */
  keysFile?: string;
}

/** A JSPath to a claim that no identity provider issues. */
export const NO_ROLE_CLAIM = '."https://postgrest-sessions.invalid/role"';

interface Jwks {
  keys: Array<Record<string, unknown>>;
}

function asJwks(text: string, where: string): Jwks {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${where} is not JSON`);
  }
  const keys = (parsed as Partial<Jwks>).keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new Error(`${where} is not a JSON Web Key Set (no "keys")`);
  }
  return { keys };
}

async function fetchJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  return response.json();
}

/** The issuer's keys, through /.well-known/openid-configuration and its jwks_uri. */
export async function discoverKeys(issuer: string): Promise<Jwks> {
  const discoveryUrl = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const discovery = (await fetchJson(discoveryUrl)) as { issuer?: string; jwks_uri?: string };
  if (discovery.issuer !== issuer) {
    throw new Error(
      `${discoveryUrl} names the issuer "${discovery.issuer}", not "${issuer}": use the issuer exactly as the provider writes it`,
    );
  }
  if (!discovery.jwks_uri) throw new Error(`${discoveryUrl} has no jwks_uri`);
  return asJwks(JSON.stringify(await fetchJson(discovery.jwks_uri)), discovery.jwks_uri);
}

/** The JWKS (JSON text) that PostgREST gets as its jwt-secret. */
export async function providerKeys(options: SsoOptions): Promise<string> {
  if (options.keysFile) {
    return JSON.stringify(asJwks(await readFile(options.keysFile, "utf8"), options.keysFile));
  }
  const keys: Jwks["keys"] = [];
  for (const issuer of options.issuers) keys.push(...(await discoverKeys(issuer)).keys);
  return JSON.stringify({ keys });
}

/** PostgREST settings for accepting the provider's tokens. */
export function ssoPostgrestEnv(jwks: string, audience: string): Record<string, string> {
  return {
    PGRST_JWT_SECRET: jwks,
    PGRST_JWT_AUD: audience,
    PGRST_JWT_ROLE_CLAIM_KEY: NO_ROLE_CLAIM,
  };
}

/** Database settings the app reads (see app.sql.md, "Single sign-on"). */
export function ssoDatabaseSettings(options: SsoOptions): Record<string, string> {
  return { "sessions.oidc_issuers": options.issuers.join(",") };
}
