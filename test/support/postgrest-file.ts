// PostgREST started on a configuration file, as an operator runs it: the
// file reads DB_URI, PORT and ADMIN_PORT from the environment.

import { spawn } from "node:child_process";
import { freePort } from "../../src/net.js";
import { findPostgrestBinary } from "../../src/serving/postgrest.js";

export interface RunningPostgrest {
  url: string;
  stop(): void;
}

/** Starts PostgREST on `configFile` against `dbUri`; resolves once it is ready. */
export async function postgrestOnConfigFile(
  configFile: string,
  dbUri: string,
): Promise<RunningPostgrest> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const child = spawn(findPostgrestBinary(), [configFile], {
    env: { ...process.env, DB_URI: dbUri, PORT: String(port), ADMIN_PORT: String(adminPort) },
    stdio: "ignore",
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${adminPort}/ready`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(
        `PostgREST on ${configFile} never got ready` +
          (child.exitCode !== null ? ` (it exited with code ${child.exitCode})` : ""),
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${port}`, stop: () => child.kill("SIGTERM") };
}
