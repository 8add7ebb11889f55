// Loading compiled SQL into a database, all or nothing, with errors that read
// like a compiler's: file:line:col, the source line, a caret, then
// PostgreSQL's detail, hint and context.
//
// The SQL goes to the server as ONE simple-protocol query inside an explicit
// transaction, so a failure leaves the database exactly as it was and the
// error's `position` is an offset into exactly the text we hold.

import type pg from "pg";
import { splitStatements } from "./sqlsplit.js";

/** What the loader needs of a compiled document (md2sql's CompiledDocument fits). */
export interface SqlSource {
  sql: string;
  fileName: string;
}

export interface SourceLocation {
  line: number;
  column: number;
}

/** The fields of a PostgreSQL error that the mapping uses (pg's DatabaseError has them). */
export interface PgErrorFields {
  message: string;
  code?: string;
  severity?: string;
  position?: string;
  internalPosition?: string;
  internalQuery?: string;
  where?: string;
  detail?: string;
  hint?: string;
}

export class SchemaLoadError extends Error {
  constructor(
    /** The compiler-style report, several lines. */
    readonly report: string,
    readonly fileName: string,
    readonly location: SourceLocation | undefined,
    readonly code: string | undefined,
    override readonly cause: unknown,
  ) {
    super(report);
    this.name = "SchemaLoadError";
  }
}

/** Line and column (1-based) of a 0-based UTF-16 offset. */
export function offsetToLocation(text: string, offset: number): SourceLocation {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  // Columns count code points, as editors do.
  const column = [...text.slice(lineStart, offset)].length + 1;
  return { line, column };
}

/** PostgreSQL positions count characters (code points), 1-based; JS strings count UTF-16 units. */
export function pgPositionToOffset(text: string, position: number): number {
  let offset = 0;
  let chars = 1;
  while (chars < position && offset < text.length) {
    const code = text.codePointAt(offset) ?? 0;
    offset += code > 0xffff ? 2 : 1;
    chars++;
  }
  return offset;
}

function lineStartOffset(text: string, line: number): number {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const eol = text.indexOf("\n", offset);
    if (eol < 0) return text.length;
    offset = eol + 1;
  }
  return offset;
}

interface PlpgsqlFrame {
  functionName: string;
  line: number;
}

/** The innermost "PL/pgSQL function NAME line N" of an error's context. */
function innermostPlpgsqlFrame(where: string | undefined): PlpgsqlFrame | undefined {
  if (!where) return undefined;
  for (const entry of where.split("\n")) {
    const match = /PL\/pgSQL function (\S+?)(?:\(.*?\))? line (\d+)/.exec(entry);
    if (match?.[1] && match[2]) return { functionName: match[1], line: Number(match[2]) };
  }
  return undefined;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Offset of the opening dollar quote of a function's body, searching from `from`. */
function bodyStart(sql: string, from: number): number | undefined {
  const rest = sql.slice(from);
  const match = /\bas\s+(\$[A-Za-z_]*\$)/i.exec(rest) ?? /(\$[A-Za-z_]*\$)/.exec(rest);
  if (!match || match.index === undefined) return undefined;
  return from + match.index + match[0].length - (match[1]?.length ?? 0);
}

function findFunctionDefinition(sql: string, qualifiedName: string): number | undefined {
  const parts = qualifiedName.split(".");
  const name = parts[parts.length - 1] ?? qualifiedName;
  const schema = parts.length > 1 ? parts[0] : undefined;
  const pattern = new RegExp(
    `create\\s+(?:or\\s+replace\\s+)?(?:function|procedure)\\s+(?:"?${schema ? escapeRegExp(schema) : "\\w+"}"?\\s*\\.\\s*)${schema ? "" : "?"}"?${escapeRegExp(name)}"?\\s*\\(`,
    "gi",
  );
  let last: number | undefined;
  for (const match of sql.matchAll(pattern)) last = match.index;
  return last;
}

/**
 * Where in the SQL an error happened, best evidence first: the statement
 * position; a query inside a function body (internalQuery/internalPosition);
 * the PL/pgSQL line of the innermost frame; the failing statement itself.
 */
export function locateError(
  sql: string,
  error: PgErrorFields,
  completedStatements?: number,
): SourceLocation | undefined {
  if (error.position) {
    return offsetToLocation(sql, pgPositionToOffset(sql, Number(error.position)));
  }
  const statements = splitStatements(sql);
  const failing = completedStatements !== undefined ? statements[completedStatements] : undefined;
  const frame = innermostPlpgsqlFrame(error.where);
  let frameOffset: number | undefined;
  if (frame) {
    const definition =
      frame.functionName === "inline_code_block"
        ? failing?.start
        : findFunctionDefinition(sql, frame.functionName);
    const opening = definition !== undefined ? bodyStart(sql, definition) : undefined;
    if (opening !== undefined) {
      const openingLine = offsetToLocation(sql, opening).line;
      frameOffset = lineStartOffset(sql, openingLine + frame.line - 1);
    }
  }
  if (error.internalQuery) {
    // Prefer the copy of the inner query nearest after the frame's line.
    const candidates = [...sql.matchAll(new RegExp(escapeRegExp(error.internalQuery), "g"))]
      .map((m) => m.index)
      .filter((i): i is number => i !== undefined);
    const near =
      frameOffset !== undefined
        ? (candidates.find((i) => i >= frameOffset - 1) ?? candidates[0])
        : candidates.length === 1
          ? candidates[0]
          : undefined;
    if (near !== undefined) {
      const inner = Number(error.internalPosition ?? "1");
      const offset = near + pgPositionToOffset(error.internalQuery, inner);
      return offsetToLocation(sql, offset);
    }
  }
  if (frameOffset !== undefined) {
    const location = offsetToLocation(sql, frameOffset);
    const lineText = sql.slice(frameOffset, sql.indexOf("\n", frameOffset) >>> 0);
    location.column = (/^\s*/.exec(lineText)?.[0].length ?? 0) + 1;
    return location;
  }
  if (failing) return offsetToLocation(sql, failing.start);
  return undefined;
}

/** Where a function's body starts in one of the sources: file and line of its first line. */
function functionBodyLine(
  sources: SqlSource[],
  functionName: string,
): { fileName: string; line: number } | undefined {
  for (const source of sources) {
    const definition = findFunctionDefinition(source.sql, functionName);
    if (definition === undefined) continue;
    const opening = bodyStart(source.sql, definition);
    if (opening === undefined) continue;
    return { fileName: source.fileName, line: offsetToLocation(source.sql, opening).line };
  }
  return undefined;
}

/**
 * A run-time error's call stack (PostgreSQL's CONTEXT), frame by frame,
 * mapped to the documents: "app.sql.md:412 in auth.verify_login(text,text)".
 * Frames in code the documents do not define (pgTAP's runner, for instance)
 * are left out. The first entry is the innermost frame.
 */
export function mapCallStack(where: string | undefined, sources: SqlSource[]): string[] {
  const frames: string[] = [];
  for (const entry of (where ?? "").split("\n")) {
    const plpgsql = /PL\/pgSQL function (\S+?)(\(.*?\))? line (\d+)/.exec(entry);
    const sql = /SQL function "([^"]+)"/.exec(entry);
    const name = plpgsql?.[1] ?? sql?.[1];
    if (!name) continue;
    const body = functionBodyLine(sources, name);
    if (!body) continue;
    const line = plpgsql?.[3] ? body.line + Number(plpgsql[3]) - 1 : body.line;
    frames.push(`${body.fileName}:${line} in ${name}${plpgsql?.[2] ?? ""}`);
  }
  return frames;
}

/** The compiler-style report of a database error against the SQL it came from. */
export function formatError(
  source: SqlSource,
  error: PgErrorFields,
  location: SourceLocation | undefined,
): string {
  const code = error.code ? ` ${error.code}` : "";
  const where = location
    ? `${source.fileName}:${location.line}:${location.column}`
    : source.fileName;
  const lines = [`${where}: error${code}: ${error.message}`];
  if (location) {
    const sqlLines = source.sql.split("\n");
    const width = String(location.line).length;
    const show = (n: number) => {
      const text = sqlLines[n - 1];
      if (text !== undefined) lines.push(`  ${String(n).padStart(width)} | ${text}`);
    };
    if (location.line > 1) show(location.line - 1);
    show(location.line);
    lines.push(`  ${" ".repeat(width)} | ${" ".repeat(location.column - 1)}^`);
  }
  if (error.detail) lines.push(`  detail: ${error.detail}`);
  if (error.hint) lines.push(`  hint: ${error.hint}`);
  if (error.where) lines.push(`  context: ${error.where.split("\n").join("\n           ")}`);
  return lines.join("\n");
}

/** A SchemaLoadError whose report shows `source` at `location`. */
export function schemaLoadError(
  source: SqlSource,
  error: PgErrorFields,
  location: SourceLocation | undefined,
): SchemaLoadError {
  return new SchemaLoadError(
    formatError(source, error, location),
    source.fileName,
    location,
    error.code,
    error,
  );
}

interface CommandCompleteEmitter {
  on(event: "commandComplete", listener: () => void): unknown;
  removeListener(event: "commandComplete", listener: () => void): unknown;
}

/**
 * Runs the SQL of each source, in order, in one transaction: all of them or
 * none. On failure the transaction is rolled back and a SchemaLoadError
 * whose report points into the failing source is thrown.
 */
export async function loadSql(client: pg.Client, ...sources: SqlSource[]): Promise<void> {
  // Count completed statements so an error without a position can still be
  // pinned to the statement that failed (see sqlsplit.ts).
  const connection = (client as unknown as { connection: CommandCompleteEmitter }).connection;
  let completed = 0;
  const onComplete = () => {
    completed++;
  };
  await client.query("begin");
  connection.on("commandComplete", onComplete);
  try {
    for (const source of sources) {
      completed = 0;
      try {
        await client.query(source.sql);
      } catch (error) {
        const fields = error as PgErrorFields;
        if (!fields.code) throw error;
        throw schemaLoadError(source, fields, locateError(source.sql, fields, completed));
      }
    }
  } catch (error) {
    connection.removeListener("commandComplete", onComplete);
    await client.query("rollback").catch(() => {});
    throw error;
  }
  connection.removeListener("commandComplete", onComplete);
  await client.query("commit");
}
