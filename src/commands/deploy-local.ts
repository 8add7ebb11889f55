// postgrest-sessions deploy-local: a throwaway PostgreSQL + PostgREST serving
// the document, until Ctrl-C.

import { Command, Option } from "commander";
import { setSignalExitCode } from "../cleanup.js";
import { describeDocuments, projectDocuments } from "../document/project.js";
import {
  deployLocal,
  type LocalDeployment,
  type LocalDeploymentOptions,
} from "../serving/deploy.js";
import type { IdentityMode } from "../serving/postgrest.js";
import { watchDocument } from "../serving/watch.js";
import { assertNoProblems, parsePort, runAction, ssoOptions, UsageError } from "./common.js";

interface DeployLocalFlags {
  port?: string;
  file?: string;
  tests: boolean;
  fixtures: boolean;
  pgBin?: string;
  pgPort?: string;
  postgres: "local" | "docker";
  identity: IdentityMode;
  watch?: boolean;
  runTests?: string | true;
  migrationsDir?: string;
  oidcIssuer?: string;
  oidcAudience?: string;
  oidcKeys?: string;
  oidcUserinfo?: string;
  gateway: boolean;
  mail: boolean;
  replicas?: string;
  gatewayPort?: string;
  pgwebBackendPort?: string;
}

/** How to use the database doors, for the first user of the fixtures. */
async function doorLines(deployment: LocalDeployment): Promise<string[]> {
  const doors = deployment.doors;
  if (!doors) return [];
  const client = await deployment.connect();
  let user = "<email>";
  try {
    const { rows } = await client.query<{ email: string }>(
      "select email from auth.users order by user_id limit 1",
    );
    user = rows[0]?.email ?? user;
  } finally {
    await client.end();
  }
  return [
    `gateway: ${doors.psqlCommand(user)}   (password: the account's, or a session token)`,
    ...(doors.browserPsqlCommand
      ? [`browser: ${doors.browserPsqlCommand}   (psql 18: approve the code it prints, logged in)`]
      : []),
    `pgweb:   pgweb --sessions --lock-session --connect-backend ${doors.pgweb.url} --connect-token ${doors.pgwebToken}`,
  ];
}

/** The line that says how to reach the database: a psql command, or what to do without psql. */
function databaseLine(command: string): string {
  return /^(PGPASSWORD=\S+ )?psql /.test(command) ? `psql:  ${command}` : `database: ${command}`;
}

/** The demo users the fixtures made, for the ready lines (the documents say their passwords). */
async function usersLine(deployment: LocalDeployment): Promise<string[]> {
  const client = await deployment.connect();
  try {
    const { rows } = await client.query<{ emails: string | null }>(
      `select string_agg(email, ', ' order by user_id) as emails
         from (select email, user_id from auth.users order by user_id limit 5) u`,
    );
    const emails = rows[0]?.emails;
    return emails
      ? [`users: ${emails} (the fixtures' users; their password is in the documents)`]
      : [];
  } catch {
    return []; // no auth.users: a document without the session module
  } finally {
    await client.end();
  }
}

function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function deployLocalCommand(): Command {
  return new Command("deploy-local")
    .summary("serve the document on a throwaway PostgreSQL + PostgREST")
    .description(
      "Start a throwaway PostgreSQL cluster, load the project's documents into it (with their test and " +
        "fixture blocks), run the pgTAP suite and serve it with PostgREST until Ctrl-C; then remove everything. " +
        "The port serves the API at / and the demo page at /demo/.",
    )
    .addOption(new Option("-p, --port <port>", "API port on 127.0.0.1").env("PORT").default("3000"))
    .option(
      "-f, --file <path>",
      'one literate SQL document instead of the project\'s list (package.json "postgrest-sessions".documents)',
    )
    .option("--no-tests", "do not load or run ```sql tests blocks")
    .option("--no-fixtures", "do not load ```sql fixtures blocks (demo data)")
    .addOption(
      new Option("--pg-bin <dir>", "directory with initdb and postgres (default: discovered)").env(
        "PG_BIN",
      ),
    )
    .option("--pg-port <port>", "also let PostgreSQL listen on this 127.0.0.1 port")
    .addOption(
      new Option(
        "--identity <mode>",
        "how requests are identified: pre-request (auth.authenticate) or inline (in each request's own statement; faster)",
      )
        .choices(["pre-request", "inline"])
        .default("pre-request")
        .env("IDENTITY_MODE"),
    )
    .addOption(
      new Option("--postgres <source>", "where PostgreSQL comes from")
        .choices(["local", "docker"])
        .default("local"),
    )
    .addOption(
      new Option(
        "--oidc-issuer <url>",
        "accept access tokens from this identity provider (its issuer URL; one per deployment) at /rpc/login_with_token",
      ).env("OIDC_ISSUER"),
    )
    .addOption(
      new Option("--oidc-audience <aud>", "the audience their tokens must carry").env(
        "OIDC_AUDIENCE",
      ),
    )
    .addOption(
      new Option(
        "--oidc-keys <file>",
        "the providers' JSON Web Key Set from a file instead of discovery",
      ).env("OIDC_KEYS_FILE"),
    )
    .addOption(
      new Option(
        "--oidc-userinfo <url>",
        "its userinfo endpoint: opaque (non-JWT) access tokens are checked there, at /rpc/login_with_token and the OAuth door",
      ).env("OIDC_USERINFO"),
    )
    .option(
      "--no-gateway",
      "do not start the database doors (the psql gateway and pgweb's backend)",
    )
    .option(
      "--replicas <n>",
      "also start n streaming replicas (pg_basebackup, hot standby), each with a PostgREST that serves the reads",
    )
    .option(
      "--no-mail",
      "do not start mail (the mailer and the local SMTP server whose messages /mail/ lists)",
    )
    .option("--gateway-port <port>", "the gateway's port on 127.0.0.1 (default: a free one)")
    .option("--pgweb-backend-port <port>", "pgweb's connect backend's port (default: a free one)")
    .option(
      "-m, --migrations-dir <dir>",
      'the migrations, NNN-name.sql.md, applied after the documents (default: the project\'s, package.json "postgrest-sessions".migrations, or migrations/ beside --file)',
    )
    .option(
      "--run-tests [vitest-args]",
      "with --watch: after each reload, run vitest (these files and filters; default all) against the new version and print a one-line summary",
    )
    .option(
      "-w, --watch",
      "reload on every save: fresh database, pgTAP suite, new PostgREST; a version that fails to load never replaces the one serving",
    )
    .action((flags: DeployLocalFlags) => runAction(() => runDeployLocal(flags)));
}

/** The deploy-local command's work: options checked, then a deployment or a watch session, and its ready lines. */
async function runDeployLocal(flags: DeployLocalFlags): Promise<void> {
  const problems: string[] = [];
  const port = parsePort(flags.port, "--port (or PORT)", problems);
  const pgPort = parsePort(flags.pgPort, "--pg-port", problems);
  const gatewayPort = parsePort(flags.gatewayPort, "--gateway-port", problems);
  const pgwebBackendPort = parsePort(flags.pgwebBackendPort, "--pgweb-backend-port", problems);
  const sso = ssoOptions(flags, problems);
  if (flags.runTests !== undefined && !flags.watch) {
    problems.push("--run-tests needs --watch");
  }
  const replicas = flags.replicas === undefined ? 0 : Number(flags.replicas);
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 8) {
    problems.push(`--replicas must be a whole number from 0 to 8, got "${flags.replicas}"`);
  }
  if (replicas > 0 && flags.watch) problems.push("--replicas cannot be combined with --watch");
  if (replicas > 0 && flags.postgres === "docker") {
    problems.push("--replicas cannot be combined with --postgres docker");
  }
  assertNoProblems(problems);
  const options: LocalDeploymentOptions = {
    ...(flags.file ? { file: flags.file } : {}),
    ...(flags.migrationsDir ? { migrationsDir: flags.migrationsDir } : {}),
    tests: flags.tests,
    fixtures: flags.fixtures,
    log: progress,
    ...(port ? { port } : {}),
    ...(pgPort ? { pgPort } : {}),
    ...(flags.pgBin ? { pgBin: flags.pgBin } : {}),
    postgres: flags.postgres,
    identity: flags.identity,
    ...(sso ? { sso } : {}),
    gateway: flags.gateway,
    mail: flags.mail,
    ...(replicas > 0 ? { replicas } : {}),
    ...(gatewayPort ? { gatewayPort } : {}),
    ...(pgwebBackendPort ? { pgwebBackendPort } : {}),
  };
  // Ctrl-C is how this command is meant to end: a clean stop is a success.
  setSignalExitCode(() => 0);
  const started = performance.now();
  if (flags.watch) {
    if (pgPort) throw new UsageError("--pg-port cannot be combined with --watch");
    if (options.sso) throw new UsageError("--oidc-issuer cannot be combined with --watch yet");
    if (flags.postgres === "docker") {
      throw new UsageError("--postgres docker cannot be combined with --watch yet");
    }
    const runTests =
      flags.runTests === undefined
        ? undefined
        : flags.runTests === true
          ? []
          : flags.runTests.split(/\s+/).filter(Boolean);
    const session = await watchDocument({ ...options, ...(runTests ? { runTests } : {}) });
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const lines = [
      `ready: ${session.url} serves ${describeDocuments(projectDocuments(options))}, watching for changes (${seconds} s)`,
      ...(session.demoUrl ? [`demo:  ${session.demoUrl}`] : []),
      `${databaseLine(session.cluster.psqlCommand(session.currentDatabase()))}   (each reload names its new database)`,
      `logs:  ${session.cluster.dir}`,
      "Press Ctrl-C to stop and remove everything.",
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    return;
  }
  const deployment = await deployLocal(options);
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  const { cluster, postgrest, doors } = deployment;
  const lines = [
    `ready: ${deployment.url} serves ${describeDocuments(deployment.documents)} (${seconds} s)`,
    ...(deployment.demoUrl ? [`demo:  ${deployment.demoUrl}`] : []),
    ...(await usersLine(deployment)),
    databaseLine(cluster.psqlCommand(deployment.database)),
    ...(doors ? await doorLines(deployment) : []),
    ...(deployment.mail
      ? [
          `mail:  ${deployment.mail.pageUrl}   (what the application sent; nothing leaves this machine)`,
        ]
      : []),
    ...deployment.replicas.map(
      (replica, i) =>
        `replica ${i + 1}: ${replica.cluster.psqlCommand(deployment.database)}   ` +
        `(hot standby; its PostgREST, ${replica.postgrest.url}, serves the reads)`,
    ),
    `logs:  ${cluster.logFile} ${postgrest.logFile}`,
    "Press Ctrl-C to stop and remove everything.",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  process.once("exit", () => {
    process.stderr.write(`stopped; removed ${cluster.dir}\n`);
  });
}
