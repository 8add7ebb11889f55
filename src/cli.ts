#!/usr/bin/env node
// postgrest-sessions <command>: one entry point, one small module per command.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { applyExitCodes } from "./commands/common.js";
import { deployLocalCommand } from "./commands/deploy-local.js";
import { gatewayCommand } from "./commands/gateway.js";
import { initCommand } from "./commands/init.js";
import { mailerCommand } from "./commands/mailer.js";
import { md2sqlCommand } from "./commands/md2sql.js";
import { migrateCommand } from "./commands/migrate.js";
import { postgrestCommand } from "./commands/postgrest.js";
import { postgrestConfCommand } from "./commands/postgrest-conf.js";
import { tokenExchangeCommand } from "./commands/token-exchange.js";

export function buildProgram(): Command {
  const { version } = JSON.parse(
    readFileSync(join(import.meta.dirname, "..", "package.json"), "utf8"),
  ) as { version: string };
  const program = new Command("postgrest-sessions")
    .description("Cookie sessions for PostgREST: compile, run, test and deploy a literate SQL app")
    .version(version, "-V, --version", "print the version")
    // Options after a command are that command's (postgrest passes them on).
    .enablePositionalOptions()
    .addCommand(initCommand())
    .addCommand(md2sqlCommand())
    .addCommand(deployLocalCommand())
    .addCommand(migrateCommand())
    .addCommand(postgrestConfCommand())
    .addCommand(postgrestCommand())
    .addCommand(gatewayCommand())
    .addCommand(mailerCommand())
    .addCommand(tokenExchangeCommand());
  applyExitCodes(program);
  return program;
}

await buildProgram().parseAsync(process.argv);
