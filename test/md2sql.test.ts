// md2sql: which blocks are code, line-for-line mapping, and clear errors.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileMarkdown, includedCode, Md2SqlError } from "../src/document/md2sql.js";
import { spawnCli } from "./support/deploy-local-process.js";

/** A document with every kind of block; the comment says what each line is. */
const MIXED = [
  "# Title", // 1 prose
  "", // 2
  "```sql", // 3 fence
  "create table app_table (id int);", // 4 APP
  "```", // 5 fence
  "", // 6
  "```sql tests", // 7
  "select tests_line;", // 8 TESTS
  "```", // 9
  "", // 10
  "```sql fixtures", // 11
  "insert into fixtures_line values (1);", // 12 FIXTURES
  "```", // 13
  "", // 14
  "~~~sql", // 15 tilde fence
  "select tilde_line;", // 16 APP
  "~~~", // 17
  "", // 18
  "````sql", // 19 four backticks
  "select '```' as fence_inside;", // 20 APP (contains a shorter fence)
  "```", // 21 still inside: a shorter fence does not close it
  "````", // 22
  "", // 23
  "```bash", // 24
  "echo bash_line", // 25 prose
  "```", // 26
  "", // 27
  "```json", // 28
  '{"json_line": true}', // 29 prose
  "```", // 30
  "", // 31
  "    select indented_line;", // 32 indented code: prose
  "", // 33
  "> ```sql", // 34 blockquote
  "> select quoted_line;", // 35 prose
  "> ```", // 36
  "", // 37
  "- a list item", // 38
  "", // 39
  "  ```sql", // 40 inside the list item
  "  select listed_line;", // 41 prose
  "  ```", // 42
  "", // 43
  "<div>", // 44 html
  "select html_line;", // 45 prose
  "</div>", // 46
  "", // 47
  "| a | b |", // 48 table
  "|---|---|", // 49
  "| 1 | 2 |", // 50
  "", // 51
  "```sql", // 52 empty block
  "```", // 53
  "", // 54
  "```sql", // 55 last block, no newline at the end of the file
  "select last_line;", // 56 APP
  "```", // 57
].join("\n");

const APP_LINES = [4, 16, 20, 21, 56];
const TEST_LINES = [8];
const FIXTURE_LINES = [12];

function linesOf(sql: string): string[] {
  return sql.split("\n");
}

describe("compileMarkdown on a document with every kind of block", () => {
  const input = linesOf(MIXED);

  it("keeps the line count and copies app code verbatim at its line", () => {
    const doc = compileMarkdown(MIXED, { fileName: "mixed.sql.md" });
    const output = linesOf(doc.sql);
    expect(output).toHaveLength(input.length);
    expect(doc.lineCount).toBe(input.length);
    for (let n = 1; n <= input.length; n++) {
      const line = output[n - 1] as string;
      if (APP_LINES.includes(n)) expect(line, `line ${n}`).toBe(input[n - 1]);
      else expect(line === "" || line.startsWith("-- "), `line ${n}: ${line}`).toBe(true);
    }
  });

  it("includes tests and fixtures only when asked", () => {
    const withAll = linesOf(
      compileMarkdown(MIXED, { includeTests: true, includeFixtures: true }).sql,
    );
    for (const n of [...APP_LINES, ...TEST_LINES, ...FIXTURE_LINES]) {
      expect(withAll[n - 1], `line ${n}`).toBe(input[n - 1]);
    }
    const testsOnly = linesOf(compileMarkdown(MIXED, { includeTests: true }).sql);
    expect(testsOnly[7]).toBe("select tests_line;");
    expect(testsOnly[11]).toBe("-- insert into fixtures_line values (1);");
  });

  it("never lets non-SQL code through", () => {
    const sql = compileMarkdown(MIXED, { includeTests: true, includeFixtures: true }).sql;
    for (const marker of [
      "bash_line",
      "json_line",
      "indented_line",
      "quoted_line",
      "listed_line",
      "html_line",
    ]) {
      const line = linesOf(sql).find((l) => l.includes(marker));
      expect(line, marker).toMatch(/^-- /);
    }
  });

  it("lists every sql block with its tag, lines and whether it was included", () => {
    const doc = compileMarkdown(MIXED, { includeTests: true });
    expect(doc.blocks).toEqual([
      { tag: "app", startLine: 4, endLine: 4, included: true },
      { tag: "tests", startLine: 8, endLine: 8, included: true },
      { tag: "fixtures", startLine: 12, endLine: 12, included: false },
      { tag: "app", startLine: 16, endLine: 16, included: true },
      { tag: "app", startLine: 20, endLine: 21, included: true },
      { tag: "app", startLine: 53, endLine: 52, included: true },
      { tag: "app", startLine: 56, endLine: 56, included: true },
    ]);
  });

  it("handles CRLF line endings and a byte-order mark", () => {
    const crlf = `\uFEFF${MIXED.replaceAll("\n", "\r\n")}`;
    const doc = compileMarkdown(new TextEncoder().encode(crlf));
    expect(linesOf(doc.sql)).toHaveLength(input.length);
    expect(linesOf(doc.sql)[3]).toBe("create table app_table (id int);");
  });
});

describe("includedCode", () => {
  it("is the same when only prose changes, even if lines move", () => {
    const a = compileMarkdown("Intro.\n\n```sql\nselect 1;\n```\n");
    const b = compileMarkdown("A longer\nintroduction\nover lines.\n\n```sql\nselect 1;\n```\n");
    expect(includedCode(a)).toBe(includedCode(b));
    const c = compileMarkdown("Intro.\n\n```sql\nselect 2;\n```\n");
    expect(includedCode(c)).not.toBe(includedCode(a));
  });
});

describe("errors name the file and line", () => {
  it("rejects an unterminated fence at its opening line", () => {
    const source = "# T\n\n```sql\nselect 1;\n\nmore text\n";
    expect(() => compileMarkdown(source, { fileName: "doc.md" })).toThrow(Md2SqlError);
    expect(() => compileMarkdown(source, { fileName: "doc.md" })).toThrow(
      /^doc\.md:3: error: unterminated code fence/,
    );
  });

  it("rejects an unterminated fence of another language too", () => {
    expect(() => compileMarkdown("```bash\necho\n", { fileName: "d.md" })).toThrow(/^d\.md:1: /);
  });

  it("rejects invalid UTF-8 with the line of the bad byte", () => {
    const bytes = Buffer.concat([
      Buffer.from("line one\nline two\nbad "),
      Buffer.from([0xff, 0xfe]),
      Buffer.from("\n"),
    ]);
    const error = (() => {
      try {
        compileMarkdown(bytes, { fileName: "latin1.md" });
      } catch (e) {
        return e as Md2SqlError;
      }
    })();
    expect(error).toBeInstanceOf(Md2SqlError);
    expect(error?.line).toBe(3);
    expect(error?.column).toBe(5);
    expect(error?.message).toMatch(/^latin1\.md:3:5: error: the file is not valid UTF-8/);
  });

  it("rejects an unknown tag instead of silently dropping the block", () => {
    expect(() =>
      compileMarkdown("text\n\n```sql test\nselect 1;\n```\n", { fileName: "t.md" }),
    ).toThrow(/^t\.md:3: error: unknown sql block tag "test"/);
  });

  it("refuses blocks that look meant as SQL but would silently be prose", () => {
    for (const info of [
      "SQL",
      "Sql",
      "postgresql",
      "PostgreSQL",
      "plpgsql",
      "pgsql",
      "sql-tests",
    ]) {
      expect(() =>
        compileMarkdown(`text\n\n\`\`\`${info}\nselect 1;\n\`\`\`\n`, { fileName: "t.md" }),
      ).toThrow(
        new RegExp(`^t\\.md:3: error: \`\`\`${info} blocks are not compiled: write \`\`\`sql`),
      );
    }
  });

  it("does not treat other languages that start with sql as SQL", () => {
    const doc = compileMarkdown("```sqlite\nselect 1;\n```\n");
    expect(doc.sql).toBe("-- ```sqlite\n-- select 1;\n-- ```\n");
    expect(doc.blocks).toEqual([]);
  });
});

// Generated documents: random prose, SQL blocks with random tags, and every
// kind of non-SQL code, each non-SQL line carrying a marker.
type Piece =
  | { kind: "prose"; lines: string[] }
  | { kind: "heading"; text: string }
  | { kind: "sql"; tag: "" | " tests" | " fixtures"; fence: string; lines: string[] }
  | { kind: "other"; lang: string; lines: string[] }
  | { kind: "indented"; lines: string[] }
  | { kind: "quoted"; lines: string[] }
  | { kind: "listed"; lines: string[] };

const safeText = fc
  .string({ unit: "grapheme", maxLength: 30 })
  .map((s) => s.replace(/[`~>\-*+#|<\\\r\n\t\s]/g, "x").replace(/^\d+[.)]/, "n"))
  .filter((s) => s.trim().length > 0);
const sqlLine = fc
  .string({ unit: "grapheme", maxLength: 30 })
  .map((s) => `select '${s.replace(/[`~\r\n]/g, "q")}';`);
const marked = (prefix: string) => safeText.map((s) => `NONSQL${prefix} ${s}`);

const piece: fc.Arbitrary<Piece> = fc.oneof(
  fc.record({
    kind: fc.constant("prose" as const),
    lines: fc.array(safeText, { minLength: 1, maxLength: 3 }),
  }),
  fc.record({ kind: fc.constant("heading" as const), text: safeText }),
  fc.record({
    kind: fc.constant("sql" as const),
    tag: fc.constantFrom("" as const, " tests" as const, " fixtures" as const),
    fence: fc.constantFrom("```", "~~~", "````"),
    lines: fc.array(sqlLine, { maxLength: 4 }),
  }),
  fc.record({
    kind: fc.constant("other" as const),
    lang: fc.constantFrom("bash", "json", "http", ""),
    lines: fc.array(marked("o"), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant("indented" as const),
    lines: fc.array(marked("i"), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant("quoted" as const),
    lines: fc.array(marked("q"), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant("listed" as const),
    lines: fc.array(marked("l"), { minLength: 1, maxLength: 3 }),
  }),
);

interface Rendered {
  text: string;
  /** line number → the SQL expected there, with its tag */
  sql: Map<number, { text: string; tag: string }>;
}

function render(pieces: Piece[]): Rendered {
  const out: string[] = [];
  const sql = new Map<number, { text: string; tag: string }>();
  for (const p of pieces) {
    switch (p.kind) {
      case "prose":
        out.push(...p.lines);
        break;
      case "heading":
        out.push(`## ${p.text}`);
        break;
      case "sql":
        out.push(`${p.fence}sql${p.tag}`);
        for (const line of p.lines) {
          out.push(line);
          sql.set(out.length, { text: line, tag: p.tag.trim() });
        }
        out.push(p.fence);
        break;
      case "other":
        out.push(`\`\`\`${p.lang}`, ...p.lines, "```");
        break;
      case "indented":
        out.push(...p.lines.map((l) => `    ${l}`));
        break;
      case "quoted":
        out.push("> ```sql", ...p.lines.map((l) => `> ${l}`), "> ```");
        break;
      case "listed":
        out.push("- item", "", "  ```sql", ...p.lines.map((l) => `  ${l}`), "  ```");
        break;
    }
    out.push("");
  }
  return { text: out.join("\n"), sql };
}

describe("compileMarkdown on generated documents", () => {
  it("keeps line counts, places SQL at its line, and never includes non-SQL code", () => {
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 12 }),
        fc.boolean(),
        fc.boolean(),
        (pieces, tests, fixtures) => {
          const { text, sql } = render(pieces);
          const doc = compileMarkdown(text, { includeTests: tests, includeFixtures: fixtures });
          const output = linesOf(doc.sql);
          expect(output).toHaveLength(linesOf(text).length);
          for (const [n, expected] of sql) {
            const included =
              expected.tag === "" ||
              (expected.tag === "tests" && tests) ||
              (expected.tag === "fixtures" && fixtures);
            expect(output[n - 1]).toBe(included ? expected.text : `-- ${expected.text}`);
          }
          for (const line of output) {
            if (line.includes("NONSQL")) expect(line.startsWith("-- ")).toBe(true);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("never crashes on arbitrary text (an Md2SqlError is the only failure)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (text) => {
        try {
          const doc = compileMarkdown(text);
          expect(linesOf(doc.sql)).toHaveLength(
            linesOf(text.replace(/^\uFEFF/, "").replace(/\r\n?/g, "\n")).length,
          );
        } catch (error) {
          expect(error).toBeInstanceOf(Md2SqlError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("the md2sql command", () => {
  let dir: string;
  let file: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "md2sql-cli-"));
    file = join(dir, "doc.sql.md");
    writeFileSync(file, MIXED);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("compiles a file to standard output, and standard input too", async () => {
    const fromFile = spawnCli(["md2sql", file]);
    expect(await fromFile.exited).toBe(0);
    expect(linesOf(fromFile.stdout().replace(/\n$/, ""))).toHaveLength(linesOf(MIXED).length);
    expect(fromFile.stdout()).toContain("\ncreate table app_table (id int);\n");

    const fromStdin = spawnCli(["md2sql", "--tests"], {}, MIXED);
    expect(await fromStdin.exited).toBe(0);
    expect(fromStdin.stdout()).toContain("\nselect tests_line;\n");
  });

  it("writes to --output and reports errors with exit code 1", async () => {
    const out = join(dir, "out.sql");
    const run = spawnCli(["md2sql", "--fixtures", "-o", out, file]);
    expect(await run.exited).toBe(0);
    expect(readFileSync(out, "utf8")).toContain("insert into fixtures_line values (1);");

    const broken = join(dir, "broken.md");
    writeFileSync(broken, "```sql\nselect 1;\n");
    const failing = spawnCli(["md2sql", broken]);
    expect(await failing.exited).toBe(1);
    expect(failing.stderr()).toBe(
      `${broken}:1: error: unterminated code fence \`\`\`: it runs to the end of the file\n`,
    );
  });

  it("compiles the project's documents in order with --project", async () => {
    const run = spawnCli(["md2sql", "--project"]);
    expect(await run.exited).toBe(0);
    const headers = run
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("-- postgrest-sessions: "));
    expect(headers).toEqual([
      "-- postgrest-sessions: sessions.sql.md",
      "-- postgrest-sessions: sso.sql.md",
      "-- postgrest-sessions: doors.sql.md",
      "-- postgrest-sessions: device.sql.md",
      "-- postgrest-sessions: email.sql.md",
      "-- postgrest-sessions: app.sql.md",
    ]);
    expect(run.stdout()).toContain("create table auth.sessions");
    expect(run.stdout()).toContain("create table app.todos");
  });

  it("exits 2 on an unknown option", async () => {
    const run = spawnCli(["md2sql", "--no-such-option", file]);
    expect(await run.exited).toBe(2);
  });
});
