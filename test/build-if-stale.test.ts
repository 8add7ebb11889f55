// `npm start` builds only when a source changed since the last build.

import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";

let project: string;
beforeAll(() => {
  project = mkdtempSync(join(tmpdir(), "build-if-stale-"));
});
afterAll(() => rmSync(project, { recursive: true, force: true }));

it("runs tsc when a source is newer than the last build, and not otherwise", () => {
  for (const dir of ["scripts", "src", "dist", "node_modules/.bin"]) {
    mkdirSync(join(project, dir), { recursive: true });
  }
  copyFileSync(
    join(import.meta.dirname, "..", "scripts", "build-if-stale.mjs"),
    join(project, "scripts", "build-if-stale.mjs"),
  );
  for (const file of ["tsconfig.json", "tsconfig.build.json", "package.json"]) {
    writeFileSync(join(project, file), "{}");
  }
  writeFileSync(join(project, "src", "cli.ts"), "export {};");
  // A stand-in for tsc that counts its runs and writes the build info, as tsc does.
  const calls = join(project, "calls");
  writeFileSync(
    join(project, "node_modules", ".bin", "tsc"),
    `#!/bin/sh\necho run >> ${calls}\ntouch ${join(project, "dist", ".tsbuildinfo")}\n`,
  );
  chmodSync(join(project, "node_modules", ".bin", "tsc"), 0o755);
  // And for the native relay's build, which decides for itself (--if-stale).
  writeFileSync(
    join(project, "scripts", "build-native.mjs"),
    `import { appendFileSync } from "node:fs";\nappendFileSync(${JSON.stringify(join(project, "native"))}, process.argv.slice(2).join(" ") + "\\n");\n`,
  );
  const build = () => execFileSync("node", [join(project, "scripts", "build-if-stale.mjs")]);
  const nativeRuns = () =>
    readFileSync(join(project, "native"), "utf8").split("\n").filter(Boolean);
  const runs = () => readFileSync(calls, "utf8").split("\n").filter(Boolean).length;

  build();
  expect(runs()).toBe(1);
  build();
  expect(runs()).toBe(1);
  const later = new Date(Date.now() + 5000);
  utimesSync(join(project, "src", "cli.ts"), later, later);
  build();
  expect(runs()).toBe(2);
  build();
  expect(runs()).toBe(2);
  expect(nativeRuns()).toEqual(["--if-stale", "--if-stale", "--if-stale", "--if-stale"]);
});
