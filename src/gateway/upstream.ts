// Logging in to the real PostgreSQL as a door role: startup, password
// authentication (SCRAM-SHA-256, MD5 or cleartext, whichever the server
// asks for; none with trust), then the server's parameters and key, up to
// its first ReadyForQuery. After that the socket is the client's, byte for
// byte.

import { createHash } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { type ConnectionOptions, connect as tlsConnect } from "node:tls";
import sasl from "pg/lib/crypto/sasl.js";
import {
  cancelRequest,
  cstrings,
  errorText,
  MessageReader,
  message,
  SSL_REQUEST,
  startupMessage,
} from "./wire.js";

export interface UpstreamAddress {
  /** A Unix socket path (…/.s.PGSQL.5432), or host and port. */
  socketPath?: string;
  host?: string;
  port: number;
  database: string;
  /**
   * TLS towards PostgreSQL: off, or on with these options (as node-postgres
   * reads them from the same database URL, so both connections agree).
   */
  tls?: ConnectionOptions;
}

/** Where PostgreSQL listens: a host, or the directory of its Unix socket. */
export function upstreamAddress(
  host: string,
  port: number,
  database: string,
  tls?: ConnectionOptions,
): UpstreamAddress {
  return host.startsWith("/")
    ? { socketPath: `${host}/.s.PGSQL.${port}`, port, database }
    : { host, port, database, ...(tls ? { tls } : {}) };
}

export interface UpstreamConnection {
  socket: Socket;
  /** The server's ParameterStatus messages, raw, to hand to the client. */
  parameterStatus: Buffer[];
  /** The server's BackendKeyData, for cancelling this connection's queries. */
  pid: number;
  secret: number;
  /** The ReadyForQuery message that ended the startup, raw. */
  readyForQuery: Buffer;
  /** Bytes that arrived after it (none, unless the server talks first). */
  rest: Buffer;
  /** Present when the socket is read directly (a plain connection, not TLS): the relay's way in. */
  direct?: DirectReads;
}

/** An ErrorResponse from the server during startup (too many connections, a bad password). */
export class UpstreamRefused extends Error {
  constructor(
    readonly raw: Buffer,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What one read from the server may bring: as much as PostgreSQL sends at once. */
const READ_SIZE = 64 * 1024;

/**
 * The server's bytes read straight into a buffer of ours (Node's `onread`),
 * without the stream machinery's work and allocation for every chunk: the
 * relay's busiest path. The same buffer serves read after read, unless the
 * last chunk is still referenced by a write that could not finish at once
 * (`keep`): then the next read gets a new one, so nothing waiting to be sent
 * is ever overwritten. Until the relay takes over (`sink`), each chunk is
 * handed to the socket's own `data` listeners as a copy, which is what the
 * login's reader expects.
 */
export class DirectReads {
  private buffer = Buffer.allocUnsafe(READ_SIZE);
  private lent = false;
  /** The relay: given each chunk (valid only until it returns); false pauses the socket. */
  sink: ((chunk: Buffer) => boolean) | undefined;
  socket: Socket | undefined;

  readonly onread = {
    buffer: (): Buffer => {
      if (this.lent) {
        this.buffer = Buffer.allocUnsafe(READ_SIZE);
        this.lent = false;
      }
      return this.buffer;
    },
    callback: (bytes: number, buffer: Uint8Array): boolean => {
      const chunk = (buffer as Buffer).subarray(0, bytes);
      if (this.sink) return this.sink(chunk);
      this.socket?.emit("data", Buffer.from(chunk));
      return true;
    },
  };

  /** The chunk just handed out is still referenced: read the next into a new buffer. */
  keep(): void {
    this.lent = true;
  }
}

function rawConnect(address: UpstreamAddress, direct?: DirectReads): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const onread = direct ? { onread: direct.onread } : {};
    const socket = address.socketPath
      ? netConnect({ path: address.socketPath, ...onread })
      : netConnect({ host: address.host ?? "127.0.0.1", port: address.port, ...onread });
    if (direct) direct.socket = socket;
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

async function withTls(socket: Socket, address: UpstreamAddress): Promise<Socket> {
  if (!address.tls) return socket;
  const request = Buffer.alloc(8);
  request.writeInt32BE(8, 0);
  request.writeInt32BE(SSL_REQUEST, 4);
  socket.write(request);
  const answer = await new Promise<Buffer>((resolve, reject) => {
    socket.once("data", resolve);
    socket.once("error", reject);
  });
  if (answer.toString("latin1", 0, 1) !== "S") {
    socket.destroy();
    throw new Error("the database refused TLS (the gateway's database URL asks for it)");
  }
  const secure = tlsConnect({
    ...(address.host ? { servername: address.host } : {}),
    ...address.tls,
    socket,
  });
  await new Promise<void>((resolve, reject) => {
    secure.once("secureConnect", () => resolve());
    secure.once("error", reject);
  });
  return secure;
}

/** Logs in as `user` with `password` and reads up to the first ReadyForQuery. */
export async function openUpstream(
  address: UpstreamAddress,
  user: string,
  password: string,
  parameters: Record<string, string>,
): Promise<UpstreamConnection> {
  // Direct reads need the kernel's socket: not under TLS, whose records Node decrypts.
  const direct = address.tls ? undefined : new DirectReads();
  const socket = await withTls(await rawConnect(address, direct), address);
  const reader = new MessageReader(socket);
  try {
    socket.write(startupMessage({ ...parameters, user, database: address.database }));
    let scram: ReturnType<typeof sasl.startSession> | undefined;
    const parameterStatus: Buffer[] = [];
    let pid = 0;
    let secret = 0;
    for (;;) {
      const { type, body, raw } = await reader.next();
      if (type === "E") {
        const { code, message: text } = errorText(body);
        throw new UpstreamRefused(raw, code, text);
      }
      if (type === "R") {
        const kind = body.readInt32BE(0);
        if (kind === 0) continue;
        if (kind === 3) {
          socket.write(message("p", Buffer.from(`${password}\0`, "utf8")));
        } else if (kind === 5) {
          const inner = createHash("md5")
            .update(password + user)
            .digest("hex");
          const outer = createHash("md5")
            .update(Buffer.concat([Buffer.from(inner), body.subarray(4, 8)]))
            .digest("hex");
          socket.write(message("p", Buffer.from(`md5${outer}\0`, "latin1")));
        } else if (kind === 10) {
          scram = sasl.startSession(cstrings(body, 4).filter((m) => m !== ""));
          const initial = Buffer.from(scram.response, "utf8");
          const length = Buffer.alloc(4);
          length.writeInt32BE(initial.length, 0);
          socket.write(
            message("p", Buffer.concat([Buffer.from(`${scram.mechanism}\0`), length, initial])),
          );
        } else if (kind === 11 && scram) {
          await sasl.continueSession(scram, password, body.toString("utf8", 4));
          socket.write(message("p", Buffer.from(scram.response, "utf8")));
        } else if (kind === 12 && scram) {
          sasl.finalizeSession(scram, body.toString("utf8", 4));
        } else {
          throw new Error(
            `the database asked for an authentication method the gateway lacks (${kind})`,
          );
        }
        continue;
      }
      if (type === "S") parameterStatus.push(raw);
      else if (type === "K") {
        pid = body.readInt32BE(0);
        secret = body.readInt32BE(4);
      } else if (type === "Z") {
        return {
          socket,
          parameterStatus,
          pid,
          secret,
          readyForQuery: raw,
          rest: reader.release(),
          ...(direct ? { direct } : {}),
        };
      }
      // NoticeResponse and anything else during startup: not the client's business.
    }
  } catch (error) {
    reader.release();
    socket.destroy();
    throw error;
  }
}

/** Asks the server to cancel the query running on the connection with this key. */
export async function cancelUpstream(
  address: UpstreamAddress,
  pid: number,
  secret: number,
): Promise<void> {
  let socket: Socket | undefined;
  try {
    socket = await withTls(await rawConnect(address), address);
    socket.end(cancelRequest(pid, secret));
  } catch {
    socket?.destroy();
  }
}
