#!/usr/bin/env node
// The standalone `md2sql` command (also `postgrest-sessions md2sql`).

import { applyExitCodes } from "./commands/common.js";
import { md2sqlCommand } from "./commands/md2sql.js";

const command = md2sqlCommand();
applyExitCodes(command);
await command.parseAsync(process.argv);
