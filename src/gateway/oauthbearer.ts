// SASL OAUTHBEARER (RFC 7628) as PostgreSQL 18 speaks it to libpq: the
// server offers the one mechanism; the client's first message is either an
// empty `auth=` (discovery: "which issuer, which scope?") or `auth=Bearer
// <token>`. A refusal is a JSON challenge naming the issuer's discovery
// document, which the client answers with a single 0x01 before the server's
// FATAL; a success is AuthenticationOk with no SASL final message (libpq
// refuses one). What is refused follows PostgreSQL's own parser
// (src/backend/libpq/auth-oauth.c): channel binding, an authorization
// identity, malformed key/value pairs, a repeated or missing `auth`, and
// anything after the closing separator.

import { int32, message } from "./wire.js";

export const OAUTHBEARER = "OAUTHBEARER";
const SEPARATOR = "\x01";

/** AuthenticationSASL offering OAUTHBEARER alone, as PostgreSQL does for an `oauth` line. */
export function authenticationSasl(mechanisms: string[]): Buffer {
  return message(
    "R",
    Buffer.concat([int32(10), ...mechanisms.map((m) => Buffer.from(`${m}\0`)), Buffer.from([0])]),
  );
}

/** AuthenticationSASLContinue carrying the server's challenge. */
export function authenticationSaslContinue(data: string): Buffer {
  return message("R", Buffer.concat([int32(11), Buffer.from(data, "utf8")]));
}

/** A SASLInitialResponse body: the chosen mechanism and its data. */
export function saslInitialResponse(body: Buffer): { mechanism: string; data: string } | undefined {
  const end = body.indexOf(0);
  if (end < 0 || body.length < end + 5) return undefined;
  const mechanism = body.toString("utf8", 0, end);
  const length = body.readInt32BE(end + 1);
  const rest = body.subarray(end + 5);
  if (length === -1) return { mechanism, data: "" };
  if (length !== rest.length) return undefined;
  return { mechanism, data: rest.toString("latin1") };
}

export type BearerMessage =
  | { kind: "discovery" }
  | { kind: "token"; token: string }
  | { kind: "malformed"; reason: string };

// RFC 7628 3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
const KEY = /^[A-Za-z]+$/;
const VALUE = /^[\x21-\x7e \t\r\n]*$/;
// RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** Parses the client's first OAUTHBEARER message. */
export function parseBearerMessage(data: string): BearerMessage {
  // The GS2 header: no channel binding ("n", or "y": the client could but
  // thinks we cannot), and no authorization identity.
  const flag = data[0];
  if (flag === "p") {
    return { kind: "malformed", reason: "channel binding is not supported by OAUTHBEARER" };
  }
  if (flag !== "n" && flag !== "y") {
    return { kind: "malformed", reason: "unexpected channel-binding flag" };
  }
  if (data[1] !== ",")
    return { kind: "malformed", reason: "comma expected after the channel-binding flag" };
  const authzidEnd = data.indexOf(",", 2);
  if (authzidEnd < 0) return { kind: "malformed", reason: "the GS2 header is not terminated" };
  if (authzidEnd !== 2) {
    return { kind: "malformed", reason: "an authorization identity is not supported" };
  }
  let rest = data.slice(authzidEnd + 1);
  if (!rest.startsWith(SEPARATOR)) {
    return { kind: "malformed", reason: "key-value separator expected after the GS2 header" };
  }
  rest = rest.slice(1);
  let auth: string | undefined;
  for (;;) {
    if (rest === SEPARATOR) break; // the closing separator, and nothing after it
    const end = rest.indexOf(SEPARATOR);
    if (end < 0) return { kind: "malformed", reason: "a key-value pair is not terminated" };
    const pair = rest.slice(0, end);
    rest = rest.slice(end + 1);
    if (rest === "")
      return { kind: "malformed", reason: "the message does not end with an empty pair" };
    const equals = pair.indexOf("=");
    if (equals < 0) return { kind: "malformed", reason: "a key-value pair has no '='" };
    const key = pair.slice(0, equals);
    const value = pair.slice(equals + 1);
    if (!KEY.test(key))
      return { kind: "malformed", reason: "a key holds characters other than letters" };
    if (!VALUE.test(value))
      return { kind: "malformed", reason: `the value of "${key}" holds forbidden characters` };
    if (key === "auth") {
      if (auth !== undefined) return { kind: "malformed", reason: 'the "auth" key appears twice' };
      auth = value;
    }
    // Other keys (host, port) are allowed and ignored, as PostgreSQL does.
  }
  if (auth === undefined) return { kind: "malformed", reason: 'the message has no "auth" key' };
  if (auth === "") return { kind: "discovery" };
  const scheme = /^bearer +/i.exec(auth);
  const token = scheme ? auth.slice(scheme[0].length) : "";
  // A token of the wrong shape is refused like a wrong one (with the
  // challenge), not as a protocol error: it is the client's credential.
  if (!scheme || !B64TOKEN.test(token)) return { kind: "token", token: "" };
  return { kind: "token", token };
}

/** The challenge that names the issuer: what a discovery request asks for, and every refusal carries. */
export function bearerChallenge(issuer: string, scope: string): string {
  return JSON.stringify({
    status: "invalid_token",
    scope,
    "openid-configuration": `${issuer}/.well-known/openid-configuration`,
  });
}
