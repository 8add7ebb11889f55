// postgrest-sessions init [dir]: a new project that is green at once. It
// gets the session module, an application document with one table (its
// policies, fixtures and a pgTAP test), one HTTP test using the toolkit's
// helpers, and package.json scripts (start, dev, test).
//
// The toolkit is not on the npm registry yet, so the project depends on a
// copy of it: `npm pack` of the toolkit this command runs from (a checkout or
// an installed tarball), placed in the project's vendor/ directory, so that
// `npm ci` works there without anything else.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, relative, resolve } from "node:path";
import { Command } from "commander";
import { runAction, UsageError } from "./common.js";

/** The toolkit's own directory (a checkout, or node_modules/postgrest-sessions). */
const TOOLKIT = join(import.meta.dirname, "..", "..");

export interface InitOptions {
  /** Write package-lock.json (npm install --package-lock-only; needs the npm registry). Default true. */
  lockfile?: boolean;
  /** Add the database doors (doors.sql.md): psql and pgweb as the app's users. Default false. */
  doors?: boolean;
  /** Add psql's sign-in through the browser (device.sql.md; implies doors). Default false. */
  device?: boolean;
  /** Add single sign-on (sso.sql.md): an identity provider's tokens. Default false. */
  sso?: boolean;
  /** Add accounts by email (email.sql.md): verification, reset, email change. Default false. */
  email?: boolean;
  log?: (line: string) => void;
}

function packageName(dir: string): string {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[._-]+/, "");
  return name || "postgrest-app";
}

/** What app.sql.md gets when the project has the doors: the demo user may use them. */
/** One line per document, for the new project's README. */
const DESCRIPTIONS: Record<string, string> = {
  "sessions.sql.md":
    "`sessions.sql.md`: the session module (registration, login, sessions,\n  throttling, audit). Its interface is written at its top.",
  "sso.sql.md": "`sso.sql.md`: single sign-on with one OpenID Connect provider.",
  "doors.sql.md":
    "`doors.sql.md`: the database doors (psql and pgweb log in as the app's\n  users, once an account is given a door with `auth.grant_door`).",
  "device.sql.md":
    "`device.sql.md`: psql 18 signs in through the browser (the app as an OAuth\n  issuer, the device flow; the gateway's OAuth door).",
  "email.sql.md":
    "`email.sql.md`: accounts by email (verification, forgotten passwords, email\n  change, sign-in links), delivered by `postgrest-sessions mailer`.",
  "app.sql.md": "`app.sql.md`: this application, a table of private notes to start from.",
};

const DOORS_FIXTURE = `The database doors ([\`doors.sql.md\`](doors.sql.md)) let psql and pgweb in
as the app's users, each only with a door an administrator grants: the
demo user gets one, so that the \`psql\` line \`npm start\` prints works.

\`\`\`sql fixtures
select auth.grant_door(user_id) from auth.users where email = 'demo@example.com';
\`\`\`
`;

/** Creates the project in `dir` (made if missing; it must be empty). */
export async function initProject(dir: string, options: InitOptions = {}): Promise<void> {
  const log = options.log ?? (() => {});
  const target = resolve(dir);
  // Inside a checkout of the toolkit, the project would be linted and
  // collected by the toolkit's own checks (and a failing test of its own
  // would fail them).
  const inside = relative(resolve(TOOLKIT), target);
  if (existsSync(join(TOOLKIT, ".git")) && !inside.startsWith("..") && !inside.startsWith("/")) {
    throw new UsageError(
      `${dir} is inside the toolkit's own repository (${resolve(TOOLKIT)}): create the project beside it, ` +
        `for example: init ../${basename(target) || "my-app"}`,
    );
  }
  if (existsSync(target) && readdirSync(target).some((entry) => entry !== ".git")) {
    throw new UsageError(`${dir} is not empty: init creates a new project in an empty directory`);
  }
  mkdirSync(join(target, "test"), { recursive: true });
  mkdirSync(join(target, "migrations"), { recursive: true });
  const templates = join(TOOLKIT, "templates", "init");
  const toolkitPackage = JSON.parse(readFileSync(join(TOOLKIT, "package.json"), "utf8")) as {
    version: string;
    devDependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
  };

  // The toolkit itself, packed into vendor/: the project's dependency.
  const vendor = join(target, "vendor");
  mkdirSync(vendor, { recursive: true });
  const packed = execFileSync(
    "npm",
    ["pack", "--ignore-scripts", "--silent", "--pack-destination", vendor],
    { cwd: TOOLKIT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  )
    .trim()
    .split("\n")
    .at(-1) as string;
  log(`packed the toolkit into vendor/${packed}`);

  const name = packageName(dir);
  const documents = [
    "sessions.sql.md",
    ...(options.sso ? ["sso.sql.md"] : []),
    ...(options.doors || options.device ? ["doors.sql.md"] : []),
    ...(options.device ? ["device.sql.md"] : []),
    ...(options.email ? ["email.sql.md"] : []),
    "app.sql.md",
  ];
  const vitest = toolkitPackage.devDependencies?.vitest ?? "3.2.7";
  const manifest = {
    name,
    version: "0.1.0",
    private: true,
    type: "module",
    scripts: {
      start: "postgrest-sessions deploy-local",
      dev: "postgrest-sessions deploy-local --watch",
      test: "vitest run",
    },
    "postgrest-sessions": {
      documents: documents,
      migrations: "migrations",
    },
    dependencies: { "postgrest-sessions": `file:vendor/${packed}` },
    devDependencies: { vitest },
  };
  writeFileSync(join(target, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  // The module's documents are copies: they are the project's documents now.
  for (const document of documents.filter((d) => d !== "app.sql.md")) {
    writeFileSync(join(target, document), readFileSync(join(TOOLKIT, document)));
  }
  for (const file of [
    "app.sql.md",
    "vitest.config.ts",
    "test/api.test.ts",
    "test/database.test.ts",
  ]) {
    writeFileSync(join(target, file), readFileSync(join(templates, file)));
  }
  if (options.doors || options.device) {
    writeFileSync(
      join(target, "app.sql.md"),
      `${readFileSync(join(templates, "app.sql.md"), "utf8").trimEnd()}\n\n${DOORS_FIXTURE}`,
    );
  }
  writeFileSync(join(target, ".gitignore"), readFileSync(join(templates, "gitignore")));
  writeFileSync(
    join(target, "README.md"),
    readFileSync(join(templates, "README.md"), "utf8")
      .replaceAll("__NAME__", name)
      .replace("__DOCUMENTS__", documents.map((d) => `- ${DESCRIPTIONS[d]}\n`).join(""))
      .replace("__FIRST_MIGRATION__", String(documents.length + 1).padStart(3, "0")),
  );
  writeFileSync(
    join(target, "migrations", "README.md"),
    `Migrations for this project: \`NNN-name.sql.md\`, from ${String(documents.length + 1).padStart(3, "0")} ` +
      `(the documents are 001 to ${String(documents.length).padStart(3, "0")}: ${documents.join(", ")}).\n`,
  );

  if (options.lockfile ?? true) {
    execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--silent"], {
      cwd: target,
      stdio: ["ignore", "ignore", "pipe"],
    });
    log("wrote package-lock.json");
  }
}

export function initCommand(): Command {
  return new Command("init")
    .summary("create a new project: the session module, an example document, tests")
    .description(
      "Create a new project in dir (default: the current directory, which must be empty): " +
        "sessions.sql.md (the session module), app.sql.md (one example table with its policies, " +
        "fixtures and a pgTAP test), an HTTP test using postgrest-sessions/testing, and package.json " +
        "with start, dev and test scripts. The toolkit is packed into vendor/ as the project's " +
        "dependency, and package-lock.json written, so that `npm ci && npm start` and " +
        "`npm ci && npm test` work there at once.",
    )
    .argument("[dir]", "where to create the project", ".")
    .option("--no-lockfile", "do not write package-lock.json (it needs the npm registry)")
    .option(
      "--doors",
      "add the database doors (doors.sql.md): psql, other clients and pgweb log in as the app's users",
    )
    .option(
      "--device",
      "add psql's sign-in through the browser (device.sql.md, with the doors): the app as an OAuth issuer",
    )
    .option("--sso", "add single sign-on (sso.sql.md): log in with an identity provider's token")
    .option(
      "--email",
      "add accounts by email (email.sql.md): verification, forgotten passwords, email change, sign-in links",
    )
    .action(
      (
        dir: string,
        flags: {
          lockfile: boolean;
          doors?: boolean;
          device?: boolean;
          sso?: boolean;
          email?: boolean;
        },
      ) =>
        runAction(async () => {
          await initProject(dir, {
            lockfile: flags.lockfile,
            doors: flags.doors === true,
            device: flags.device === true,
            sso: flags.sso === true,
            email: flags.email === true,
            log: (line) => process.stderr.write(`${line}\n`),
          });
          const cd = relative(process.cwd(), resolve(dir));
          process.stdout.write(
            [
              `created ${cd || "."}:`,
              ...(cd ? [`  cd ${cd}`] : []),
              "  npm ci && npm start     # the API on http://127.0.0.1:3000",
              "  npm ci && npm test      # its tests",
              "",
            ].join("\n"),
          );
        }),
    );
}
