// What one client may hold of the gateway: connections that are still
// logging in, and connections being relayed, in all, per user and per
// address. The defaults keep the gateway well inside PostgreSQL's
// max_connections (100 by default): PostgREST's pool (10) and the
// superuser's reserved connections (3) can never be taken by doors.

export interface GatewayLimits {
  /** Relayed connections in all (each is one PostgreSQL backend). */
  maxConnections: number;
  /** Relayed connections of one user. */
  maxConnectionsPerUser: number;
  /** Relayed connections from one address. */
  maxConnectionsPerAddress: number;
  /** Connections that have not finished logging in, in all. */
  maxPending: number;
  /** Connections that have not finished logging in, from one address. */
  maxPendingPerAddress: number;
  /** Time allowed from the first byte to the end of the password check. */
  authenticationTimeoutMs: number;
  /** Longest statement (from a client's first message to the server's ReadyForQuery). */
  maxStatementMs: number;
  /** Longest transaction, from its first statement to its end. */
  maxTransactionMs: number;
  /** Longest time a transaction may sit idle, waiting for the client. */
  maxIdleInTransactionMs: number;
}

export const DEFAULT_LIMITS: GatewayLimits = {
  maxConnections: 40,
  maxConnectionsPerUser: 5,
  maxConnectionsPerAddress: 10,
  maxPending: 64,
  maxPendingPerAddress: 8,
  authenticationTimeoutMs: 10_000,
  maxStatementMs: 30_000,
  maxTransactionMs: 60_000,
  maxIdleInTransactionMs: 10_000,
};

/** Counts of things held, per key, with a cap per key and one in all. */
export class Counter {
  private readonly held = new Map<string, number>();
  private total = 0;

  constructor(
    private readonly perKey: number,
    private readonly overall: number,
  ) {}

  /** Takes one for `key`; a release function, or undefined when a cap is reached. */
  take(key: string): (() => void) | undefined {
    const mine = this.held.get(key) ?? 0;
    if (mine >= this.perKey || this.total >= this.overall) return undefined;
    this.held.set(key, mine + 1);
    this.total += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.held.get(key) ?? 1) - 1;
      if (left > 0) this.held.set(key, left);
      else this.held.delete(key);
    };
  }

  count(key?: string): number {
    return key === undefined ? this.total : (this.held.get(key) ?? 0);
  }
}

/** An address as a key: an IPv4-mapped IPv6 address is its IPv4 one. */
export function addressKey(address: string | undefined): string {
  if (!address) return "?";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}
