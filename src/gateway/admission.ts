// Letting a client in: its credential checked in the database (as the
// `gateway` role, through auth.door_open), then the upstream login as the
// user's own door role with a one-minute password the gateway made up, then
// the role sealed so that no password opens it until the next door login.

import { createLocalJWKSet, type JWTPayload, jwtVerify } from "jose";
import type pg from "pg";
import { ProviderUnavailable, userinfoChecker } from "../serving/userinfo.js";
import { randomPassword, scramVerifier } from "./scram.js";
import {
  openUpstream,
  type UpstreamAddress,
  type UpstreamConnection,
  UpstreamRefused,
} from "./upstream.js";
import type { ErrorFields } from "./wire.js";

export interface AccessTokenOptions {
  issuer: string;
  audience: string;
  /** The issuer's public keys (a JWKS, JSON text). */
  jwks: string;
  /**
   * The provider's userinfo endpoint: where the OAuth door checks access
   * tokens that are not JWTs (opaque tokens), when it names this issuer.
   */
  userinfo?: string;
}

/** Algorithms an access token may be signed with: asymmetric only, never "none" or HMAC. */
export const ACCESS_TOKEN_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
];

const REFUSALS: Record<string, (user: string) => ErrorFields> = {
  failed: (user) => ({
    severity: "FATAL",
    code: "28P01",
    message: `password authentication failed for user "${user}"`,
  }),
  no_door: () => ({
    severity: "FATAL",
    code: "28000",
    message: "this account has no database access",
    hint: "ask an administrator to grant it a door (auth.grant_door)",
  }),
  throttled: () => ({
    severity: "FATAL",
    code: "28000",
    message: "too many failed attempts for this email",
    hint: "wait 15 minutes",
  }),
  busy: () => ({
    severity: "FATAL",
    code: "53300",
    message: "too many password checks at once",
    hint: "try again in a second",
  }),
  crowded: () => ({
    severity: "FATAL",
    code: "53300",
    message: "too many password checks from your address at once",
    hint: "wait for the ones you started",
  }),
  too_fast: () => ({
    severity: "FATAL",
    code: "53300",
    message: "too many failed password checks from your address",
    hint: "try again in a few seconds",
  }),
  in_progress: () => ({
    severity: "FATAL",
    code: "53300",
    message: "another login for this email is in progress",
    hint: "try again in a second",
  }),
};

export function refusal(outcome: string, user: string): ErrorFields {
  return (REFUSALS[outcome] ?? (REFUSALS.failed as (u: string) => ErrorFields))(user);
}

/** A compact JWS's shape (three base64url parts, a JSON header): told apart from opaque tokens. */
export const looksLikeJwt = (secret: string) => /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(secret);

export interface Admitted {
  upstream: UpstreamConnection;
  sessionId: number;
  /** The account's email, when the credential named it (an OAuth door's token). */
  email?: string;
}

export interface Admission {
  /** Checks the credential and logs in upstream; a refusal to send the client otherwise. */
  admit(
    user: string,
    secret: string,
    client: { label: string; address: string },
    parameters: Record<string, string>,
  ): Promise<Admitted | ErrorFields>;
  /**
   * The OAuth door: a bearer token, which names the account itself (the
   * user name is checked only when it is an email). An external provider's
   * JWT when one is configured, otherwise an access token of the
   * application's device flow (device.sql.md).
   */
  admitBearer(
    user: string,
    token: string,
    client: { label: string; address: string },
    parameters: Record<string, string>,
  ): Promise<Admitted | ErrorFields>;
}

export function admission(
  control: pg.Pool,
  upstreamAt: UpstreamAddress,
  accessTokens: AccessTokenOptions | undefined,
  /** The issuer the OAuth door names: opaque tokens are the provider's when it is the provider. */
  oauthIssuer?: string,
  log: (line: string) => void = () => {},
): Admission {
  const opaqueAtProvider =
    accessTokens?.userinfo !== undefined && oauthIssuer === accessTokens.issuer;
  const provider =
    opaqueAtProvider && accessTokens?.userinfo
      ? userinfoChecker({
          issuer: accessTokens.issuer,
          audience: accessTokens.audience,
          userinfo: accessTokens.userinfo,
        })
      : undefined;

  const keys = accessTokens ? createLocalJWKSet(JSON.parse(accessTokens.jwks)) : undefined;
  // One door login per user at a time: each rotates the user's role password.
  const userLocks = new Map<string, Promise<unknown>>();

  async function withUserLock<T>(user: string, work: () => Promise<T>): Promise<T> {
    const key = user.toLowerCase();
    const before = userLocks.get(key) ?? Promise.resolve();
    const mine = before.then(work, work);
    const settled = mine.catch(() => {});
    userLocks.set(key, settled);
    try {
      return await mine;
    } finally {
      if (userLocks.get(key) === settled) userLocks.delete(key);
    }
  }

  async function verifyAccessToken(token: string): Promise<JWTPayload | undefined> {
    if (!keys || !accessTokens) return undefined;
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: accessTokens.issuer,
        audience: accessTokens.audience,
        algorithms: ACCESS_TOKEN_ALGORITHMS,
        requiredClaims: ["exp", "sub"],
      });
      return payload;
    } catch {
      return undefined;
    }
  }

  type DoorRow = {
    role_name: string | null;
    session_id: string | null;
    outcome: string;
    email?: string | null;
  };

  /**
   * Asks the database (`open`, with a fresh verifier for the door role's
   * password), then logs in upstream as the role and seals it. One login per
   * lock key at a time: each rotates the role's password. Another gateway
   * may rotate it between our check and our login: a `retryable` check is
   * asked again, once (an access token that was taken cannot be).
   */
  async function enter(
    lockKey: string,
    user: string,
    retryable: boolean,
    parameters: Record<string, string>,
    open: (verifier: string) => Promise<DoorRow | undefined>,
  ): Promise<Admitted | ErrorFields> {
    return withUserLock(lockKey, async () => {
      for (let attempt = 1; ; attempt++) {
        const password = randomPassword();
        const row = await open(await scramVerifier(password));
        if (row?.outcome !== "ok" || !row.role_name || !row.session_id) {
          return refusal(row?.outcome ?? "failed", user);
        }
        const sessionId = Number(row.session_id);
        try {
          const upstream = await openUpstream(upstreamAt, row.role_name, password, parameters);
          try {
            await control.query("select auth.door_seal($1)", [row.role_name]);
          } catch (error) {
            upstream.socket.destroy();
            throw error;
          }
          return { upstream, sessionId, ...(row.email ? { email: row.email } : {}) };
        } catch (error) {
          // The session this login opened for itself is of no use now.
          await control.query("select auth.door_closed($1)", [sessionId]);
          if (
            retryable &&
            error instanceof UpstreamRefused &&
            error.code === "28P01" &&
            attempt < 2
          ) {
            continue;
          }
          throw error;
        }
      }
    });
  }

  return {
    async admit(user, secret, client, parameters) {
      // An access token is verified here, once. One that fails costs the
      // database nothing and leaves no row: forging one costs nothing either.
      let claims: JWTPayload | undefined;
      if (keys && looksLikeJwt(secret)) {
        claims = await verifyAccessToken(secret);
        if (!claims) return refusal("failed", user);
      }
      return enter(user.toLowerCase(), user, true, parameters, async (verifier) => {
        const { rows } = claims
          ? await control.query<DoorRow>(
              "select * from auth.door_open_with_claims($1, $2::jsonb, $3, $4, $5)",
              [user, JSON.stringify(claims), verifier, client.label, client.address],
            )
          : await control.query<DoorRow>(
              "select * from auth.door_open('password', $1, $2, $3, $4, $5)",
              [user, secret, verifier, client.label, client.address],
            );
        return rows[0];
      });
    },

    async admitBearer(user, token, client, parameters) {
      // Only an email names an account; libpq sends the operating system's
      // user name when none is given, which names nothing here.
      const email = user.includes("@") ? user : "";
      const jwt = keys !== undefined && looksLikeJwt(token);
      if (jwt || (opaqueAtProvider && token !== "")) {
        let claims: JWTPayload | undefined;
        try {
          claims = jwt ? await verifyAccessToken(token) : await provider?.check(token);
        } catch (error) {
          if (!(error instanceof ProviderUnavailable)) throw error;
          // Why is for the gateway's log, not for whoever sent the token.
          log(`gateway: the identity provider could not check a token: ${error.message}`);
          return {
            severity: "FATAL",
            code: "28000",
            message: "the identity provider could not check the token",
            hint: "try again when the provider answers",
          };
        }
        if (!claims) return refusal("failed", user);
        return enter(
          email.toLowerCase() || `(sub) ${String(claims.sub)}`,
          user,
          true,
          parameters,
          async (verifier) => {
            const { rows } = await control.query<DoorRow>(
              "select * from auth.door_open_with_claims($1, $2::jsonb, $3, $4, $5)",
              [email, JSON.stringify(claims), verifier, client.label, client.address],
            );
            return rows[0];
          },
        );
      }
      if (token === "") return refusal("failed", user);
      // Whose it is first (taking nothing), so that this login waits for any
      // other of the same account's, as password logins do: each rotates the
      // role's password, and a device token is taken once, never asked again.
      const {
        rows: [owner],
      } = await control.query<{ email: string | null }>(
        "select auth.door_device_email($1) as email",
        [token],
      );
      if (!owner?.email) return refusal("failed", user);
      return enter(owner.email.toLowerCase(), user, false, parameters, async (verifier) => {
        const { rows } = await control.query<DoorRow>(
          "select * from auth.door_open_device($1, $2, $3, $4, $5)",
          [user, token, verifier, client.label, client.address],
        );
        return rows[0];
      });
    },
  };
}
