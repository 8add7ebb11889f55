#!/usr/bin/env node
// Compiles the gateway's native relay (src/gateway/native/relay.c) into
// dist/native/relay.node with the system's C compiler ($CC, else cc) and
// the Node-API headers of the node-api-headers package: no node-gyp, no
// download. Without a compiler it says so and leaves the gateway to relay
// in JavaScript (`postgrest-sessions gateway` says which relay it uses);
// with one, a compile error fails the build.
//
//   node scripts/build-native.mjs [--if-stale]

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const source = join(root, "src", "gateway", "native", "relay.c");
const target = join(root, "dist", "native", "relay.node");

if (process.argv.includes("--if-stale") && existsSync(target)) {
  if (statSync(target).mtimeMs >= statSync(source).mtimeMs) process.exit(0);
}
const compiler = process.env.CC || "cc";
const found = spawnSync(compiler, ["--version"], { stdio: "ignore" });
if (found.error || found.status !== 0) {
  console.error(
    `build-native: no C compiler (${compiler}): the gateway will relay in JavaScript, ` +
      "which costs more CPU per transaction (docs/database-doors.md); install one " +
      "(apt-get install gcc libc6-dev) and run npm run build to build the native relay",
  );
  rmSync(target, { force: true });
  process.exit(0);
}
const headers = createRequire(import.meta.url)("node-api-headers").include_dir;
mkdirSync(dirname(target), { recursive: true });
const partial = `${target}.partial`;
const compiled = spawnSync(
  compiler,
  [
    "-O2",
    "-Wall",
    "-Wextra",
    "-shared",
    "-fPIC",
    "-DNAPI_VERSION=8",
    `-I${headers}`,
    source,
    "-o",
    partial,
    "-lpthread",
  ],
  { stdio: "inherit" },
);
if (compiled.status !== 0) {
  rmSync(partial, { force: true });
  console.error(`build-native: ${compiler} could not compile ${source} (above)`);
  process.exit(1);
}
renameSync(partial, target);
