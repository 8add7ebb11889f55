// Runs the real `postgrest-sessions deploy-local` command as a child process
// and waits for its "ready" line, as a user at a terminal would.

import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

export const ROOT = join(import.meta.dirname, "..", "..");
export const CLI = join(ROOT, "dist", "cli.js");

export interface RunningDeployLocal {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

export function spawnCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  stdin?: string,
): RunningDeployLocal {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: [stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (stdin !== undefined) child.stdin?.end(stdin);
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits until stdout has a line containing `ready`, or the process exits. */
export async function waitForReady(run: RunningDeployLocal, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void run.exited.then((code) => {
    exitCode = code;
  });
  while (Date.now() < deadline) {
    const line = run
      .stdout()
      .split("\n")
      .find((l) => l.includes("ready"));
    if (line) return line;
    if (exitCode !== undefined) {
      throw new Error(`deploy-local exited with ${exitCode} before ready:\n${run.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  run.child.kill("SIGINT");
  throw new Error(`deploy-local was not ready within ${timeoutMs} ms:\n${run.stderr()}`);
}

/** The temp directory deploy-local printed (from its psql line). */
export function clusterDirOf(stdout: string): string {
  const match = / -h (\S+) /.exec(stdout);
  if (!match?.[1]) throw new Error(`no psql line in:\n${stdout}`);
  return match[1];
}

/**
 * Runs `npm start -- --port <port>` in `cwd` as a reader of the README
 * would, waits for its ready line, answers what `check` makes of the URL,
 * then presses Ctrl-C (SIGINT to the whole process group, as a terminal
 * does) and resolves with how npm ended (it may end by the signal itself,
 * as in a terminal) and everything printed.
 */
export async function npmStart(
  cwd: string,
  port: number,
  check: (url: string) => Promise<void>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ ended: string; output: string }> {
  const child = spawn("npm", ["start", "--", "--port", String(port)], {
    cwd,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(signal ?? `exit ${code}`)),
  );
  const ready = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /^ready: (\S+)/m.exec(output);
      if (match?.[1]) resolve(match[1]);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    void exited.then((code) =>
      reject(new Error(`npm start exited (${code}) before ready:\n${output}`)),
    );
  });
  try {
    await check(await ready);
  } finally {
    if (child.pid !== undefined) process.kill(-child.pid, "SIGINT");
  }
  return { ended: await exited, output };
}
