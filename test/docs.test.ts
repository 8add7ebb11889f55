// The docs say what the commands say: each command reference in docs/ is
// the command's own --help, and goes stale the moment a help
// text changes (npm run docs:help brings it up to date).

import { describe, expect, it } from "vitest";
import { DOCUMENTS, withCurrentHelp } from "../scripts/help-in-docs.mjs";

describe("the command reference in the docs", () => {
  it.each(DOCUMENTS)("%s shows each command's --help as it is", (file) => {
    const { text, stale } = withCurrentHelp(file);
    expect(text).toMatch(/<!-- the output of: postgrest-sessions [a-z-]+ --help -->/);
    expect(stale, `stale in ${file}: run npm run docs:help`).toEqual([]);
  });
});
