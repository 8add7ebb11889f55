// The first packets of a connection, before any password: an optional TLS
// upgrade (SSLRequest), a refused GSSAPI-encryption request, then either a
// cancel request or the startup message. Everything here is bounded, as in
// PostgreSQL itself: a packet of at most 10,000 bytes, and a deadline for
// the whole phase (the caller's), so that a client that sends half a packet,
// or nothing, holds a socket for a bounded time and little memory.

import { once } from "node:events";
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { CANCEL_REQUEST, GSSENC_REQUEST, MessageReader, SSL_REQUEST } from "./wire.js";

/** PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10_000;

export type Opening =
  | {
      kind: "startup";
      socket: Socket;
      /** The protocol's minor version the client asked for (3.x). */
      minor: number;
      parameters: Record<string, string>;
      /** Bytes the client sent after its startup message (it may pipeline the password). */
      rest: Buffer;
    }
  | { kind: "cancel"; pid: number; secret: number }
  | { kind: "refused"; socket: Socket; reason: string };

/** The parameters of a StartupMessage (after its length and version). */
function startupParameters(packet: Buffer): Record<string, string> {
  const parameters: Record<string, string> = {};
  let i = 8;
  for (;;) {
    const keyEnd = packet.indexOf(0, i);
    if (keyEnd <= i) break; // the terminating empty key, or a malformed packet
    const valueEnd = packet.indexOf(0, keyEnd + 1);
    if (valueEnd < 0) break;
    parameters[packet.toString("utf8", i, keyEnd)] = packet.toString("utf8", keyEnd + 1, valueEnd);
    i = valueEnd + 1;
  }
  return parameters;
}

async function upgrade(socket: Socket, tls: { key: Buffer; cert: Buffer }): Promise<TLSSocket> {
  const secure = new TLSSocket(socket, { isServer: true, key: tls.key, cert: tls.cert });
  await Promise.race([
    once(secure, "secure"),
    once(secure, "error").then(([error]) => {
      throw error;
    }),
    once(secure, "close").then(() => {
      throw new Error("the connection closed during the TLS handshake");
    }),
  ]);
  return secure;
}

/**
 * Reads up to the startup message or cancel request. Throws when the
 * client breaks the protocol or goes away; the caller's deadline destroys
 * the socket, which ends the wait here too.
 */
export async function readOpening(
  raw: Socket,
  tls: { key: Buffer; cert: Buffer } | undefined,
): Promise<Opening> {
  let socket: Socket = raw;
  let reader = new MessageReader(socket);
  let negotiated = false;
  for (;;) {
    const packet = await reader.nextUntyped(MAX_STARTUP_PACKET);
    const code = packet.readInt32BE(4);
    if (code === GSSENC_REQUEST) {
      socket.write("N");
      continue;
    }
    if (code === SSL_REQUEST && !negotiated) {
      negotiated = true;
      // A client must wait for our answer before it says anything more
      // (PostgreSQL refuses it too: CVE-2021-23214).
      if (reader.release().length > 0) {
        return { kind: "refused", socket, reason: "data after an SSLRequest, before the answer" };
      }
      if (!tls) {
        socket.write("N");
        reader = new MessageReader(socket);
        continue;
      }
      socket.write("S");
      socket = await upgrade(socket, tls);
      reader = new MessageReader(socket);
      continue;
    }
    if (code === CANCEL_REQUEST && packet.length === 16) {
      reader.release();
      return { kind: "cancel", pid: packet.readInt32BE(8), secret: packet.readInt32BE(12) };
    }
    const major = code >>> 16;
    if (major !== 3) {
      reader.release();
      return { kind: "refused", socket, reason: `unsupported protocol ${major}.${code & 0xffff}` };
    }
    return {
      kind: "startup",
      socket,
      minor: code & 0xffff,
      parameters: startupParameters(packet),
      rest: reader.release(),
    };
  }
}
