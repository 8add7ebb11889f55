// The docs say what the commands say: each command reference in docs/ is
// the command's own --help, and goes stale the moment a help
// text changes (npm run docs:help brings it up to date).

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { DOCUMENTS, withCurrentHelp } from "../scripts/help-in-docs.mjs";

describe("the command reference in the docs", () => {
  it.each(DOCUMENTS)("%s shows each command's --help as it is", (file) => {
    const { text, stale } = withCurrentHelp(file);
    expect(text).toMatch(/<!-- the output of: postgrest-sessions [a-z-]+ --help -->/);
    expect(stale, `stale in ${file}: run npm run docs:help`).toEqual([]);
  });
});

describe("the README and docs/", () => {
  const root = join(import.meta.dirname, "..");
  const pages = readdirSync(join(root, "docs")).filter((name) => name.endsWith(".md"));

  it("links every page of docs/ from the README, which stays short", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    expect(pages.length).toBeGreaterThan(10);
    for (const page of pages)
      expect(readme, `README links docs/${page}`).toContain(`(docs/${page})`);
    expect(readme.split("\n").length).toBeLessThan(250);
  });

  it.each(["README.md", ...pages.map((page) => `docs/${page}`), "migrations/README.md"])(
    "%s links only to files that exist",
    (file) => {
      const text = readFileSync(join(root, file), "utf8");
      const targets = [...text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)]
        .map((m) => m[1] as string)
        .filter((target) => !/^[a-z]+:/.test(target));
      const missing = targets.filter((target) => !existsSync(join(root, dirname(file), target)));
      expect(missing, `broken links in ${file}`).toEqual([]);
    },
  );
});
