#!/usr/bin/env node
// Builds dist/ with tsc only when a source is newer than the last build, so
// `npm start` and `npm run dev` start in a fraction of a second when nothing
// changed (tsc itself takes seconds even when it has nothing to do).

import { execFileSync } from "node:child_process";
import { readdirSync, statSync, utimesSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const stamp = join(root, "dist", ".tsbuildinfo");

function newest(path) {
  const info = statSync(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let latest = 0;
  for (const entry of readdirSync(path)) latest = Math.max(latest, newest(join(path, entry)));
  return latest;
}

let built = 0;
try {
  built = statSync(stamp).mtimeMs;
} catch {
  // never built
}
const sources = Math.max(
  newest(join(root, "src")),
  newest(join(root, "tsconfig.json")),
  newest(join(root, "tsconfig.build.json")),
  newest(join(root, "package.json")),
);
// Timestamps round differently on the way in and out: 1 ms of slack.
if (sources - built > 1) {
  execFileSync(
    join(root, "node_modules", ".bin", "tsc"),
    ["-p", join(root, "tsconfig.build.json")],
    {
      stdio: "inherit",
    },
  );
  // tsc leaves its build info untouched when the output did not change; a
  // source dated in the future (clock skew) must not force a build every time.
  const at = Math.max(Date.now(), sources) / 1000;
  utimesSync(stamp, at, at);
}
// The native relay too, when its source is newer than the addon (or it is missing).
execFileSync(process.execPath, [join(root, "scripts", "build-native.mjs"), "--if-stale"], {
  stdio: "inherit",
});
