// Opaque provider tokens at POST /rpc/login_with_token. PostgREST verifies
// JWTs only, against the provider's keys. For a provider whose access tokens
// are opaque, the exchange in front of that one route asks the provider
// (userinfo) and hands PostgREST, in the token's place, a JWT of one minute
// that states what the provider said (issuer, subject, email, this
// deployment's audience), signed with the exchange's own key, which
// PostgREST trusts beside the provider's. That JWT never leaves the way to
// PostgREST; everything else about the login (same-origin check, linking,
// the cookie) is PostgREST's and sessions.sql.md's as for any token.
//
// deploy-local runs it inside its front door; production runs
// `postgrest-sessions token-exchange` behind nginx (docs/single-sign-on.md).

import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { exportJWK, SignJWT } from "jose";
import { looksLikeJwt } from "../gateway/admission.js";
import { ProviderUnavailable, type UserinfoChecker } from "./userinfo.js";

/** The key id of the exchange's key in PostgREST's key set. */
export const EXCHANGE_KEY_ID = "postgrest-sessions-token-exchange";
/** The one route the exchange serves. */
export const LOGIN_WITH_TOKEN = "/rpc/login_with_token";
/** How long a vouched-for JWT lives: it goes straight to PostgREST. */
const VOUCHED_SECONDS = 60;

export interface ExchangeKey {
  privateKey: KeyObject;
  /** The public half as a JWK, for PostgREST's jwt-secret. */
  publicJwk: Record<string, unknown>;
}

/** The exchange's key: from a PEM (EC P-256 private key), or made now (deploy-local). */
export async function exchangeKey(pem?: string, where = "the exchange key"): Promise<ExchangeKey> {
  let privateKey: KeyObject;
  try {
    privateKey = pem
      ? createPrivateKey(pem)
      : generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  } catch (error) {
    throw new Error(`${where} is not a private key in PEM: ${(error as Error).message}`);
  }
  if (
    privateKey.asymmetricKeyType !== "ec" ||
    privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1"
  ) {
    throw new Error(
      `${where} must be an EC P-256 private key (openssl ecparam -name prime256v1 -genkey -noout -out exchange.pem)`,
    );
  }
  const jwk = await exportJWK(createPublicKey(privateKey));
  return { privateKey, publicJwk: { ...jwk, kid: EXCHANGE_KEY_ID, alg: "ES256", use: "sig" } };
}

/** A key set (JSON text) with the exchange's public key added. */
export function withExchangeKey(jwks: string, key: ExchangeKey): string {
  const set = JSON.parse(jwks) as { keys: Array<Record<string, unknown>> };
  return JSON.stringify({
    keys: [...set.keys.filter((k) => k.kid !== EXCHANGE_KEY_ID), key.publicJwk],
  });
}

export type Exchanged =
  | { kind: "pass" }
  | { kind: "replaced"; authorization: string }
  | { kind: "refused"; status: number; body: string };

function refusedBody(status: number, message: string, hint: string): string {
  return JSON.stringify({ code: `PT${status}`, details: null, hint, message });
}

/**
 * What to do with a login's Authorization header: pass it on (no token, or a
 * JWT: PostgREST checks those), replace an opaque token the provider vouched
 * for, or refuse (401 when the provider refuses it, 503 when it cannot be
 * asked: never let in).
 */
export function tokenExchange(
  provider: UserinfoChecker,
  key: ExchangeKey,
  log: (line: string) => void,
): (authorization: string | undefined) => Promise<Exchanged> {
  return async (authorization) => {
    const token = /^Bearer +(\S+)$/i.exec(authorization ?? "")?.[1];
    if (!token || looksLikeJwt(token)) return { kind: "pass" };
    let claims: Awaited<ReturnType<UserinfoChecker["check"]>>;
    try {
      claims = await provider.check(token);
    } catch (error) {
      if (!(error instanceof ProviderUnavailable)) throw error;
      log(`token exchange: the identity provider could not check a token: ${error.message}`);
      return {
        kind: "refused",
        status: 503,
        body: refusedBody(
          503,
          "the identity provider could not check the token",
          "try again in a moment",
        ),
      };
    }
    if (!claims) {
      return {
        kind: "refused",
        status: 401,
        body: refusedBody(
          401,
          "the identity provider does not accept this token",
          "log in with the provider again",
        ),
      };
    }
    const now = Math.floor(Date.now() / 1000);
    const vouched = await new SignJWT({ ...claims, exp: now + VOUCHED_SECONDS })
      .setProtectedHeader({ alg: "ES256", kid: EXCHANGE_KEY_ID, typ: "JWT" })
      .setIssuedAt(now)
      .sign(key.privateKey);
    return { kind: "replaced", authorization: `Bearer ${vouched}` };
  };
}
