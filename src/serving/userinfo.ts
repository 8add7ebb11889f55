// Opaque access tokens: many identity providers' tokens are not JWTs, and
// only the provider can say whether one is valid and whose it is. Its
// userinfo endpoint (OpenID Connect Core, 5.3) answers that for a bearer
// token. Used by the gateway's OAuth door and by the token exchange in front
// of /rpc/login_with_token. A token the provider could not be asked about is
// never taken.

import { createHash } from "node:crypto";
import type { JWTPayload } from "jose";

/** The provider could not say whether a token is valid (down, slow, nonsense). */
export class ProviderUnavailable extends Error {}

export interface UserinfoOptions {
  /** The provider's issuer: the claims' `iss`. */
  issuer: string;
  /** This deployment's audience: the claims' `aud` (userinfo cannot say it; see docs). */
  audience: string;
  /** The userinfo endpoint. */
  userinfo: string;
}

/** How long a token the provider vouched for is taken without asking again. */
const VOUCHED_MS = 60_000;
/** How long a token the provider refused is refused without asking again. */
const REFUSED_MS = 10_000;
const CACHE_SIZE = 1000;
const TIMEOUT_MS = 5_000;
/** Questions to the provider at once; more wait their turn (a short queue, not a refusal). */
const AT_ONCE = 8;

export interface UserinfoChecker {
  /**
   * The token's claims as the provider vouches for them (sub, and email when
   * it says), or undefined when it refuses the token. Throws
   * ProviderUnavailable when it cannot be asked.
   */
  check(token: string): Promise<JWTPayload | undefined>;
}

export function userinfoChecker(options: UserinfoOptions): UserinfoChecker {
  const answers = new Map<string, { claims: JWTPayload | undefined; until: number }>();
  let asking = 0;
  const turns: Array<() => void> = [];

  async function inTurn<T>(work: () => Promise<T>): Promise<T> {
    if (asking >= AT_ONCE) await new Promise<void>((resolve) => turns.push(resolve));
    asking++;
    try {
      return await work();
    } finally {
      asking--;
      turns.shift()?.();
    }
  }

  function remember(key: string, claims: JWTPayload | undefined, ms: number): void {
    const now = Date.now();
    if (answers.size >= CACHE_SIZE) {
      for (const [k, v] of answers) {
        if (v.until <= now || answers.size >= CACHE_SIZE) answers.delete(k);
      }
    }
    answers.set(key, { claims, until: now + ms });
  }

  return {
    async check(token) {
      const key = createHash("sha256").update(token).digest("base64url");
      const now = Date.now();
      const known = answers.get(key);
      if (known && known.until > now) return known.claims;
      let response: Response;
      try {
        response = await inTurn(() =>
          fetch(options.userinfo, {
            headers: { authorization: `Bearer ${token}`, accept: "application/json" },
            signal: AbortSignal.timeout(TIMEOUT_MS),
          }),
        );
      } catch (error) {
        throw new ProviderUnavailable(`userinfo unreachable: ${(error as Error).message}`);
      }
      if (response.status === 401 || response.status === 403) {
        await response.body?.cancel();
        remember(key, undefined, REFUSED_MS);
        return undefined;
      }
      if (!response.ok) throw new ProviderUnavailable(`userinfo answered ${response.status}`);
      let body: unknown;
      try {
        body = await response.json();
      } catch {
        throw new ProviderUnavailable("userinfo answered something that is not JSON");
      }
      const info = (body ?? {}) as Record<string, unknown>;
      if (typeof info.sub !== "string" || info.sub === "") {
        throw new ProviderUnavailable("userinfo answered without a subject");
      }
      // The provider vouched for the token and its subject; issuer, audience
      // and a short expiry are ours to state.
      const claims: JWTPayload = {
        ...(typeof info.email === "string" ? { email: info.email } : {}),
        ...(typeof info.email_verified === "boolean"
          ? { email_verified: info.email_verified }
          : {}),
        iss: options.issuer,
        sub: info.sub,
        aud: options.audience,
        exp: Math.floor(now / 1000) + VOUCHED_MS / 1000,
      };
      remember(key, claims, VOUCHED_MS);
      return claims;
    },
  };
}
