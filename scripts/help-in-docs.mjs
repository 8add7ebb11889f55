// The command reference in docs/ is each command's own --help, word for
// word, so that the two cannot say different things. A fenced block right
// after a line "<!-- the output of: postgrest-sessions <command> --help -->"
// (fenced with four backticks: the help texts contain three) holds that output; this script rewrites those blocks (npm run docs:help),
// and test/docs.test.ts fails while one is stale.

import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "..");
export const DOCUMENTS = [
  "docs/commands.md",
  "docs/single-sign-on.md",
  "docs/database-doors.md",
  "docs/email.md",
];
const MARKER =
  /(<!-- the output of: postgrest-sessions ([a-z0-9-]+) --help -->\n````\n)([\s\S]*?)(````)/g;

/** A command's --help, as a pipe (not a terminal) gets it: 80 columns. */
export function helpOf(command) {
  return execFileSync(process.execPath, [join(ROOT, "dist", "cli.js"), command, "--help"], {
    encoding: "utf8",
    env: { ...process.env, COLUMNS: "80" },
  });
}

/** Each document as it should read, and which of its blocks differ. */
export function withCurrentHelp(file) {
  const text = readFileSync(join(ROOT, file), "utf8");
  const stale = [];
  const updated = text.replace(MARKER, (_, head, command, body, fence) => {
    const help = helpOf(command);
    if (body !== help) stale.push(command);
    return `${head}${help}${fence}`;
  });
  return { text, updated, stale };
}

if (process.argv[1] === import.meta.filename) {
  for (const file of DOCUMENTS) {
    const { updated, stale } = withCurrentHelp(file);
    if (stale.length > 0) {
      writeFileSync(join(ROOT, file), updated);
      process.stdout.write(`${file}: ${stale.join(", ")} brought up to date\n`);
    }
  }
}
