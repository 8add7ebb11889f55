// One door connection after login: raw bytes both ways, with backpressure,
// and just enough reading of the server's side to know where messages end
// (a FATAL of ours may only be inserted between two of them) and what state
// the connection is in (ReadyForQuery says: idle, in a transaction, or in a
// failed one). That state is what the gateway's time limits are about, and
// no client can SET it away.
//
// Two relays do that: the native one (native/relay.c, one thread of ours
// moving bytes with epoll, as PgBouncer does) for plain connections when it
// was built, and the one in this file, on Node's streams, for TLS on either
// side, for a gateway told `--relay javascript`, and when the native one is
// not built. The gateway sees them through `DoorRelay`.

import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { descriptorOf, type NativeRelayModule } from "./native.js";
import type { UpstreamConnection } from "./upstream.js";
import { type ErrorFields, errorResponse } from "./wire.js";

/** The time limits a relayed connection is held to. */
export interface RelayLimits {
  maxStatementMs: number;
  maxTransactionMs: number;
  maxIdleInTransactionMs: number;
}

/** A relayed connection, as the gateway sees it whichever relay moves its bytes. */
export interface DoorRelay {
  readonly user: string;
  readonly sessionId: number;
  readonly upstream: UpstreamConnection;
  readonly closed: boolean;
  /** Which relay this is. */
  readonly kind: "native" | "javascript";
  /** Where the connection is now (statement, transaction, idle), for the limits. */
  snapshot(): RelayState;
  /** Whether the client sent anything since the last call. */
  takeActive(): boolean;
  /**
   * Starts relaying: `greeting` goes to the client first, then the server's
   * bytes; `early` is what the client sent before we were ready.
   */
  start(greeting: Buffer, early: Buffer, onClose: () => void): void;
  /** Tells the client why (when a message of ours fits between the server's), and closes. */
  end(fields: ErrorFields): void;
  /** Closes both sides now. */
  destroy(): void;
}

/** Why this connection must end now, given the limits; undefined when it may go on. */
export function overLimit(state: RelayState, now: number, limits: RelayLimits): string | undefined {
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

/** A connection just logged in: the server ready, no transaction, nothing sent yet. */
function freshState(): RelayState {
  const now = performance.now();
  return {
    ready: true,
    status: "I",
    busySince: now,
    readySince: now,
    transactionSince: 0,
    active: false,
  };
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

/** The relay on Node's streams. */
export class StreamRelay implements DoorRelay {
  readonly kind = "javascript";
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
    this.state = freshState();
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

  snapshot(): RelayState {
    return { ...this.state };
  }

  takeActive(): boolean {
    const active = this.state.active;
    this.state.active = false;
    return active;
  }

  start(greeting: Buffer, early: Buffer, onClose: () => void): void {
    this.onClose.push(onClose);
    const { client } = this;
    const server = this.upstream.socket;
    client.write(greeting);
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

  /** Tells the client why (when a message of ours fits between the server's), and closes. */
  end(fields: ErrorFields): void {
    if (this.closed) return;
    if (this.server.atBoundary()) this.client.write(errorResponse(fields));
    this.upstream.socket.destroy(); // and finish() closes the client's side
  }

  destroy(): void {
    this.client.destroy();
    this.upstream.socket.destroy();
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

/**
 * The native relay: the two sockets' descriptors go to native/relay.c's
 * thread (Node's own handles are closed, the connections stay open), with
 * what Node had already read from either side.
 */
export class NativeRelay implements DoorRelay {
  readonly kind = "native";
  closed = false;
  private id = -1;
  private last: RelayState;
  private onClose: (() => void) | undefined;

  constructor(
    private readonly native: NativeRelayModule,
    readonly client: Socket,
    readonly upstream: UpstreamConnection,
    readonly user: string,
    readonly sessionId: number,
  ) {
    this.last = freshState();
  }

  /** Whether these two sockets can be handed over: plain ones, nothing left to write. */
  static fits(client: Socket, upstream: UpstreamConnection): boolean {
    return (
      !(client instanceof TLSSocket) &&
      upstream.direct !== undefined &&
      descriptorOf(client) !== undefined &&
      descriptorOf(upstream.socket) !== undefined &&
      client.writableLength === 0 &&
      upstream.socket.writableLength === 0
    );
  }

  start(greeting: Buffer, early: Buffer, onClose: () => void): void {
    this.onClose = onClose;
    const { client } = this;
    const server = this.upstream.socket;
    // Whatever Node has read and not handed out yet is the client's too.
    client.pause();
    server.pause();
    const fromClient = [early];
    for (let chunk = client.read(); chunk !== null; chunk = client.read()) fromClient.push(chunk);
    try {
      this.id = this.native.adopt(
        descriptorOf(client) as number,
        descriptorOf(server) as number,
        greeting,
        this.upstream.rest,
        Buffer.concat(fromClient),
        () => this.finish(),
      );
    } catch {
      // (Out of descriptors or memory.) The connection ends like any other.
      this.closed = true;
      client.destroy();
      server.destroy();
      onClose();
      return;
    }
    // The relay holds its own descriptors: Node's go, the connections stay.
    client.destroy();
    server.destroy();
  }

  snapshot(): RelayState {
    const values = this.closed ? null : this.native.state(this.id, false);
    if (values) this.last = this.fromNative(values);
    return { ...this.last };
  }

  takeActive(): boolean {
    const values = this.closed ? null : this.native.state(this.id, true);
    if (!values) return false;
    this.last = this.fromNative(values);
    return this.last.active;
  }

  private fromNative(values: number[]): RelayState {
    const [ready, status, busyAgo, readyAgo, transactionAgo, active] = values as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    const now = performance.now();
    return {
      ready: ready === 1,
      status: String.fromCharCode(status),
      busySince: now - busyAgo,
      readySince: now - readyAgo,
      transactionSince: transactionAgo < 0 ? 0 : now - transactionAgo,
      active: active === 1,
    };
  }

  end(fields: ErrorFields): void {
    if (!this.closed) this.native.end(this.id, errorResponse(fields));
  }

  destroy(): void {
    if (!this.closed) this.native.end(this.id);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.release(this.id);
    this.onClose?.();
  }
}
