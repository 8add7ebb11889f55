// PostgreSQL refuses to run as root. When we are root (as in containers and
// CI machines), initdb and postgres run as an unprivileged user instead: the
// distribution's `postgres` user when there is one, otherwise a system user
// we create for the purpose.

import { execFileSync } from "node:child_process";

export interface UnprivilegedUser {
  name: string;
  /** Undefined when we are not root and simply run as ourselves. */
  uid?: number;
  gid?: number;
}

const CREATED_USER = "pgsessions";

function lookup(name: string): UnprivilegedUser | undefined {
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8", stdio: "pipe" }));
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8", stdio: "pipe" }));
    return { name, uid, gid };
  } catch {
    return undefined;
  }
}

let cached: UnprivilegedUser | undefined;

export function unprivilegedUser(): UnprivilegedUser {
  if (cached) return cached;
  if (process.getuid?.() !== 0) {
    cached = { name: process.env.USER ?? "current user" };
    return cached;
  }
  let user = lookup("postgres") ?? lookup(CREATED_USER);
  if (!user) {
    execFileSync(
      "useradd",
      ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CREATED_USER],
      { stdio: "pipe" },
    );
    user = lookup(CREATED_USER);
    if (!user) throw new Error(`created user ${CREATED_USER} but cannot look it up`);
  }
  cached = user;
  return user;
}

/** Runs a command to completion as the given user; throws with its output on failure. */
export function runAsUser(
  user: UnprivilegedUser,
  command: string,
  args: string[],
  extraEnv: Record<string, string> = {},
): string {
  try {
    return execFileSync(command, args, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...extraEnv },
      cwd: "/",
      ...(user.uid !== undefined ? { uid: user.uid, gid: user.gid } : {}),
    });
  } catch (error) {
    const failure = error as { stderr?: string; stdout?: string; message: string };
    throw new Error(
      `${command} ${args.join(" ")} failed (as ${user.name}):\n${failure.stderr || failure.stdout || failure.message}`,
    );
  }
}

/** Whether `user` can run `command --version` (root's private directories are out of its reach). */
export function canRunAs(user: UnprivilegedUser, command: string): boolean {
  if (user.uid === undefined) return true;
  try {
    execFileSync(command, ["--version"], {
      stdio: "ignore",
      cwd: "/",
      uid: user.uid,
      gid: user.gid,
    });
    return true;
  } catch {
    return false;
  }
}

/** Blocks the thread; only for process.on("exit") handlers, where nothing async runs. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
