// A project's documents, in the order they are applied: the document
// (app.sql.md) first, then its literate migrations, migrations/NNN-name.sql.md
// numbered from 002. Every command applies the same list, so a fresh
// database (deploy-local, watch mode, the tests, migrate on an empty
// database) and an upgraded one (migrate on a database at an older version)
// end up with the same schema.

import { readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { type CompiledDocument, type CompileOptions, compileFile } from "./md2sql.js";

export interface ProjectDocument {
  /** Its place in the list, 1 for the document: the migration number. */
  id: number;
  /** e.g. "app" or "todo-due-date". */
  name: string;
  /** As given or found, e.g. "migrations/002-todo-due-date.sql.md". */
  path: string;
}

export interface ProjectOptions {
  /** The document, migration 1 (default app.sql.md). */
  file?: string;
  /** Its migrations (default: the migrations directory beside the document). */
  migrationsDir?: string;
}

export const DEFAULT_DOCUMENT = "app.sql.md";

const MIGRATION_NAME = /^(\d+)-([a-z0-9][a-z0-9_-]*)\.sql\.md$/i;

export function migrationsDirOf(options: ProjectOptions): string {
  return options.migrationsDir ?? join(dirname(options.file ?? DEFAULT_DOCUMENT), "migrations");
}

/**
 * The documents in order, checked: a file in the migrations directory that
 * looks like a migration (it starts with a number) but is not named
 * NNN-name.sql.md is an error rather than something silently skipped, and so
 * is a gap in the numbering.
 */
export function projectDocuments(options: ProjectOptions = {}): ProjectDocument[] {
  const file = options.file ?? DEFAULT_DOCUMENT;
  const migrationsDir = migrationsDirOf(options);
  const list: ProjectDocument[] = [
    { id: 1, name: basename(file).replace(/\.sql\.md$|\.md$/, ""), path: file },
  ];
  let entries: string[];
  try {
    entries = readdirSync(migrationsDir);
  } catch {
    return list;
  }
  const problems: string[] = [];
  const found: ProjectDocument[] = [];
  for (const entry of entries.sort()) {
    if (!/^\d/.test(entry)) continue; // README.md and other notes
    const match = MIGRATION_NAME.exec(entry);
    if (!match?.[1] || !match[2]) {
      problems.push(
        `${join(migrationsDir, entry)}: a migration must be named NNN-name.sql.md (literate Markdown, NNN from 002)`,
      );
      continue;
    }
    found.push({ id: Number(match[1]), name: match[2], path: join(migrationsDir, entry) });
  }
  found.sort((a, b) => a.id - b.id);
  found.forEach((doc, index) => {
    if (doc.id !== index + 2) {
      problems.push(
        `${doc.path}: expected number ${String(index + 2).padStart(3, "0")} (migrations count on from 002 without gaps; 001 is ${file})`,
      );
    }
  });
  if (problems.length > 0) {
    throw new ProjectError(`bad migration file names:\n  ${problems.join("\n  ")}`);
  }
  return [...list, ...found];
}

export class ProjectError extends Error {}

/** Compiles every document of the list with the same options. */
export async function compileProject(
  documents: ProjectDocument[],
  options: Omit<CompileOptions, "fileName"> = {},
): Promise<CompiledDocument[]> {
  const compiled: CompiledDocument[] = [];
  for (const doc of documents) compiled.push(await compileFile(doc.path, options));
  return compiled;
}
