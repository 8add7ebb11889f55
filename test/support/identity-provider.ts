// A tiny OpenID Connect identity provider for tests: RSA and EC signing keys
// made on the spot, a discovery document and a key set served over HTTP on
// 127.0.0.1, and a way to sign access tokens, good or deliberately bad.

import http from "node:http";
import {
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWTPayload,
  SignJWT,
} from "jose";

export interface TokenOptions {
  /** RS256 (default) or ES256. */
  alg?: "RS256" | "ES256";
  /** Override or remove standard claims. */
  claims?: Record<string, unknown>;
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number;
  /** Seconds from now before which the token is not valid. */
  notBefore?: number;
  /** Sign with a key the provider does not publish (a bad signature). */
  foreignKey?: boolean;
}

export interface IdentityProvider {
  issuer: string;
  audience: string;
  sign(subject: string, options?: TokenOptions): Promise<string>;
  /** alg "none": no signature at all. */
  unsigned(subject: string): string;
  /** HS256 "signed" with the RSA public key as the secret (key confusion). */
  hs256WithPublicKey(subject: string): Promise<string>;
  close(): Promise<void>;
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

export async function startIdentityProvider(audience = "todo-app"): Promise<IdentityProvider> {
  const rsa = await generateKeyPair("RS256", { extractable: true });
  const ec = await generateKeyPair("ES256", { extractable: true });
  const stranger = await generateKeyPair("RS256", { extractable: true });
  const jwks = {
    keys: [
      { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
      { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
    ],
  };
  let issuer = "";
  const server = http.createServer((req, res) => {
    const json = (body: unknown) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.url === "/.well-known/openid-configuration") {
      json({
        issuer,
        jwks_uri: `${issuer}/keys`,
        id_token_signing_alg_values_supported: ["RS256", "ES256"],
      });
    } else if (req.url === "/keys") {
      json(jwks);
    } else {
      res.writeHead(404).end();
    }
  });
  // Longer than any client keeps an idle connection (undici: 4 s), so that a
  // test's fetch never reuses a connection the server is closing that moment
  // (ECONNRESET under load with Node's default of 5 s).
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  issuer = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;

  const payload = (subject: string, extra: Record<string, unknown> = {}): JWTPayload => {
    const now = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = {
      iss: issuer,
      sub: subject,
      aud: audience,
      iat: now,
      exp: now + 300,
      email: `${subject}@sso.example`,
      email_verified: true,
      name: `User ${subject}`,
      ...extra,
    };
    for (const [key, value] of Object.entries(claims)) if (value === undefined) delete claims[key];
    return claims as JWTPayload;
  };

  return {
    issuer,
    audience,
    async sign(subject, options = {}) {
      const alg = options.alg ?? "RS256";
      const now = Math.floor(Date.now() / 1000);
      const claims = payload(subject, {
        ...(options.expiresIn !== undefined ? { exp: now + options.expiresIn } : {}),
        ...(options.notBefore !== undefined ? { nbf: now + options.notBefore } : {}),
        ...options.claims,
      });
      const key: CryptoKey = options.foreignKey
        ? stranger.privateKey
        : alg === "ES256"
          ? ec.privateKey
          : rsa.privateKey;
      return new SignJWT(claims)
        .setProtectedHeader({ alg, kid: alg === "ES256" ? "ec-1" : "rsa-1", typ: "JWT" })
        .sign(key);
    },
    unsigned(subject) {
      return `${base64url({ alg: "none", typ: "JWT" })}.${base64url(payload(subject))}.`;
    },
    async hs256WithPublicKey(subject) {
      const pem = await exportSPKI(rsa.publicKey);
      return new SignJWT(payload(subject))
        .setProtectedHeader({ alg: "HS256", kid: "rsa-1", typ: "JWT" })
        .sign(new TextEncoder().encode(pem));
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
