// Watch-mode latency: the time from saving the document to the API serving
// the change. Each round adds a new function to a copy of the document,
// saves it, and polls PostgREST until the function answers.
//
//   npm run bench:watch -- [--rounds N] [--file app.sql.md]
//
// Prints every round and min/median/max. Goal: median < 500 ms, max < 1 s.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../src/postgrest.js";
import { watchDocument } from "../src/watch.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "20" },
    file: { type: "string", default: "app.sql.md" },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  process.stderr.write(`--rounds must be a positive integer, got "${values.rounds}"\n`);
  process.exit(2);
}

const original = readFileSync(values.file, "utf8");
const dir = mkdtempSync(join(tmpdir(), "bench-watch-"));
const file = join(dir, "app.sql.md");

function withProbe(round: number): string {
  return `${original}

\`\`\`sql
create function api.bench_probe_${round}() returns int language sql as $$ select ${round} $$;
grant execute on function api.bench_probe_${round}() to anonymous;
\`\`\`
`;
}

writeFileSync(file, withProbe(0));
const session = await watchDocument({ file, port: await freePort(), log: () => {} });
const samples: number[] = [];
try {
  for (let round = 1; round <= rounds; round++) {
    const saved = performance.now();
    writeFileSync(file, withProbe(round));
    for (;;) {
      const response = await fetch(`${session.url}/rpc/bench_probe_${round}`, { method: "POST" });
      await response.arrayBuffer();
      if (response.status === 200) break;
      if (performance.now() - saved > 30_000) throw new Error(`round ${round} never showed up`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const ms = performance.now() - saved;
    samples.push(ms);
    process.stdout.write(`round ${round}: ${ms.toFixed(0)} ms\n`);
    // Let the reload (including its pgTAP run) finish before the next save.
    await session.idle();
  }
} finally {
  await session.stop();
  rmSync(dir, { recursive: true, force: true });
}
const sorted = [...samples].sort((a, b) => a - b);
const median =
  sorted.length % 2
    ? (sorted[(sorted.length - 1) / 2] as number)
    : ((sorted[sorted.length / 2 - 1] as number) + (sorted[sorted.length / 2] as number)) / 2;
process.stdout.write(
  `save → API (${rounds} rounds of ${values.file}): min ${sorted[0]?.toFixed(0)} ms, median ${median.toFixed(0)} ms, max ${sorted.at(-1)?.toFixed(0)} ms\n`,
);
