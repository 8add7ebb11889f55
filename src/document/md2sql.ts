// md2sql: literate Markdown in, SQL out, line for line.
//
// The document is tokenised by the `marked` lexer, so "what is a code block"
// is decided by a real CommonMark/GFM parser rather than by regular
// expressions over lines: only top-level fenced blocks whose info string's
// first word is `sql` are code. Everything else (prose, fences, other
// languages, indented code, code nested in lists or blockquotes, blocks whose
// tag was not asked for) becomes a `--` comment on the same line, so line N
// of the SQL is line N of the document and PostgreSQL's error positions point
// straight into the Markdown.

import { readFile } from "node:fs/promises";
import { Lexer, type Token } from "marked";

/** What a block is for, from the word after `sql` in its info string. */
export type BlockTag = "app" | "tests" | "fixtures";

/** Words allowed after `sql`: ```sql tests, ```sql fixtures. */
export const KNOWN_TAGS: readonly string[] = ["tests", "fixtures"];

export interface SqlBlock {
  tag: BlockTag;
  /** 1-based line of the first code line (the line after the opening fence). */
  startLine: number;
  /** 1-based line of the last code line; startLine - 1 for an empty block. */
  endLine: number;
  /** Whether this compilation included the block (its tag was asked for). */
  included: boolean;
}

export interface CompileOptions {
  /** Name used in error messages (default "<stdin>"). */
  fileName?: string;
  /** Include ```sql tests blocks. */
  includeTests?: boolean;
  /** Include ```sql fixtures blocks. */
  includeFixtures?: boolean;
}

export interface CompiledDocument {
  sql: string;
  /** Every sql block found, included or not. */
  blocks: SqlBlock[];
  lineCount: number;
  fileName: string;
}

export class Md2SqlError extends Error {
  constructor(
    readonly fileName: string,
    readonly line: number,
    readonly detail: string,
    readonly column?: number,
  ) {
    super(`${fileName}:${line}${column !== undefined ? `:${column}` : ""}: error: ${detail}`);
    this.name = "Md2SqlError";
  }
}

/** Where the first invalid UTF-8 sequence starts: its byte offset. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i] as number;
    let need: number;
    let min: number;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      min = 0x10000;
    } else return i;
    let code = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      code = (code << 6) | (c & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

function decode(source: string | Uint8Array, fileName: string): string {
  if (typeof source === "string") return source;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(source);
  } catch {
    const offset = firstInvalidUtf8(source);
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < offset; i++) {
      if (source[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    throw new Md2SqlError(
      fileName,
      line,
      `the file is not valid UTF-8 (byte 0x${(source[offset] ?? 0).toString(16).padStart(2, "0")} at column ${offset - lineStart + 1})`,
      offset - lineStart + 1,
    );
  }
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

/**
 * Info strings that look meant as code but would silently be prose: another
 * spelling of SQL (```SQL, ```postgresql, ```plpgsql) or a tag written
 * without its space (```sql-tests). Anything else that is not `sql` is
 * another language (```sqlite, ```bash) and stays prose.
 */
function looksLikeMisspelledSql(word: string): boolean {
  const lower = word.toLowerCase();
  return (
    (lower === "sql" && word !== "sql") ||
    ["postgresql", "postgres", "pgsql", "plpgsql", "plsql"].includes(lower) ||
    /^sql[^a-z0-9]/i.test(word)
  );
}

/** The tag of a fenced block's info string, or undefined when it is not SQL. */
function sqlTag(info: string, fileName: string, line: number): BlockTag | undefined {
  const words = info.trim().split(/\s+/).filter(Boolean);
  if (words[0] && looksLikeMisspelledSql(words[0])) {
    throw new Md2SqlError(
      fileName,
      line,
      `\`\`\`${words[0]} blocks are not compiled: write \`\`\`sql (lower case, then a space before a tag) ` +
        "to run this code, or name another language (```text) to show it without running it",
    );
  }
  if (words[0] !== "sql") return undefined;
  if (words.length === 1) return "app";
  const tag = words[1] as string;
  if (words.length > 2 || !KNOWN_TAGS.includes(tag)) {
    throw new Md2SqlError(
      fileName,
      line,
      `unknown sql block tag "${words.slice(1).join(" ")}": use \`\`\`sql, ${KNOWN_TAGS.map((t) => `\`\`\`sql ${t}`).join(" or ")}`,
    );
  }
  return tag as BlockTag;
}

/** Compiles a literate document to SQL with the same number of lines. */
export function compileMarkdown(
  source: string | Uint8Array,
  options: CompileOptions = {},
): CompiledDocument {
  const fileName = options.fileName ?? "<stdin>";
  const text = decode(source, fileName)
    .replace(/^\uFEFF/, "")
    .replace(/\r\n?/g, "\n");
  const lines = text.split("\n");
  const output = lines.map((line) => (line.trim() === "" ? "" : `-- ${line}`));
  const blocks: SqlBlock[] = [];

  const tokens: Token[] = new Lexer({ gfm: true }).lex(text);
  // Token positions come from summing `raw`; that only works if the raws
  // rebuild the text exactly, so check rather than trust.
  if (tokens.map((t) => t.raw).join("") !== text) {
    throw new Md2SqlError(
      fileName,
      1,
      "internal error: the Markdown lexer did not account for every character, so line numbers cannot be trusted",
    );
  }

  let line = 1;
  for (const token of tokens) {
    const startLine = line;
    line += token.raw.split("\n").length - 1;
    if (token.type !== "code" || token.codeBlockStyle === "indented") continue;
    const rawLines = token.raw.replace(/\n$/, "").split("\n");
    const opening = FENCE.exec(rawLines[0] ?? "");
    if (!opening?.[1]) continue;
    const fence = opening[1];
    const last = rawLines.length > 1 ? (rawLines.at(-1) as string) : "";
    const closing = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(last)?.[1];
    const terminated =
      rawLines.length > 1 &&
      closing !== undefined &&
      closing[0] === fence[0] &&
      closing.length >= fence.length;
    if (!terminated) {
      throw new Md2SqlError(
        fileName,
        startLine,
        `unterminated code fence ${fence}: it runs to the end of the file`,
      );
    }
    const tag = sqlTag(token.lang ?? "", fileName, startLine);
    if (!tag) continue;
    const included =
      tag === "app" ||
      (tag === "tests" && options.includeTests === true) ||
      (tag === "fixtures" && options.includeFixtures === true);
    const block: SqlBlock = {
      tag,
      startLine: startLine + 1,
      endLine: startLine + rawLines.length - 2,
      included,
    };
    blocks.push(block);
    if (!included) continue;
    for (let n = block.startLine; n <= block.endLine; n++) output[n - 1] = lines[n - 1] as string;
  }

  return { sql: output.join("\n"), blocks, lineCount: lines.length, fileName };
}

/**
 * The code a compilation included, without prose or line positions: two
 * documents with the same code are the same program, whatever their prose
 * says and however many lines it takes.
 */
export function includedCode(doc: CompiledDocument): string {
  const lines = doc.sql.split("\n");
  return doc.blocks
    .filter((block) => block.included)
    .map((block) => lines.slice(block.startLine - 1, block.endLine).join("\n"))
    .join("\n\u0000\n");
}

/** Reads and compiles a file; the path as given names it in errors. */
export async function compileFile(
  path: string,
  options: Omit<CompileOptions, "fileName"> = {},
): Promise<CompiledDocument> {
  return compileMarkdown(await readFile(path), { ...options, fileName: path });
}
