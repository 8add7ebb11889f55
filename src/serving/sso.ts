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
  /**
   * The accepted issuer (the `iss` of its tokens), e.g.
   * https://keycloak.example.com/realms/main. One per deployment: see
   * app.sql.md, "One issuer per deployment".
   */
  issuer: string;
  /** The audience PostgREST requires in the `aud` claim. */
  audience: string;
  /** A JWKS file to use instead of fetching keys through discovery (offline use). */
  keysFile?: string;
  /**
   * The provider's userinfo endpoint, for its opaque (non-JWT) access tokens:
   * at /rpc/login_with_token through the token exchange, at the gateway's
   * OAuth door directly.
   */
  userinfo?: string;
}

/**
 * The JWT key set of a deployment without single sign-on: one P-256 public
 * key whose private half was thrown away when it was made, so no token can
 * ever verify. Without any key PostgREST answers a request that carries
 * `Authorization: Bearer ...` with 500 ("server lacks JWT secret"); with this
 * one, with 401. Public, so it is no secret and can be committed.
 */
export const NOBODY_CAN_SIGN =
  '{"keys":[{"kty":"EC","crv":"P-256","x":"qvBabbKyjmpfNETmgj4n589vd_od4N8FtY9VVmfvcS8","y":"iR9mbcfebti5vHJ6YQxvcUsj7xR3iqKX6IQfNbsFXEw","kid":"nobody","alg":"ES256","use":"sig"}]}';

/** A JSPath to a claim that no identity provider issues. */
export const NO_ROLE_CLAIM = '."https://postgrest-sessions.invalid/role"';

interface Jwks {
  keys: Array<Record<string, unknown>>;
}

/** The public parameters of each asymmetric key type (RFC 7518, RFC 8037). */
const PUBLIC_PARAMETERS: Record<string, readonly string[]> = {
  RSA: ["n", "e"],
  EC: ["crv", "x", "y"],
  OKP: ["crv", "x"],
};
/** Parameters that describe a key without being key material. */
const DESCRIPTIVE = ["kty", "kid", "use", "alg", "key_ops"];

/**
 * Keeps only what verifying a provider's signature needs: the public
 * parameters of asymmetric keys. A symmetric key (`oct`) is refused: with
 * it, anyone who can read PostgREST's configuration could sign tokens. Private
 * parameters (d, p, q, ...) are dropped, and said so through `warn`, so that
 * the configuration written from them holds no secret.
 */
export function publicKeysOnly(jwks: Jwks, where: string, warn: (line: string) => void): Jwks {
  const keys = jwks.keys.map((key, index) => {
    const kty = String(key.kty ?? "");
    const name = `${where}: key ${index + 1}${key.kid ? ` (kid ${String(key.kid)})` : ""}`;
    const publicParameters = PUBLIC_PARAMETERS[kty];
    if (!publicParameters) {
      throw new Error(
        kty === "oct"
          ? `${name} is a symmetric (oct) key: an identity provider's tokens must be verified with its public keys only (RSA, EC or OKP)`
          : `${name} has key type "${kty}": only RSA, EC and OKP public keys are accepted`,
      );
    }
    const kept: Record<string, unknown> = {};
    for (const parameter of [...DESCRIPTIVE, ...publicParameters]) {
      if (key[parameter] !== undefined) kept[parameter] = key[parameter];
    }
    const dropped = Object.keys(key).filter((parameter) => !(parameter in kept));
    if (dropped.length > 0) {
      warn(
        `${name}: dropped ${dropped.join(", ")} (private key material is never needed to verify tokens)`,
      );
    }
    return kept;
  });
  return { keys };
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

/** Why a fetch failed, from the error's cause chain (fetch itself only says "fetch failed"). */
function fetchFailure(error: unknown): string {
  const reasons: string[] = [];
  let current: unknown = error;
  while (current && reasons.length < 4) {
    const { message, code } = current as { message?: string; code?: string };
    const reason = [code, message].filter(Boolean).join(": ");
    if (reason && reason !== "fetch failed") reasons.push(reason);
    current = (current as { cause?: unknown }).cause;
  }
  return reasons.join("; ") || String(error);
}

async function fetchJson(url: string, what: string): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    throw new Error(`cannot fetch ${what} from ${url}: ${fetchFailure(error)}`);
  }
  if (!response.ok) {
    throw new Error(
      `cannot fetch ${what}: GET ${url} answered ${response.status} ${response.statusText}`,
    );
  }
  try {
    return await response.json();
  } catch {
    throw new Error(`${what} at ${url} is not JSON`);
  }
}

/** The issuer's keys, through /.well-known/openid-configuration and its jwks_uri. */
export async function discoverKeys(issuer: string): Promise<Jwks> {
  const discoveryUrl = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const discovery = (await fetchJson(discoveryUrl, "the OpenID Connect discovery document")) as {
    issuer?: string;
    jwks_uri?: string;
  };
  if (discovery.issuer !== issuer) {
    throw new Error(
      `${discoveryUrl} names the issuer "${discovery.issuer}", not "${issuer}": use the issuer exactly as the provider writes it`,
    );
  }
  if (!discovery.jwks_uri) throw new Error(`${discoveryUrl} has no jwks_uri`);
  return asJwks(
    JSON.stringify(await fetchJson(discovery.jwks_uri, "the provider's keys (jwks_uri)")),
    discovery.jwks_uri,
  );
}

/** The JWKS (JSON text) that PostgREST gets as its jwt-secret: public keys only. */
export async function providerKeys(
  options: SsoOptions,
  warn: (line: string) => void = (line) => process.stderr.write(`warning: ${line}\n`),
): Promise<string> {
  if (options.keysFile) {
    const jwks = asJwks(await readFile(options.keysFile, "utf8"), options.keysFile);
    return JSON.stringify(publicKeysOnly(jwks, options.keysFile, warn));
  }
  return JSON.stringify(publicKeysOnly(await discoverKeys(options.issuer), options.issuer, warn));
}

/** PostgREST settings for accepting the provider's tokens. */
export function ssoPostgrestEnv(jwks: string, audience: string): Record<string, string> {
  return {
    PGRST_JWT_SECRET: jwks,
    PGRST_JWT_AUD: audience,
    PGRST_JWT_ROLE_CLAIM_KEY: NO_ROLE_CLAIM,
  };
}

/** The session module's settings for this provider (auth.settings columns). */
export function ssoSessionSettings(options: SsoOptions): Record<string, string> {
  return { oidc_issuer: options.issuer, oidc_audience: options.audience };
}

/** Why a deployment takes one issuer, for the error that refuses a second. */
export const ONE_ISSUER_REASON =
  "one issuer per deployment: PostgREST tells the database a token's claims but not which key " +
  "verified it, so with two providers' keys a token signed by one could claim to come from the other";
