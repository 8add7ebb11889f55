// The package as users get it: `npm pack` output installed into a scratch
// project, imported as a library with its types.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
let work: string;
let scratch: string;
let tarball: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "package-test-"));
  scratch = join(work, "scratch");
  execFileSync("npm", ["pack", "--pack-destination", work], { cwd: ROOT, stdio: "pipe" });
  tarball = join(work, readdirSync(work).find((f) => f.endsWith(".tgz")) as string);
  mkdirSync(scratch);
  writeFileSync(
    join(scratch, "package.json"),
    JSON.stringify({ name: "scratch", private: true, type: "module" }),
  );
  // Optional dependencies (the PostgreSQL and PostgREST binaries) are not
  // needed to import the library; leaving them out keeps this quick.
  execFileSync(
    "npm",
    ["install", "--no-audit", "--no-fund", "--prefer-offline", "--omit=optional", tarball],
    { cwd: scratch, stdio: "pipe" },
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
