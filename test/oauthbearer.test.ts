// The OAuth door's SASL OAUTHBEARER messages (RFC 7628), parsed by
// PostgreSQL's rules (src/backend/libpq/auth-oauth.c): what a client may
// send, and what is refused before any token is looked at.

import { describe, expect, it } from "vitest";
import {
  authenticationSasl,
  authenticationSaslContinue,
  bearerChallenge,
  parseBearerMessage,
  saslInitialResponse,
} from "../src/gateway/oauthbearer.js";

const K = "\x01";

describe("the client's first OAUTHBEARER message", () => {
  it("is a discovery request when auth is empty, as libpq sends it first", () => {
    expect(parseBearerMessage(`n,,${K}auth=${K}${K}`)).toEqual({ kind: "discovery" });
  });

  it("carries a bearer token, whatever the scheme's case, with host and port keys ignored", () => {
    expect(parseBearerMessage(`n,,${K}auth=Bearer abc.DEF-_~+/==${K}${K}`)).toEqual({
      kind: "token",
      token: "abc.DEF-_~+/==",
    });
    expect(
      parseBearerMessage(`y,,${K}host=db.example.com${K}auth=bearer   tok${K}port=5432${K}${K}`),
    ).toEqual({ kind: "token", token: "tok" });
  });

  it("turns a token of the wrong shape into an empty one (refused like a wrong token)", () => {
    for (const auth of [
      "Bearer",
      "Bearer ",
      "Basic dXNlcjpwdw==",
      "Bearer to ken",
      "Bearer ===x",
    ]) {
      expect(parseBearerMessage(`n,,${K}auth=${auth}${K}${K}`), auth).toEqual({
        kind: "token",
        token: "",
      });
    }
  });

  it.each([
    ["channel binding required", `p=tls-server-end-point,,${K}auth=${K}${K}`, /channel binding/],
    ["an unknown channel-binding flag", `x,,${K}auth=${K}${K}`, /flag/],
    ["no comma after the flag", `n${K}auth=${K}${K}`, /comma/],
    ["an authorization identity", `n,a=someone,${K}auth=${K}${K}`, /authorization identity/],
    ["no separator after the header", `n,,auth=${K}${K}`, /separator/],
    ["no auth key", `n,,${K}host=x${K}${K}`, /no "auth"/],
    ["auth twice", `n,,${K}auth=Bearer a${K}auth=Bearer b${K}${K}`, /twice/],
    ["a pair without '='", `n,,${K}auth${K}${K}`, /no '='/],
    ["a key that is not letters", `n,,${K}au-th=x${K}auth=${K}${K}`, /letters/],
    ["a forbidden character in a value", `n,,${K}auth=Bearer \x00x${K}${K}`, /forbidden/],
    ["no closing separator", `n,,${K}auth=Bearer x${K}`, /empty pair/],
    [
      "anything after the closing separator",
      `n,,${K}auth=Bearer x${K}${K}extra`,
      /terminated|forbidden|'='/,
    ],
  ])("refuses %s", (_name, message, reason) => {
    const parsed = parseBearerMessage(message);
    expect(parsed.kind).toBe("malformed");
    expect(parsed.kind === "malformed" ? parsed.reason : "").toMatch(reason);
  });
});

describe("the messages around it", () => {
  it("reads a SASLInitialResponse: mechanism, length, data; refuses a length that lies", () => {
    const data = Buffer.from(`n,,${K}auth=${K}${K}`, "latin1");
    const length = Buffer.alloc(4);
    length.writeInt32BE(data.length);
    const body = Buffer.concat([Buffer.from("OAUTHBEARER\0"), length, data]);
    expect(saslInitialResponse(body)).toEqual({
      mechanism: "OAUTHBEARER",
      data: data.toString("latin1"),
    });
    length.writeInt32BE(data.length + 1);
    expect(
      saslInitialResponse(Buffer.concat([Buffer.from("OAUTHBEARER\0"), length, data])),
    ).toBeUndefined();
    expect(saslInitialResponse(Buffer.from("OAUTHBEARER"))).toBeUndefined();
  });

  it("offers the mechanism alone, and names the issuer's discovery document in the challenge", () => {
    const offer = authenticationSasl(["OAUTHBEARER"]);
    expect(offer.toString("latin1")).toBe("R\0\0\0\x15\0\0\0\x0aOAUTHBEARER\0\0");
    const challenge = JSON.parse(bearerChallenge("https://app.example.com", "database"));
    expect(challenge).toEqual({
      status: "invalid_token",
      scope: "database",
      "openid-configuration": "https://app.example.com/.well-known/openid-configuration",
    });
    const message = authenticationSaslContinue("{}");
    expect(message.readInt32BE(5)).toBe(11);
    expect(message.subarray(9).toString()).toBe("{}");
  });
});
