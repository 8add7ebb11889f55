// Watch mode: saves reload the API; broken saves never take it down.

import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { type ReloadOutcome, type WatchSession, watchDocument } from "../src/serving/watch.js";
import { spawnCli, waitForReady } from "./support/deploy-local-process.js";

const MINIMAL = readFileSync(join(import.meta.dirname, "fixtures", "minimal.sql.md"), "utf8");

/** The minimal document plus one function `api.version()` returning `value`. */
function documentWithVersion(value: string, extraSql = "", prose = ""): string {
  return `${MINIMAL}
## Version${prose}

\`\`\`sql
create function api.version() returns text language sql as $$ select '${value}' $$;
grant execute on function api.version() to anonymous;
${extraSql}
\`\`\`
`;
}

let dir: string;
let file: string;
let session: WatchSession;
const outcomes: ReloadOutcome[] = [];
const logLines: string[] = [];

/** The newest reload line (check results of earlier versions may print after it). */
function lastReloadLine(): string | undefined {
  return logLines.findLast((l) => /serving from|load FAILED|not reloaded/.test(l));
}

async function apiVersion(): Promise<string | number> {
  const response = await fetch(`${session.url}/rpc/version`);
  return response.status === 200 ? ((await response.json()) as string) : response.status;
}

/** Writes the file and waits until the watcher has handled it. */
function save(content: string): Promise<ReloadOutcome | undefined> {
  return afterChange(() => writeFileSync(file, content));
}

/** Makes a change and waits until `watch` has handled it (a new entry in `seen`). */
async function reloadAfter(
  watch: WatchSession,
  seen: ReloadOutcome[],
  change: () => void,
): Promise<ReloadOutcome | undefined> {
  const before = seen.length;
  change();
  const deadline = Date.now() + 20_000;
  while (seen.length === before && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await watch.idle();
  return seen.at(-1);
}

/** Makes a change to the document's directory and waits for the watcher's reload. */
function afterChange(change: () => void): Promise<ReloadOutcome | undefined> {
  return reloadAfter(session, outcomes, change);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "watch-test-"));
  file = join(dir, "app.sql.md");
  writeFileSync(file, documentWithVersion("v1"));
  session = await watchDocument({
    file,
    port: await freePort(),
    log: (line) => logLines.push(line),
    onReload: (outcome) => outcomes.push(outcome),
  });
});

afterAll(async () => {
  await session?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("watch mode", () => {
  it("serves the first version and runs its pgTAP suite", async () => {
    expect(await apiVersion()).toBe("v1");
    const first = outcomes[0];
    expect(first?.kind).toBe("loaded");
    if (first?.kind === "loaded") expect((await first.pgtap)?.ok).toBe(true);
    expect(logLines.some((l) => /version 1 serving from app_1, pgTAP running/.test(l))).toBe(true);
    expect(logLines.some((l) => /version 1: pgTAP 2 passed/.test(l))).toBe(true);
  });

  it("an edit makes a new endpoint appear", async () => {
    const outcome = await save(
      documentWithVersion(
        "v2",
        "create function api.added() returns int language sql as $$ select 42 $$;\ngrant execute on function api.added() to anonymous;",
      ),
    );
    expect(outcome?.kind).toBe("loaded");
    expect(await apiVersion()).toBe("v2");
    const added = await fetch(`${session.url}/rpc/added`);
    expect(await added.json()).toBe(42);
  });

  it("a broken edit reports the line and keeps the old version serving; a fix recovers", async () => {
    const broken = documentWithVersion("v3", "create tabel oops (id int);");
    const outcome = await save(broken);
    expect(outcome?.kind).toBe("load-failed");
    const brokenLine = broken.split("\n").findIndex((l) => l.startsWith("create tabel")) + 1;
    const report = outcome?.kind === "load-failed" ? outcome.report : "";
    expect(report).toContain(
      `${file}:${brokenLine}:8: error 42601: syntax error at or near "tabel"`,
    );
    expect(lastReloadLine()).toMatch(/load FAILED, still serving version 2/);
    expect(await apiVersion()).toBe("v2");

    const fixed = await save(documentWithVersion("v4"));
    expect(fixed?.kind).toBe("loaded");
    expect(await apiVersion()).toBe("v4");
  });

  it("a version that fails its pgTAP tests is served, marked as failing, with the failure printed", async () => {
    const failing = documentWithVersion(
      "v-failing",
      "",
      "\n\n```sql tests\ncreate function tests.test_version() returns setof text language plpgsql as $$ begin return next is(api.version(), 'something else', 'version is something else'); end $$;\n```",
    );
    const outcome = await save(failing);
    expect(outcome?.kind).toBe("loaded");
    if (outcome?.kind === "loaded") expect((await outcome.pgtap)?.ok).toBe(false);
    expect(await apiVersion()).toBe("v-failing");
    expect(
      logLines.some((l) => l.includes("not ok: tests.test_version: version is something else")),
    ).toBe(true);
    expect(
      logLines.some((l) =>
        /version \d+: pgTAP 2 passed, 1 FAILED \(serving, but FAILING its tests\)/.test(l),
      ),
    ).toBe(true);
    expect((await save(documentWithVersion("v4")))?.kind).toBe("loaded");
  });

  it("saving a failed version again retries it instead of calling it unchanged", async () => {
    const broken = documentWithVersion("v5", "select * from table_that_is_not_there;");
    expect((await save(broken))?.kind).toBe("load-failed");
    const again = await afterChange(() => writeFileSync(file, broken));
    expect(again?.kind).toBe("load-failed");
    expect((await save(documentWithVersion("v4")))?.kind).toBe("unchanged");
    expect(lastReloadLine()).toMatch(/same code as version \d+ \(prose only\), not reloaded/);
  });

  it("keeps the rows of unchanged tables, and says so; a table whose columns changed keeps its fixtures", async () => {
    const database = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
    await database.connect();
    await database.query("insert into api.greetings (greeting) values ('made by hand')");
    await database.end();
    const outcome = await save(documentWithVersion("carried"));
    expect(outcome?.kind).toBe("loaded");
    const greetings = async () => {
      const client = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
      await client.connect();
      const { rows } = await client.query<{ greeting: string }>(
        "select greeting from api.greetings order by greeting_id",
      );
      await client.end();
      return rows.map((r) => r.greeting);
    };
    expect(await greetings()).toEqual(["hi", "hey", "made by hand"]);
    expect(lastReloadLine()).toMatch(/kept 3 rows of 1 table/);
    // A new greeting gets the next id, after the carried ones.
    const next = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
    await next.connect();
    const { rows } = await next.query<{ greeting_id: number }>(
      "insert into api.greetings (greeting) values ('next') returning greeting_id",
    );
    await next.end();
    expect(rows[0]?.greeting_id).toBe(4);

    const reshaped = await save(
      documentWithVersion("reshaped", "alter table api.greetings add column loud boolean;"),
    );
    expect(reshaped?.kind).toBe("loaded");
    expect(await greetings()).toEqual(["hi", "hey"]);
    expect(lastReloadLine()).toMatch(/api\.greetings not kept \(its columns changed\)/);

    // A table that references one that starts again from its fixtures starts
    // again too: its rows would point at other rows with the same ids.
    const notes =
      "create table api.notes (note_id int generated always as identity primary key, " +
      "greeting_id int references api.greetings, note text);\n" +
      "insert into api.notes (greeting_id, note) values (1, 'fixture note');";
    expect((await save(documentWithVersion("notes", notes)))?.kind).toBe("loaded");
    const byHand = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
    await byHand.connect();
    await byHand.query("insert into api.notes (greeting_id, note) values (2, 'about hey')");
    await byHand.end();
    const reshapedAgain = await save(
      documentWithVersion(
        "notes-2",
        `alter table api.greetings add column loud boolean;\n${notes}`,
      ),
    );
    expect(reshapedAgain?.kind).toBe("loaded");
    const check = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
    await check.connect();
    const { rows: kept } = await check.query<{ note: string }>("select note from api.notes");
    await check.end();
    expect(kept.map((r) => r.note)).toEqual(["fixture note"]);
    expect(lastReloadLine()).toMatch(
      /api\.notes not kept \(it references api\.greetings, which was not kept\)/,
    );

    // An edited row, as many rows as the new version's own, is still kept:
    // tables are compared by content, not by count.
    const edit = new pg.Client(session.cluster.connectionConfig(session.currentDatabase()));
    await edit.connect();
    await edit.query("update api.greetings set greeting = 'hey, edited' where greeting = 'hey'");
    await edit.end();
    expect(
      (
        await save(
          documentWithVersion(
            "edited",
            `alter table api.greetings add column loud boolean;\n${notes}`,
          ),
        )
      )?.kind,
    ).toBe("loaded");
    expect(await greetings()).toEqual(["hi", "hey, edited"]);
  });

  it("a save right after another does not wait for the previous version's tests", async () => {
    const slowTests = (value: string) =>
      documentWithVersion(
        value,
        "",
        "\n\n```sql tests\ncreate function tests.test_slow() returns setof text language plpgsql as $$ begin perform pg_sleep(5); return next pass('slow'); end $$;\n```",
      );
    expect((await save(slowTests("slow-1")))?.kind).toBe("loaded");
    const saved = performance.now();
    const outcome = await save(slowTests("slow-2"));
    expect(outcome?.kind).toBe("loaded");
    expect(performance.now() - saved).toBeLessThan(3000);
    expect(await apiVersion()).toBe("slow-2");
    // The replaced version's suite was cancelled: it reports nothing.
    await new Promise((r) => setTimeout(r, 200));
    expect(logLines.some((l) => /version \d+: pgTAP .*slow/.test(l))).toBe(false);
    expect((await save(documentWithVersion("v4")))?.kind).toBe("loaded");
  });

  it("applies the document's migrations after it, and reloads when one is added or edited", async () => {
    const migrations = join(dir, "migrations");
    mkdirSync(migrations, { recursive: true });
    const migration = (value: number) =>
      `# A migration\n\n\`\`\`sql\ncreate function api.migrated() returns int language sql as $$ select ${value} $$;\ngrant execute on function api.migrated() to anonymous;\n\`\`\`\n`;
    const migrated = async () => (await fetch(`${session.url}/rpc/migrated`)).json();
    expect(
      (await afterChange(() => writeFileSync(join(migrations, "002-add.sql.md"), migration(1))))
        ?.kind,
    ).toBe("loaded");
    expect(await migrated()).toBe(1);
    await afterChange(() => writeFileSync(join(migrations, "002-add.sql.md"), migration(2)));
    expect(await migrated()).toBe(2);
    await afterChange(() => rmSync(migrations, { recursive: true, force: true }));
    expect((await fetch(`${session.url}/rpc/migrated`)).status).toBe(404);
  });

  it("a prose-only edit does not reload", async () => {
    const current = session.currentDatabase();
    const outcome = await save(documentWithVersion("v4", "", "\n\nSome new words about versions."));
    expect(outcome?.kind).toBe("unchanged");
    expect(session.currentDatabase()).toBe(current);
  });

  it("a burst of saves coalesces and the last content wins", async () => {
    const before = outcomes.length;
    for (let i = 1; i <= 8; i++) {
      writeFileSync(file, documentWithVersion(`burst-${i}`));
      await new Promise((r) => setTimeout(r, 15 + (i % 3) * 40));
    }
    const deadline = Date.now() + 20_000;
    while (outcomes.length === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await session.idle();
    await new Promise((r) => setTimeout(r, 300));
    await session.idle();
    expect(await apiVersion()).toBe("burst-8");
    // Coalesced: far fewer reloads than saves.
    expect(outcomes.length - before).toBeLessThan(8);
  });

  it("sees a file replaced by rename, as editors and git do", async () => {
    const replacement = join(dir, ".app.sql.md.tmp");
    writeFileSync(replacement, documentWithVersion("renamed"));
    await afterChange(() => renameSync(replacement, file));
    expect(await apiVersion()).toBe("renamed");
  });

  it("reloads documents that add and rename roles without restarting the cluster", async () => {
    const withRole = (role: string) =>
      documentWithVersion(
        `role-${role}`,
        `do $r$ begin if not exists (select from pg_roles where rolname = '${role}') then create role ${role} nologin; end if; end $r$;\ngrant usage on schema api to ${role};`,
      );
    expect((await save(withRole("watch_editor")))?.kind).toBe("loaded");
    expect((await save(withRole("watch_editor_renamed")))?.kind).toBe("loaded");
    expect(await apiVersion()).toBe("role-watch_editor_renamed");
  });
});

describe("watch mode with several documents", () => {
  // The minimal document first (roles, schema, a function), then a small
  // application: saves of the application start from a template database
  // holding the first, which is loaded once.
  let projectDir: string;
  let project: WatchSession;
  const reloads: ReloadOutcome[] = [];
  const lines: string[] = [];
  const appDocument = (value: string) =>
    `# The application\n\n\`\`\`sql\ncreate function api.app() returns text language sql as $$ select '${value}' $$;\ngrant execute on function api.app() to anonymous;\n\`\`\`\n`;
  const baseDocument = (value: string, extra = "") =>
    documentWithVersion(value, extra).replaceAll("api.version()", "api.base()");
  const call = async (name: string) => {
    const response = await fetch(`${project.url}/rpc/${name}`);
    return response.status === 200 ? ((await response.json()) as string) : response.status;
  };
  const databases = async (): Promise<string[]> => {
    const admin = new pg.Client(project.cluster.connectionConfig());
    await admin.connect();
    try {
      const { rows } = await admin.query<{ datname: string }>(
        "select datname from pg_database where datname like 'app%' order by datname",
      );
      return rows.map((r) => r.datname);
    } finally {
      await admin.end();
    }
  };
  const saveFile = (name: string, content: string) =>
    reloadAfter(project, reloads, () => writeFileSync(join(projectDir, name), content));

  beforeAll(async () => {
    projectDir = mkdtempSync(join(tmpdir(), "watch-project-"));
    writeFileSync(
      join(projectDir, "package.json"),
      JSON.stringify({
        name: "two-documents",
        "postgrest-sessions": { documents: ["base.sql.md", "app.sql.md"] },
      }),
    );
    writeFileSync(join(projectDir, "base.sql.md"), baseDocument("base 1"));
    writeFileSync(join(projectDir, "app.sql.md"), appDocument("app 1"));
    project = await watchDocument({
      cwd: projectDir,
      port: await freePort(),
      log: (line) => lines.push(line),
      onReload: (outcome) => reloads.push(outcome),
    });
  });

  afterAll(async () => {
    await project?.stop();
    rmSync(projectDir, { recursive: true, force: true });
  });

  it("loads the documents before the last into a template, and each version from it", async () => {
    expect(reloads[0]?.kind).toBe("loaded");
    expect([await call("base"), await call("app")]).toEqual(["base 1", "app 1"]);
    expect(await databases()).toEqual(["app_1", "app_base_1"]);
    expect((await saveFile("app.sql.md", appDocument("app 2")))?.kind).toBe("loaded");
    expect([await call("base"), await call("app")]).toEqual(["base 1", "app 2"]);
    // The same template: the first document was not loaded again.
    expect(await databases()).toEqual(["app_2", "app_base_1"]);
    const second = reloads.at(-1);
    if (second?.kind === "loaded") expect((await second.pgtap)?.ok).toBe(true);
  });

  it("a save of the first document loads everything again, and the next save of the last makes a new template", async () => {
    expect((await saveFile("base.sql.md", baseDocument("base 2")))?.kind).toBe("loaded");
    expect([await call("base"), await call("app")]).toEqual(["base 2", "app 2"]);
    expect(await databases()).toEqual(["app_3"]);
    expect((await saveFile("app.sql.md", appDocument("app 3")))?.kind).toBe("loaded");
    expect([await call("base"), await call("app")]).toEqual(["base 2", "app 3"]);
    expect(await databases()).toEqual(["app_4", "app_base_2"]);
  });

  it("a broken first document is reported at its line, and the last version keeps serving", async () => {
    const outcome = await saveFile(
      "base.sql.md",
      baseDocument("base 3", "create tabel oops (id int);"),
    );
    expect(outcome?.kind).toBe("load-failed");
    if (outcome?.kind === "load-failed") expect(outcome.report).toMatch(/base\.sql\.md:\d+/);
    expect([await call("base"), await call("app")]).toEqual(["base 2", "app 3"]);
    expect(await databases()).toEqual(["app_4"]);
    expect((await saveFile("base.sql.md", baseDocument("base 4")))?.kind).toBe("loaded");
    expect([await call("base"), await call("app")]).toEqual(["base 4", "app 3"]);
  });
});

describe("watch mode with --run-tests", () => {
  it("runs the HTTP suite against each new version and prints one line for it", async () => {
    const testDir = mkdtempSync(join(tmpdir(), "watch-run-tests-"));
    const testFile = join(testDir, "app.sql.md");
    writeFileSync(testFile, documentWithVersion("t1"));
    const lines: string[] = [];
    const watching = await watchDocument({
      file: testFile,
      port: await freePort(),
      runTests: ["test/smoke.test.ts"],
      log: (line) => lines.push(line),
    });
    try {
      const deadline = Date.now() + 60_000;
      while (!lines.some((l) => /HTTP suite/.test(l)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(lines.find((l) => /HTTP suite/.test(l))).toMatch(
        /version 1: HTTP suite 1 passed \(\d+\.\d s\)$/,
      );
    } finally {
      await watching.stop();
      rmSync(testDir, { recursive: true, force: true });
    }
  });
});

describe("watch mode from the command line", () => {
  it("SIGINT during a reload cleans everything up and exits 0", async () => {
    const cliDir = mkdtempSync(join(tmpdir(), "watch-cli-"));
    const cliFile = join(cliDir, "app.sql.md");
    writeFileSync(cliFile, documentWithVersion("cli-1"));
    try {
      const run = spawnCli([
        "deploy-local",
        "--watch",
        "--port",
        String(await freePort()),
        "--file",
        cliFile,
      ]);
      await waitForReady(run);
      // A psql line that can be pasted: the database that serves now.
      expect(run.stdout()).toMatch(/psql: +psql -h \S+ -p \d+ -U postgres app_1 /);
      const clusterDir = /cluster directory (\S+)/.exec(run.stderr())?.[1];
      expect(clusterDir).toBeDefined();
      writeFileSync(cliFile, documentWithVersion("cli-2"));
      // Past the 100 ms settle time the reload is under way: interrupt it.
      await new Promise((r) => setTimeout(r, 160));
      run.child.kill("SIGINT");
      expect(await run.exited, run.stderr()).toBe(0);
      expect(existsSync(clusterDir as string)).toBe(false);
    } finally {
      rmSync(cliDir, { recursive: true, force: true });
    }
  });
});
