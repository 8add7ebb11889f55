// md2sql [file]: compile a literate SQL document to SQL on standard output.

import { readFile, writeFile } from "node:fs/promises";
import { Command } from "commander";
import { compileFile, compileMarkdown } from "../document/md2sql.js";
import { projectDocuments } from "../document/project.js";
import { runAction, UsageError } from "./common.js";

interface Md2SqlFlags {
  tests?: boolean;
  fixtures?: boolean;
  output?: string;
  project?: boolean;
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function md2sqlCommand(): Command {
  return new Command("md2sql")
    .summary("compile literate Markdown to SQL, line for line")
    .description(
      "Compile literate Markdown to SQL, line for line: line N of the output is line N of the " +
        "input, with everything that is not code commented out.\n\n" +
        "Code is the top-level fenced blocks (``` or ~~~) whose info string starts with `sql`:\n" +
        "  ```sql           the application, always included\n" +
        "  ```sql tests     pgTAP tests, included with --tests\n" +
        "  ```sql fixtures  demo data, included with --fixtures\n" +
        "Other languages, indented code and code inside lists or blockquotes are prose.",
    )
    .argument("[file]", 'the Markdown document; omitted or "-" reads standard input')
    .option("--tests", "include ```sql tests blocks")
    .option("--fixtures", "include ```sql fixtures blocks")
    .option("-o, --output <file>", "write the SQL to this file instead of standard output")
    .option(
      "--project",
      "compile the project's documents and migrations (package.json), in order, one after another",
    )
    .action((file: string | undefined, flags: Md2SqlFlags) =>
      runAction(async () => {
        const options = {
          includeTests: flags.tests === true,
          includeFixtures: flags.fixtures === true,
        };
        if (flags.project) {
          if (file !== undefined) throw new UsageError("give a file or --project, not both");
          // Each document keeps its own line numbers after a one-line header.
          const parts: string[] = [];
          for (const doc of projectDocuments()) {
            const compiled = await compileFile(doc.path, options);
            parts.push(`-- postgrest-sessions: ${doc.path}\n${compiled.sql.replace(/\n?$/, "\n")}`);
          }
          const sql = parts.join("");
          if (flags.output) await writeFile(flags.output, sql);
          else process.stdout.write(sql);
          return;
        }
        const fromStdin = file === undefined || file === "-";
        if (fromStdin && process.stdin.isTTY) {
          throw new UsageError("give a file, or pipe the document in: md2sql < app.sql.md");
        }
        const source = fromStdin ? await readStdin() : await readFile(file);
        const doc = compileMarkdown(source, { fileName: fromStdin ? "<stdin>" : file, ...options });
        const sql = doc.sql.endsWith("\n") || doc.sql === "" ? doc.sql : `${doc.sql}\n`;
        if (flags.output) await writeFile(flags.output, sql);
        else process.stdout.write(sql);
      }),
    );
}
