// Watch-mode latency: the time from saving the document to the API serving
// the change. Each round adds a new function to a copy of the document,
// saves it, and polls PostgREST until the function answers.
//
//   npm run bench:watch -- [--rounds N]
//
// Two cases: "settled" waits for the previous version's checks (pgTAP) to
// finish before saving again; "back-to-back" saves again the moment the
// previous change is served, while its pgTAP suite is still running.
// Prints every round and min/median/max of each. Goal: median < 500 ms in
// both, max < 1 s.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readProjectConfig } from "../src/document/project.js";
import { freePort } from "../src/net.js";
import { watchDocument } from "../src/serving/watch.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "20" },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  process.stderr.write(`--rounds must be a positive integer, got "${values.rounds}"\n`);
  process.exit(2);
}

// A copy of this project (its documents and their list); the probe goes at
// the end of the last document.
const dir = mkdtempSync(join(tmpdir(), "bench-watch-"));
const config = readProjectConfig();
for (const document of ["package.json", ...config.documents]) {
  writeFileSync(join(dir, document), readFileSync(join(config.root, document)));
}
const last = config.documents.at(-1) as string;
const original = readFileSync(join(config.root, last), "utf8");
const file = join(dir, last);

function withProbe(round: number): string {
  return `${original}

\`\`\`sql
create function api.bench_probe_${round}() returns int language sql as $$ select ${round} $$;
grant execute on function api.bench_probe_${round}() to anonymous;
\`\`\`
`;
}

writeFileSync(file, withProbe(0));
const session = await watchDocument({ cwd: dir, port: await freePort(), log: () => {} });
let probe = 0;
/** Saves a new version and returns the milliseconds until the API serves it. */
async function saveAndWait(): Promise<number> {
  const round = ++probe;
  const saved = performance.now();
  writeFileSync(file, withProbe(round));
  for (;;) {
    const response = await fetch(`${session.url}/rpc/bench_probe_${round}`, { method: "POST" });
    await response.arrayBuffer();
    if (response.status === 200) break;
    if (performance.now() - saved > 30_000) throw new Error(`round ${round} never showed up`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - saved;
}

function summary(name: string, samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const median =
    sorted.length % 2
      ? (sorted[(sorted.length - 1) / 2] as number)
      : ((sorted[sorted.length / 2 - 1] as number) + (sorted[sorted.length / 2] as number)) / 2;
  return `save → API, ${name} (${samples.length} rounds of ${config.documents.join(" + ")}): min ${sorted[0]?.toFixed(0)} ms, median ${median.toFixed(0)} ms, max ${sorted.at(-1)?.toFixed(0)} ms`;
}

const settled: number[] = [];
const backToBack: number[] = [];
try {
  for (let round = 1; round <= rounds; round++) {
    // The previous version's pgTAP suite has finished: a quiet save.
    await session.idle();
    await new Promise((r) => setTimeout(r, 1500));
    const ms = await saveAndWait();
    settled.push(ms);
    // And at once another: the version just served is still running its suite.
    const next = await saveAndWait();
    backToBack.push(next);
    process.stdout.write(
      `round ${round}: settled ${ms.toFixed(0)} ms, back-to-back ${next.toFixed(0)} ms\n`,
    );
  }
} finally {
  await session.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`${summary("settled", settled)}\n${summary("back-to-back", backToBack)}\n`);
