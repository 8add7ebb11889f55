// One door connection after login: raw bytes both ways, with backpressure,
// and just enough reading of the server's side to know where messages end
// (a FATAL of ours may only be inserted between two of them) and what state
// the connection is in (ReadyForQuery says: idle, in a transaction, or in a
// failed one). That state is what the gateway's time limits are about, and
// no client can SET it away.

import type { Socket } from "node:net";
import type { UpstreamConnection } from "./upstream.js";
import { type ErrorFields, errorResponse } from "./wire.js";

export interface RelayState {
  /** Whether the server is waiting for the client (its last message was ReadyForQuery). */
  ready: boolean;
  /** Transaction status of the last ReadyForQuery: I (idle), T (in one), E (failed one). */
  status: string;
  /** When the client last started a statement (sent something while the server was ready). */
  busySince: number;
  /** When the server last became ready. */
  readySince: number;
  /** When the current transaction began (its first statement), or 0 outside one. */
  transactionSince: number;
  /** Whether the client sent anything since the last look (activity renews sessions). */
  active: boolean;
}

/**
 * Reads message boundaries and ReadyForQuery statuses from the server's byte
 * stream without copying it: one header parse per message, in place.
 */
class ServerStream {
  private readonly header = Buffer.alloc(5); // a header split across chunks
  private have = 0; // bytes of it so far
  private remaining = 0; // body bytes of the current message still to come
  private inReady = false; // the current message is a ReadyForQuery

  constructor(private readonly onReady: (status: string) => void) {}

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        if (this.inReady) {
          this.inReady = false;
          this.onReady(String.fromCharCode(chunk[i] as number));
        }
        const step = Math.min(this.remaining, chunk.length - i);
        this.remaining -= step;
        i += step;
      } else if (this.have === 0 && chunk.length - i >= 5) {
        this.start(chunk[i] as number, chunk.readInt32BE(i + 1));
        i += 5;
      } else {
        const copied = chunk.copy(this.header, this.have, i, i + 5 - this.have);
        this.have += copied;
        i += copied;
        if (this.have === 5) {
          this.have = 0;
          this.start(this.header[0] as number, this.header.readInt32BE(1));
        }
      }
    }
  }

  private start(type: number, length: number): void {
    this.remaining = length - 4;
    this.inReady = type === 0x5a; // 'Z'
  }

  atBoundary(): boolean {
    return this.remaining === 0 && this.have === 0;
  }
}

export class Relay {
  readonly state: RelayState;
  closed = false;
  private readonly server: ServerStream;
  private readonly onClose: Array<() => void> = [];

  constructor(
    readonly client: Socket,
    readonly upstream: UpstreamConnection,
    readonly user: string,
    readonly sessionId: number,
  ) {
    const now = performance.now();
    this.state = {
      ready: true,
      status: "I",
      busySince: now,
      readySince: now,
      transactionSince: 0,
      active: false,
    };
    this.server = new ServerStream((status) => this.serverReady(status));
  }

  private serverReady(status: string): void {
    const state = this.state;
    const now = performance.now();
    if (status === "I") state.transactionSince = 0;
    else if (state.transactionSince === 0) state.transactionSince = state.busySince;
    state.status = status;
    state.ready = true;
    state.readySince = now;
  }

  /** Starts relaying; `early` is what the client sent before we were ready. */
  start(early: Buffer, onClose: () => void): void {
    this.onClose.push(onClose);
    const { client } = this;
    const server = this.upstream.socket;
    if (early.length > 0) this.fromClient(early);
    if (this.upstream.rest.length > 0) this.toClient(this.upstream.rest);
    client.on("data", (chunk: Buffer) => this.fromClient(chunk));
    const direct = this.upstream.direct;
    if (direct) {
      // The chunk is ours only until this returns: when the write could not
      // finish at once (bytes still queued), the next read goes elsewhere.
      // Returning false pauses the socket.
      direct.sink = (chunk) => {
        const flowing = this.toClient(chunk);
        if (client.writableLength > 0) direct.keep();
        return flowing;
      };
    } else {
      server.on("data", (chunk: Buffer) => {
        if (!this.toClient(chunk)) server.pause();
      });
    }
    const finish = () => this.finish();
    client.on("close", finish);
    client.on("error", finish);
    server.on("close", finish);
    server.on("error", finish);
  }

  /** The server's bytes to the client; false (and a resume on drain) when the client is full. */
  private toClient(chunk: Buffer): boolean {
    this.server.feed(chunk);
    if (this.client.write(chunk)) return true;
    this.client.once("drain", () => this.upstream.socket.resume());
    return false;
  }

  private fromClient(chunk: Buffer): void {
    const state = this.state;
    state.active = true;
    if (state.ready) {
      state.ready = false;
      state.busySince = performance.now();
    }
    const server = this.upstream.socket;
    if (!server.write(chunk)) {
      this.client.pause();
      server.once("drain", () => this.client.resume());
    }
  }

  /** Why this connection must end now, given the limits; undefined when it may go on. */
  overLimit(
    now: number,
    limits: { maxStatementMs: number; maxTransactionMs: number; maxIdleInTransactionMs: number },
  ): string | undefined {
    const state = this.state;
    if (!state.ready && now - state.busySince > limits.maxStatementMs) {
      return `a statement ran longer than the gateway allows (${limits.maxStatementMs / 1000} s)`;
    }
    if (state.transactionSince > 0 && now - state.transactionSince > limits.maxTransactionMs) {
      return `a transaction lasted longer than the gateway allows (${limits.maxTransactionMs / 1000} s)`;
    }
    if (
      state.ready &&
      state.status !== "I" &&
      now - state.readySince > limits.maxIdleInTransactionMs
    ) {
      return `a transaction sat idle longer than the gateway allows (${limits.maxIdleInTransactionMs / 1000} s)`;
    }
    return undefined;
  }

  /** Tells the client why (when a message of ours fits between the server's), and closes. */
  end(fields: ErrorFields): void {
    if (this.closed) return;
    if (this.server.atBoundary()) this.client.write(errorResponse(fields));
    this.upstream.socket.destroy(); // and finish() closes the client's side
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    // end(), not destroy(): what is already written to the client (the
    // server's last words, or ours) still reaches it.
    this.client.end();
    setTimeout(() => this.client.destroy(), 1000).unref();
    this.upstream.socket.destroy();
    for (const callback of this.onClose) callback();
  }
}
