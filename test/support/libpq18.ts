// A real libpq 18 client for the OAuth door: the one psycopg's binary wheel
// bundles, driven by test/support/libpq18_oauth.py (which supplies the
// device flow through libpq's token hook). One JSON event per line.

import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { ROOT } from "./deploy-local-process.js";

const CLIENT = join(ROOT, "test", "support", "libpq18_oauth.py");

/**
 * The Python of the libpq 18 environment, made by scripts/setup-libpq18.sh
 * (as .ci/run does) when it is missing; its error, loudly, when it cannot be.
 */
export function libpq18Python(): string {
  try {
    return execFileSync("bash", [join(ROOT, "scripts", "setup-libpq18.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? "");
    throw new Error(
      `the OAuth door's tests need libpq 18 (scripts/setup-libpq18.sh failed): ${stderr}`,
    );
  }
}

export type Event = { event: string; [field: string]: unknown };

/** The libpq 18 client: one JSON event per line; SQL in, one result or error out. */
export class Libpq18 {
  readonly events: Event[] = [];
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiters: Array<() => void> = [];
  readonly exited: Promise<number | null>;
  stderr = "";

  constructor(python: string, conninfo: string, env: Record<string, string> = {}) {
    // http:// issuers are for development only: libpq wants PGOAUTHDEBUG=UNSAFE.
    this.child = spawn(python, [CLIENT, conninfo], {
      env: { ...process.env, PGOAUTHDEBUG: "UNSAFE", ...env },
    });
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      this.events.push(JSON.parse(line) as Event);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.child.stderr.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  /** The first event of one of these kinds after `from`, within the time. */
  async next(kinds: string[], from = 0, timeoutMs = 20_000): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.slice(from).find((e) => kinds.includes(e.event));
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `no ${kinds.join(" or ")} within ${timeoutMs} ms; events: ${JSON.stringify(this.events)}; stderr: ${this.stderr}`,
        );
      }
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  async query(sql: string): Promise<Event> {
    const from = this.events.length;
    this.child.stdin.write(`${sql}\n`);
    return this.next(["result", "error"], from);
  }

  async end(): Promise<void> {
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}
