// Statement boundaries in a PostgreSQL script.
//
// The loader sends a whole document as one query, so PostgreSQL's error
// positions are exact without this. It is needed only when an error carries
// no position (a DO block failing at run time, a constraint violated by an
// INSERT): the server reports how many statements completed before the
// failure, and these boundaries turn that count into a line of the document.

export interface StatementSpan {
  /** Offset (UTF-16 index) of the statement's first significant character. */
  start: number;
  /** Offset just past the terminating semicolon, or the end of the text. */
  end: number;
}

const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_CHAR = /[A-Za-z0-9_$\u0080-\uffff]/;

/** Splits SQL into non-empty statements, honouring quotes, comments and dollar quotes. */
export function splitStatements(sql: string): StatementSpan[] {
  const spans: StatementSpan[] = [];
  let start = -1;
  let i = 0;
  const n = sql.length;
  const mark = () => {
    if (start < 0) start = i;
  };
  while (i < n) {
    const c = sql[i] as string;
    const next = sql[i + 1];
    if (c === "-" && next === "-") {
      const eol = sql.indexOf("\n", i);
      i = eol < 0 ? n : eol + 1;
    } else if (c === "/" && next === "*") {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === "/" && sql[i + 1] === "*") {
          depth++;
          i += 2;
        } else if (sql[i] === "*" && sql[i + 1] === "/") {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (c === "'" || c === '"') {
      mark();
      const escapes =
        c === "'" && /[eE]/.test(sql[i - 1] ?? "") && !IDENT_CHAR.test(sql[i - 2] ?? "");
      i++;
      while (i < n) {
        if (escapes && sql[i] === "\\") i += 2;
        else if (sql[i] === c && sql[i + 1] === c) i += 2;
        else if (sql[i] === c) {
          i++;
          break;
        } else i++;
      }
    } else if (c === "$" && !IDENT_CHAR.test(sql[i - 1] ?? "")) {
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(
        sql.slice(i, i + 64),
      );
      mark();
      if (tag && (tag[1] === undefined || IDENT_START.test(tag[1][0] ?? ""))) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? n : close + tag[0].length;
      } else i++;
    } else if (c === ";") {
      if (start >= 0) spans.push({ start, end: i + 1 });
      start = -1;
      i++;
    } else {
      if (!/\s/.test(c)) mark();
      i++;
    }
  }
  if (start >= 0) spans.push({ start, end: n });
  return spans;
}
