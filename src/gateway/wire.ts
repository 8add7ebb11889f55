// The few PostgreSQL wire-protocol messages the gateway writes or reads
// itself (https://www.postgresql.org/docs/current/protocol-message-formats.html).
// Everything after authentication is relayed as raw bytes, unparsed.

import type { Socket } from "node:net";

/** Request codes of the untyped packets a client may send first. */
export const SSL_REQUEST = 80877103;
export const CANCEL_REQUEST = 80877102;
export const GSSENC_REQUEST = 80877104;

/** A typed message: one type byte, a length that counts itself, the body. */
export function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

export function int32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeInt32BE(value, 0);
  return buffer;
}

function cstring(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, "utf8"), Buffer.from([0])]);
}

export const authenticationOk = (): Buffer => message("R", int32(0));
export const authenticationCleartextPassword = (): Buffer => message("R", int32(3));
export const backendKeyData = (pid: number, secret: number): Buffer =>
  message("K", Buffer.concat([int32(pid), int32(secret)]));

export interface ErrorFields {
  severity: "ERROR" | "FATAL";
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export function errorResponse(fields: ErrorFields): Buffer {
  const parts = [
    Buffer.from("S"),
    cstring(fields.severity),
    Buffer.from("V"),
    cstring(fields.severity),
    Buffer.from("C"),
    cstring(fields.code),
    Buffer.from("M"),
    cstring(fields.message),
  ];
  if (fields.detail) parts.push(Buffer.from("D"), cstring(fields.detail));
  if (fields.hint) parts.push(Buffer.from("H"), cstring(fields.hint));
  parts.push(Buffer.from([0]));
  return message("E", Buffer.concat(parts));
}

/** The untyped StartupMessage (protocol 3.0) with these parameters. */
export function startupMessage(parameters: Record<string, string>): Buffer {
  const body = [int32(196608)];
  for (const [key, value] of Object.entries(parameters)) body.push(cstring(key), cstring(value));
  body.push(Buffer.from([0]));
  const payload = Buffer.concat(body);
  return Buffer.concat([int32(payload.length + 4), payload]);
}

/**
 * NegotiateProtocolVersion: the newest minor version of protocol 3 we
 * speak, and the protocol options (_pq_.*) we did not recognise.
 */
export function negotiateProtocolVersion(minor: number, unknownOptions: string[]): Buffer {
  return message(
    "v",
    Buffer.concat([int32(minor), int32(unknownOptions.length), ...unknownOptions.map(cstring)]),
  );
}

export function cancelRequest(pid: number, secret: number): Buffer {
  const buffer = Buffer.alloc(16);
  buffer.writeInt32BE(16, 0);
  buffer.writeInt32BE(CANCEL_REQUEST, 4);
  buffer.writeInt32BE(pid, 8);
  buffer.writeInt32BE(secret, 12);
  return buffer;
}

/** A message's fields, read from its body: the text of each NUL-terminated string. */
export function cstrings(body: Buffer, from = 0): string[] {
  const out: string[] = [];
  let start = from;
  for (let i = from; i < body.length; i++) {
    if (body[i] === 0) {
      out.push(body.toString("utf8", start, i));
      start = i + 1;
    }
  }
  return out;
}

/** An ErrorResponse's message field (M), for logs and thrown errors. */
export function errorText(body: Buffer): { code: string; message: string } {
  let code = "";
  let text = "";
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const field = String.fromCharCode(body[i] as number);
    const end = body.indexOf(0, i + 1);
    const value = body.toString("utf8", i + 1, end);
    if (field === "C") code = value;
    if (field === "M") text = value;
    i = end + 1;
  }
  return { code, message: text };
}

export class ConnectionClosed extends Error {}

/**
 * Reads whole messages from a socket during the startup phase: typed ones
 * (`next`) or the untyped first packet (`nextUntyped`). `release` stops
 * reading and hands back whatever arrived after the last message read.
 */
export class MessageReader {
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private ended: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.wake();
  };
  private readonly onEnd = () => {
    this.ended = new ConnectionClosed("the connection closed during startup");
    this.wake();
  };
  private readonly onError = (error: Error) => {
    this.ended = error;
    this.wake();
  };

  constructor(
    private readonly socket: Socket,
    initial: Buffer = Buffer.alloc(0),
  ) {
    this.buffer = initial;
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onError);
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  private async have(bytes: number): Promise<void> {
    while (this.buffer.length < bytes) {
      if (this.ended) throw this.ended;
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }

  private take(bytes: number): Buffer {
    const taken = this.buffer.subarray(0, bytes);
    this.buffer = this.buffer.subarray(bytes);
    return taken;
  }

  /** The next typed message; refuses one longer than `limit` bytes. */
  async next(limit = 1 << 20): Promise<{ type: string; body: Buffer; raw: Buffer }> {
    await this.have(5);
    const length = this.buffer.readInt32BE(1);
    if (length < 4 || length > limit)
      throw new Error(`a message of ${length} bytes during startup`);
    await this.have(1 + length);
    const raw = this.take(1 + length);
    return { type: String.fromCharCode(raw[0] as number), body: raw.subarray(5), raw };
  }

  /** The next untyped packet (a startup, SSL, GSSENC or cancel request). */
  async nextUntyped(limit = 10_000): Promise<Buffer> {
    await this.have(8);
    const length = this.buffer.readInt32BE(0);
    if (length < 8 || length > limit) throw new Error(`a startup packet of ${length} bytes`);
    await this.have(length);
    return this.take(length);
  }

  /** Stops reading; returns the bytes received but not yet read. */
  release(): Buffer {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.off("error", this.onError);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }
}
