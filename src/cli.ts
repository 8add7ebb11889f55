#!/usr/bin/env node
// postgrest-sessions <command>: one entry point, one small module per command.

import { Command } from "commander";
import { applyExitCodes } from "./commands/common.js";
import { deployLocalCommand } from "./commands/deploy-local.js";
import { md2sqlCommand } from "./commands/md2sql.js";
import { migrateCommand } from "./commands/migrate.js";
import { postgrestConfCommand } from "./commands/postgrest-conf.js";

export function buildProgram(): Command {
  const program = new Command("postgrest-sessions")
    .description("Cookie sessions for PostgREST: compile, run, test and deploy a literate SQL app")
    .addCommand(md2sqlCommand())
    .addCommand(deployLocalCommand())
    .addCommand(migrateCommand())
    .addCommand(postgrestConfCommand());
  applyExitCodes(program);
  return program;
}

await buildProgram().parseAsync(process.argv);
