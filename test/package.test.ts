// The package as users get it: `npm pack` output installed into a scratch
// project, imported as a library with its types.

import { execFile, execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { npmStart } from "./support/deploy-local-process.js";

const ROOT = join(import.meta.dirname, "..");

/**
 * A long command (npm pack, install, ci, a project's whole test run), run
 * without blocking this file's process: vitest's worker must hear back from
 * its runner within 60 s, which a synchronous minute of npm on a loaded
 * machine does not allow. Its standard output.
 */
async function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<string> {
  const { stdout } = await promisify(execFile)(command, args, {
    ...options,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}
let work: string;
let scratch: string;
let tarball: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "package-test-"));
  scratch = join(work, "scratch");
  await run("npm", ["pack", "--pack-destination", work], { cwd: ROOT });
  tarball = join(work, readdirSync(work).find((f) => f.endsWith(".tgz")) as string);
  mkdirSync(scratch);
  writeFileSync(
    join(scratch, "package.json"),
    JSON.stringify({ name: "scratch", private: true, type: "module" }),
  );
  // Optional dependencies (the PostgreSQL and PostgREST binaries) are not
  // needed to import the library; leaving them out keeps this quick.
  await run(
    "npm",
    ["install", "--no-audit", "--no-fund", "--prefer-offline", "--omit=optional", tarball],
    { cwd: scratch },
  );
}, 120_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("the packed package", () => {
  it("imports as a library: deployLocal, compile, migrate and the rest", () => {
    const out = execFileSync(
      "node",
      [
        "--input-type=module",
        "-e",
        `import * as lib from "postgrest-sessions";
         const doc = lib.compile("# Title\\n\\n\`\`\`sql\\nselect 1;\\n\`\`\`\\n");
         console.log(JSON.stringify({
           functions: ["deployLocal", "compile", "compileFile", "migrate", "watchDocument", "startCluster", "startPostgrest", "runPgTap"].filter((name) => typeof lib[name] === "function"),
           sql: doc.sql,
         }));`,
      ],
      { cwd: scratch, encoding: "utf8" },
    );
    const result = JSON.parse(out) as { functions: string[]; sql: string };
    expect(result.functions).toEqual([
      "deployLocal",
      "compile",
      "compileFile",
      "migrate",
      "watchDocument",
      "startCluster",
      "startPostgrest",
      "runPgTap",
    ]);
    expect(result.sql).toBe("-- # Title\n\n-- ```sql\nselect 1;\n-- ```\n");
  });

  it("has types that a TypeScript project compiles against", () => {
    writeFileSync(
      join(scratch, "use.ts"),
      `import { compile, deployLocal, migrate, type LocalDeploymentOptions } from "postgrest-sessions";
const options: LocalDeploymentOptions = { file: "app.sql.md", port: 3000 };
const lines: number = compile("x").lineCount;
export const used = [options, lines, deployLocal, migrate];
// @ts-expect-error: port is a number
export const wrong: LocalDeploymentOptions = { port: "3000" };
`,
    );
    writeFileSync(
      join(scratch, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          target: "ES2022",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
        files: ["use.ts"],
      }),
    );
    execFileSync(join(ROOT, "node_modules", ".bin", "tsc"), ["-p", scratch], { stdio: "pipe" });
  });

  it("scaffolds a project with init that is green at once: npm ci && npm test, npm start", async () => {
    const project = join(work, "notes");
    execFileSync(join(scratch, "node_modules", ".bin", "postgrest-sessions"), ["init", project], {
      stdio: "pipe",
    });
    for (const file of [
      "package.json",
      "package-lock.json",
      "sessions.sql.md",
      "app.sql.md",
      "test/api.test.ts",
    ]) {
      expect(existsSync(join(project, file)), file).toBe(true);
    }
    const readme = readFileSync(join(project, "README.md"), "utf8");
    expect(readme).toContain("`migrations/NNN-name.sql.md`, from 003.");
    expect(readme).not.toMatch(/__[A-Z_]+__|doors\.sql\.md|sso\.sql\.md/);
    const manifest = JSON.parse(readFileSync(join(project, "package.json"), "utf8"));
    expect(manifest.scripts).toMatchObject({
      start: expect.any(String),
      dev: expect.any(String),
      test: "vitest run",
    });
    expect(manifest.dependencies["postgrest-sessions"]).toMatch(
      /^file:vendor\/postgrest-sessions-.*\.tgz$/,
    );
    await run("npm", ["ci", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: project });
    const output = await run("npm", ["test"], { cwd: project, env: projectEnvironment() });
    expect(output).toMatch(/Test Files +2 passed \(2\)/);
    expect(output).toMatch(/Tests +\d+ passed/);

    // The guide's other command: npm start serves the notes until Ctrl-C.
    const started = await npmStart(project, await freePort(), async (url) => {
      const notes = await fetch(`${url}/notes`);
      expect(notes.status).toBe(401);
    });
    expect(["exit 0", "SIGINT"], started.output).toContain(started.ended);
    expect(started.output).toContain("stopped; removed");
  }, 240_000);

  it("scaffolds a project with single sign-on, the database doors with psql's browser sign-in and accounts by email (init --sso --device --email) that is green at once", async () => {
    const project = join(work, "notes-with-doors");
    execFileSync(
      join(scratch, "node_modules", ".bin", "postgrest-sessions"),
      // --device brings the doors it needs.
      ["init", project, "--sso", "--device", "--email"],
      { stdio: "pipe" },
    );
    const manifest = JSON.parse(readFileSync(join(project, "package.json"), "utf8"));
    expect(manifest["postgrest-sessions"].documents).toEqual([
      "sessions.sql.md",
      "sso.sql.md",
      "doors.sql.md",
      "device.sql.md",
      "email.sql.md",
      "app.sql.md",
    ]);
    expect(readFileSync(join(project, "app.sql.md"), "utf8")).toContain("auth.grant_door");
    const readme = readFileSync(join(project, "README.md"), "utf8");
    expect(readme).toContain("`doors.sql.md`: the database doors");
    expect(readme).toContain("`sso.sql.md`: single sign-on");
    expect(readme).toContain("`email.sql.md`: accounts by email");
    expect(readme).toContain("`device.sql.md`: psql 18 signs in through the browser");
    expect(readme).toContain("`migrations/NNN-name.sql.md`, from 007.");
    await run("npm", ["ci", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: project });
    const output = await run("npm", ["test", "--", "--reporter=verbose"], {
      cwd: project,
      env: projectEnvironment(),
    });
    expect(output).toMatch(/Test Files +2 passed \(2\)/);
    // The added documents' own pgTAP tests ran in the project's suite.
    expect(output).toContain("tests.test_door_access");
    expect(output).toContain("tests.test_single_sign_on");
    expect(output).toContain("tests.test_password_reset");
    expect(output).toContain("tests.test_device_flow");
  }, 240_000);

  it("refuses to init into a directory that is not empty", () => {
    const run = () =>
      execFileSync(join(scratch, "node_modules", ".bin", "postgrest-sessions"), ["init", scratch], {
        stdio: "pipe",
        encoding: "utf8",
      });
    expect(run).toThrow(/is not empty/);
  });

  it("ships the command line", () => {
    const out = execFileSync(
      join(scratch, "node_modules", ".bin", "postgrest-sessions"),
      ["--help"],
      {
        encoding: "utf8",
      },
    );
    expect(out).toContain("deploy-local");
  });
});

/** The project's own run, not this suite's: no inherited test settings. */
function projectEnvironment(): NodeJS.ProcessEnv {
  return {
    ...Object.fromEntries(
      Object.entries(process.env).filter(
        ([key]) => !/^(VITEST|TEST_|NODE_OPTIONS|FORCE_COLOR)/.test(key),
      ),
    ),
    NO_COLOR: "1",
  };
}
