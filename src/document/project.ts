// A project's documents, in the order they are applied. The project lists
// them once, in package.json:
//
//   "postgrest-sessions": {
//     "documents": ["sessions.sql.md", "app.sql.md"],
//     "migrations": "migrations"
//   }
//
// then come the literate migrations, migrations/NNN-name.sql.md, numbered on
// from the documents (003 after two documents). Every command applies the
// same list, so a fresh database (deploy-local, watch mode, the tests,
// migrate on an empty database) and an upgraded one (migrate on a database
// at an older version) end up with the same schema. A single --file makes a
// one-document project (its migrations beside it).

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { type CompiledDocument, type CompileOptions, compileFile } from "./md2sql.js";

export interface ProjectDocument {
  /** Its place in the list, from 1: the migration number. */
  id: number;
  /** e.g. "app" or "todo-due-date". */
  name: string;
  /** As given or found, relative to the working directory where it can be. */
  path: string;
  /** A migration (from the migrations directory), not one of the listed documents. */
  migration: boolean;
}

export interface ProjectOptions {
  /** One document instead of the project's list. */
  file?: string;
  /** The migrations directory (default: the project's, or migrations/ beside --file). */
  migrationsDir?: string;
  /** Where to look for package.json (default: the working directory). */
  cwd?: string;
}

export interface ProjectConfig {
  /** The directory of package.json (or the working directory without one). */
  root: string;
  documents: string[];
  migrations: string;
  /** Static files deploy-local serves under /demo/ on the API's origin, if any. */
  frontend: string | undefined;
}

/** The document list of a project without a list of its own. */
export const DEFAULT_DOCUMENTS = ["app.sql.md"];
export const DEFAULT_DOCUMENT = "app.sql.md";

export class ProjectError extends Error {}

const MIGRATION_NAME = /^(\d+)-([a-z0-9][a-z0-9_-]*)\.sql\.md$/i;

/** package.json's "postgrest-sessions" entry, checked. */
export function readProjectConfig(cwd = process.cwd()): ProjectConfig {
  const file = join(cwd, "package.json");
  if (!existsSync(file)) {
    return {
      root: cwd,
      documents: DEFAULT_DOCUMENTS,
      migrations: "migrations",
      frontend: undefined,
    };
  }
  let parsed: {
    "postgrest-sessions"?: { documents?: unknown; migrations?: unknown; frontend?: unknown };
  };
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ProjectError(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  const entry = parsed["postgrest-sessions"] ?? {};
  const documents = entry.documents ?? DEFAULT_DOCUMENTS;
  if (
    !Array.isArray(documents) ||
    documents.length === 0 ||
    !documents.every((d) => typeof d === "string" && d.endsWith(".md"))
  ) {
    throw new ProjectError(
      `${file}: "postgrest-sessions"."documents" must be a list of .md files, in the order they load`,
    );
  }
  const migrations = entry.migrations ?? "migrations";
  if (typeof migrations !== "string") {
    throw new ProjectError(`${file}: "postgrest-sessions"."migrations" must be a directory name`);
  }
  const frontend = entry.frontend;
  if (frontend !== undefined && typeof frontend !== "string") {
    throw new ProjectError(`${file}: "postgrest-sessions"."frontend" must be a directory name`);
  }
  return {
    root: cwd,
    documents: documents as string[],
    migrations,
    frontend: frontend === undefined ? undefined : join(cwd, frontend),
  };
}

/** The migrations directory the options name or imply. */
export function migrationsDirOf(options: ProjectOptions): string {
  if (options.migrationsDir) return options.migrationsDir;
  if (options.file) return join(dirname(options.file), "migrations");
  const config = readProjectConfig(options.cwd);
  return shown(join(config.root, config.migrations));
}

/** A path as the user would type it: relative to the working directory when inside it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), resolve(path));
  return rel.startsWith("..") ? resolve(path) : rel;
}

/**
 * The documents in order, checked: a file in the migrations directory that
 * looks like a migration (it starts with a number) but is not named
 * NNN-name.sql.md is an error rather than something silently skipped, and so
 * is a gap in the numbering.
 */
export function projectDocuments(options: ProjectOptions = {}): ProjectDocument[] {
  const listed = options.file
    ? [options.file]
    : (() => {
        const config = readProjectConfig(options.cwd);
        return config.documents.map((d) => shown(join(config.root, d)));
      })();
  const list: ProjectDocument[] = listed.map((path, index) => ({
    id: index + 1,
    name: basename(path).replace(/\.sql\.md$|\.md$/, ""),
    path,
    migration: false,
  }));
  for (const doc of list) {
    if (!existsSync(doc.path)) {
      throw new ProjectError(
        options.file
          ? `${doc.path}: no such document`
          : `${doc.path}: no such document (listed in package.json, "postgrest-sessions"."documents")`,
      );
    }
  }
  const migrationsDir = migrationsDirOf(options);
  let entries: string[];
  try {
    entries = readdirSync(migrationsDir);
  } catch {
    return list;
  }
  const first = list.length + 1;
  const problems: string[] = [];
  const found: ProjectDocument[] = [];
  for (const entry of entries.sort()) {
    if (!/^\d/.test(entry)) continue; // README.md, examples/ and other notes
    const match = MIGRATION_NAME.exec(entry);
    if (!match?.[1] || !match[2]) {
      problems.push(
        `${join(migrationsDir, entry)}: a migration must be named NNN-name.sql.md (literate Markdown, NNN from ${pad(first)})`,
      );
      continue;
    }
    found.push({
      id: Number(match[1]),
      name: match[2],
      path: join(migrationsDir, entry),
      migration: true,
    });
  }
  found.sort((a, b) => a.id - b.id);
  found.forEach((doc, index) => {
    if (doc.id !== first + index) {
      problems.push(
        `${doc.path}: expected number ${pad(first + index)} (migrations count on from ${pad(first)} without gaps, after ${list.map((d) => d.path).join(", ")})`,
      );
    }
  });
  if (problems.length > 0) {
    throw new ProjectError(`bad migration file names:\n  ${problems.join("\n  ")}`);
  }
  return [...list, ...found];
}

function pad(n: number): string {
  return String(n).padStart(3, "0");
}

/** "sessions.sql.md + app.sql.md (+ 2 migrations)", for progress lines. */
export function describeDocuments(documents: ProjectDocument[]): string {
  const main = documents.filter((d) => !d.migration);
  const migrations = documents.length - main.length;
  return `${main.map((d) => d.path).join(" + ")}${migrations > 0 ? ` (+ ${migrations} migration${migrations === 1 ? "" : "s"})` : ""}`;
}

/** Compiles every document of the list with the same options. */
export async function compileProject(
  documents: ProjectDocument[],
  options: Omit<CompileOptions, "fileName"> = {},
): Promise<CompiledDocument[]> {
  const compiled: CompiledDocument[] = [];
  for (const doc of documents) compiled.push(await compileFile(doc.path, options));
  return compiled;
}
