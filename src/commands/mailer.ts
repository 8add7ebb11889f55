// postgrest-sessions mailer: delivers the mail that email.sql.md writes into
// the outbox (verification, password reset, email change and sign-in links).
// See src/mail/mailer.ts, and docs/email.md.

import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { registerCleanup, setSignalExitCode } from "../cleanup.js";
import { startMailer } from "../mail/mailer.js";
import { assertNoProblems, runAction } from "./common.js";
import { parseDuration } from "./gateway.js";

interface MailerFlags {
  databaseUrl?: string;
  smtpUrl?: string;
  smtpUrlFile?: string;
  from?: string;
  templates?: string;
  appName?: string;
  retryBase: string;
  poll: string;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function mailerCommand(): Command {
  return new Command("mailer")
    .description(
      "deliver the outbox of email.sql.md (verification, reset, email change, sign-in links) over SMTP",
    )
    .addOption(
      new Option(
        "--database-url <url>",
        "the application database, as the mailer role (postgres://mailer:...@host/app)",
      ).env("MAILER_DATABASE_URL"),
    )
    .addOption(
      new Option(
        "--smtp-url <url>",
        "the SMTP server: smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465",
      ).env("SMTP_URL"),
    )
    .addOption(
      new Option(
        "--smtp-url-file <file>",
        "read the SMTP URL from a file instead (systemd's LoadCredential=, a mounted secret)",
      ).env("SMTP_URL_FILE"),
    )
    .addOption(
      new Option(
        "--from <address>",
        'the From: of every message ("App <no-reply@example.com>")',
      ).env("MAIL_FROM"),
    )
    .option(
      "--templates <dir>",
      "a directory of templates (name.txt, name.html) that replace the built-in ones",
    )
    .option("--app-name <name>", "what {{app}} says in messages (default: the host of the link)")
    .option("--retry-base <duration>", "delay before the first retry; each next one doubles", "10s")
    .option("--poll <duration>", "how often to look for due retries without a notification", "5s")
    .action((flags: MailerFlags) => runAction(() => runMailer(flags)));
}

async function runMailer(flags: MailerFlags): Promise<void> {
  const problems: string[] = [];
  if (!flags.databaseUrl) problems.push("--database-url (or MAILER_DATABASE_URL) is required");
  if (!flags.smtpUrl && !flags.smtpUrlFile) {
    problems.push("--smtp-url (or SMTP_URL), or --smtp-url-file, is required");
  }
  if (flags.smtpUrl && flags.smtpUrlFile)
    problems.push("--smtp-url and --smtp-url-file exclude each other");
  if (!flags.from) problems.push("--from (or MAIL_FROM) is required");
  const retryBaseMs = parseDuration(flags.retryBase, "--retry-base", problems);
  const pollMs = parseDuration(flags.poll, "--poll", problems);
  let smtpUrl = flags.smtpUrl;
  if (flags.smtpUrlFile) {
    try {
      smtpUrl = readFileSync(flags.smtpUrlFile, "utf8").trim();
    } catch (error) {
      problems.push(`--smtp-url-file: ${(error as Error).message}`);
    }
  }
  if (smtpUrl && !/^smtps?:\/\//.test(smtpUrl)) {
    problems.push("the SMTP URL must start with smtp:// or smtps://");
  }
  assertNoProblems(problems);
  const mailer = await startMailer({
    connection: { connectionString: flags.databaseUrl as string },
    smtpUrl: smtpUrl as string,
    from: flags.from as string,
    ...(flags.templates ? { templates: flags.templates } : {}),
    ...(flags.appName ? { appName: flags.appName } : {}),
    retryBaseMs,
    pollMs,
    log,
  });
  registerCleanup({ name: "the mailer", stop: () => mailer.stop(), lastResort: () => {} });
  setSignalExitCode(() => 0);
  log(
    "mailer: delivering the outbox (stop with Ctrl-C or SIGTERM: the message in hand is finished first)",
  );
}
