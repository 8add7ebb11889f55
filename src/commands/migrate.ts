// postgrest-sessions migrate: apply the document and its migrations to a
// persistent database.

import { Command, Option } from "commander";
import { migrate } from "../document/migrate.js";
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
      "Apply the project's documents (package.json, migrations 1 to N, in order) and then " +
        "migrations/NNN-name.sql.md (numbered on from N+1) to a database, each once and in its own " +
        "transaction, recorded in its `migrations` table. Test and fixture blocks are not applied; an " +
        "applied migration whose code changed is refused. Afterwards tell PostgREST (NOTIFY on its " +
        "channel, or a restart) so that it sees the new schema.",
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
      'directory of NNN-name.sql.md migrations (default: the project\'s, package.json "postgrest-sessions".migrations, or migrations/ beside --file)',
    )
    .option(
      "--with-tests",
      "rehearse first: apply the pending migrations and every ```sql tests block in one transaction, run the pgTAP suite, roll it all back, and apply the migrations for real only when the suite passes",
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
          // The plan is the answer a dry run was asked for: standard output.
          plan: (line) => process.stdout.write(`${line}\n`),
          log: (line) => process.stderr.write(`${line}\n`),
        });
        if (result.pgtap && !result.pgtap.ok) process.exitCode = 1;
        if (!flags.dryRun && result.applied.length > 0) {
          process.stderr.write(
            "PostgREST sees the new schema after NOTIFY on its channel (db-channel) with 'reload schema', or a restart\n",
          );
        }
      }),
    );
}
