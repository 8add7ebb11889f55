// One place that knows what must be undone when the process ends.
//
// Every resource that outlives a function call (a postgres server, a
// PostgREST process, a temp directory) registers two things here: an async
// `stop` for orderly shutdown and a synchronous `lastResort` that still works
// inside process.on("exit"), where no promise will ever settle. SIGINT,
// SIGTERM and uncaught errors run the orderly path; a plain exit runs the
// last-resort path for whatever is still registered.

export interface CleanupEntry {
  name: string;
  stop: () => Promise<void>;
  lastResort: () => void;
}

const entries = new Set<CleanupEntry>();
let installed = false;
let shuttingDown = false;

/** What a signal should do once cleanup is finished; deploy-local exits 0. */
let exitCodeForSignal: (signal: NodeJS.Signals) => number = (signal) =>
  signal === "SIGINT" ? 130 : 143;

export function setSignalExitCode(fn: (signal: NodeJS.Signals) => number): void {
  exitCodeForSignal = fn;
}

/** Runs every registered stop, newest first, and reports failures on stderr. */
export async function cleanupAll(): Promise<void> {
  for (const entry of [...entries].reverse()) {
    try {
      await entry.stop();
    } catch (error) {
      process.stderr.write(`cleanup of ${entry.name} failed: ${String(error)}\n`);
      entry.lastResort();
    }
    entries.delete(entry);
  }
}

function lastResortForAll(): void {
  for (const entry of [...entries].reverse()) entry.lastResort();
  entries.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  const onSignal = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      // A second signal (Ctrl-C pressed again, or npm forwarding the one the
      // terminal already sent us) must not kill us halfway through cleaning
      // up: finish synchronously instead, then go.
      lastResortForAll();
      process.exit(exitCodeForSignal(signal));
    }
    shuttingDown = true;
    void cleanupAll().finally(() => process.exit(exitCodeForSignal(signal)));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  process.on("exit", lastResortForAll);
}

/** Registers a resource; the returned function unregisters it after a normal stop. */
export function registerCleanup(entry: CleanupEntry): () => void {
  install();
  entries.add(entry);
  return () => {
    entries.delete(entry);
  };
}
