// Mail templates: <name>.txt (a "Subject: ..." line, a blank line, the plain
// text) and <name>.html (the HTML body), with {{placeholders}} filled from
// the outbox row. The toolkit ships one set (templates/mail/); a project
// overrides any of them with files of the same name in a directory of its own.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const BUILT_IN_TEMPLATES = join(import.meta.dirname, "..", "..", "templates", "mail");

export interface RenderedMail {
  subject: string;
  text: string;
  html: string | undefined;
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

function fill(template: string, values: Record<string, string>, asHtml: boolean, where: string) {
  return template.replace(/\{\{\s*([a-z_]+)\s*\}\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`${where}: no value for {{${name}}}`);
    return asHtml ? escapeHtml(value) : value;
  });
}

export class MailTemplates {
  /** `overrides`: a directory whose files take the place of the built-in ones. */
  constructor(private readonly overrides?: string) {
    if (overrides !== undefined && !existsSync(overrides)) {
      throw new Error(`the mail templates directory ${overrides} does not exist`);
    }
  }

  private file(name: string): string | undefined {
    for (const dir of [this.overrides, BUILT_IN_TEMPLATES]) {
      if (dir === undefined) continue;
      const path = join(dir, name);
      if (existsSync(path)) return path;
    }
    return undefined;
  }

  /** Renders template `name`; throws, saying what is missing, when it cannot. */
  render(name: string, values: Record<string, string>): RenderedMail {
    if (!/^[a-z_]+$/.test(name)) throw new Error(`"${name}" is not a template name`);
    const textPath = this.file(`${name}.txt`);
    if (!textPath) throw new Error(`no mail template ${name}.txt`);
    const source = readFileSync(textPath, "utf8");
    const match = /^Subject: *(.*)\r?\n\r?\n([\s\S]*)$/.exec(source);
    if (!match) {
      throw new Error(
        `${textPath}: the first line must be "Subject: ..." followed by a blank line`,
      );
    }
    const htmlPath = this.file(`${name}.html`);
    return {
      // A subject is one line, whatever a value holds.
      subject: fill(match[1] as string, values, false, textPath).replace(/[\r\n]+/g, " "),
      text: fill(match[2] as string, values, false, textPath),
      html: htmlPath ? fill(readFileSync(htmlPath, "utf8"), values, true, htmlPath) : undefined,
    };
  }
}
