// postgrest-sessions migrate: apply the document and its migrations to a
// persistent database.

import { Command, Option } from "commander";
import { migrate } from "../migrate.js";
import { assertNoProblems, runAction } from "./common.js";

interface MigrateFlags {
  databaseUrl?: string;
  file?: string;
  migrationsDir?: string;
  withTests?: boolean;
  dryRun?: boolean;
}

export function migrateCommand(): Command {
  return new Command("migrate")
    .summary("apply the document and migrations/ to a persistent database")
    .description(
      "Apply the document (migration 1) and migrations/NNN-name.sql.md (from 002) to a database, " +
        "each once and in its own transaction, recorded in its `migrations` table. Test and fixture " +
        "blocks are not applied; an applied migration whose code changed is refused.",
    )
    .addOption(
      new Option("-d, --database-url <url>", "postgres:// URL of the target database").env(
        "DATABASE_URL",
      ),
    )
    .option(
      "-f, --file <path>",
      'one document (migration 1) instead of the project\'s list (package.json "postgrest-sessions".documents)',
    )
    .option(
      "-m, --migrations-dir <dir>",
      "directory of NNN-name.sql.md migrations (default: migrations/ beside the document)",
    )
    .option(
      "--with-tests",
      "after migrating, load the ```sql tests blocks and run the pgTAP suite, then roll them back",
    )
    .option("--dry-run", "print what would be applied and change nothing")
    .action((flags: MigrateFlags) =>
      runAction(async () => {
        const problems: string[] = [];
        if (!flags.databaseUrl) {
          problems.push("--database-url is required (or set DATABASE_URL)");
        } else if (!/^postgres(ql)?:\/\//.test(flags.databaseUrl)) {
          problems.push("--database-url (or DATABASE_URL) must be a postgres:// URL");
        }
        assertNoProblems(problems);
        const result = await migrate({
          databaseUrl: flags.databaseUrl as string,
          ...(flags.file ? { file: flags.file } : {}),
          ...(flags.migrationsDir ? { migrationsDir: flags.migrationsDir } : {}),
          withTests: flags.withTests === true,
          dryRun: flags.dryRun === true,
          log: (line) => process.stderr.write(`${line}\n`),
        });
        if (result.pgtap && !result.pgtap.ok) process.exitCode = 1;
      }),
    );
}
