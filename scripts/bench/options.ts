// The benchmark's command line, parsed and checked once.

import { parseArgs } from "node:util";

const USAGE = `usage: npm run bench -- [options]
  --duration SECONDS   length of each measurement (default 4)
  --rounds N           interleaved rounds of every variant (default 6)
  --connections N      autocannon connections for throughput (default 10)
  --flood-rate N       requests per second of each attacker flood (default 100)
  --out FILE           the JSON results; the chart goes to FILE with .svg
                       (default bench/results.json; with --only gateway,
                       bench/gateway.json)
  --only identity      measure only what identity costs: GET /todos with each
                       way of saying who is asking, in interleaved rounds
                       (default out: bench/identity.json)
  --only gateway       measure only the database doors: connection set-up, and
                       the gateway against PgBouncer in session mode (needs
                       Debian's pgbouncer and PostgreSQL's pgbench)
  --only bursts        measure only honest bursts against floods: ten logins at
                       once, quiet and during a login flood, over HTTP and
                       through the gateway, and a logged-in user's latency
                       during the floods (default out: bench/bursts.json)
  --only replicas      measure only read replicas: logged-in reads on the
                       primary alone and with a streaming replica, and how long
                       a revocation takes to reach the replica under a write
                       load (needs pg_basebackup; default out: bench/replicas.json)
  --setting NAME=VALUE a deployment setting (a column of auth.settings) to
                       measure with, e.g. password_client_failures=5;
                       repeatable
`;

export interface BenchSettings {
  /** Seconds of each measurement. */
  duration: number;
  /** Interleaved rounds of every variant. */
  rounds: number;
  /** autocannon connections for throughput. */
  connections: number;
  /** Requests per second of each attacker flood. */
  floodRate: number;
  /** The JSON results (the chart goes beside it, .svg). */
  outFile: string;
  only: "identity" | "gateway" | "bursts" | "replicas" | undefined;
  /** auth.settings columns to set before measuring, in the JSON as they were given. */
  settings: Record<string, string>;
}

export const PASSWORD = "benchmark password";
export const log = (line: string) => process.stderr.write(`${line}\n`);

/** The settings, or the usage on stderr and exit 2 (exit 0 for --help). */
export function benchSettings(): BenchSettings {
  const { values } = parseOptions();
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (
    values.only !== undefined &&
    !["identity", "gateway", "bursts", "replicas"].includes(values.only)
  ) {
    process.stderr.write(
      `--only takes "identity", "gateway", "bursts" or "replicas", got "${values.only}"\n${USAGE}`,
    );
    process.exit(2);
  }
  return {
    duration: positiveNumber("duration", values.duration),
    rounds: Math.round(positiveNumber("rounds", values.rounds)),
    connections: Math.round(positiveNumber("connections", values.connections)),
    floodRate: Math.round(positiveNumber("flood-rate", values["flood-rate"])),
    outFile: values.out ?? (values.only ? `bench/${values.only}.json` : "bench/results.json"),
    only: values.only as BenchSettings["only"],
    settings: deploymentSettings(values.setting ?? []),
  };
}

function parseOptions() {
  try {
    return parseArgs({
      options: {
        duration: { type: "string", default: "4" },
        rounds: { type: "string", default: "6" },
        connections: { type: "string", default: "10" },
        out: { type: "string" },
        "flood-rate": { type: "string", default: "100" },
        only: { type: "string" },
        setting: { type: "string", multiple: true },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

function positiveNumber(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`--${name} must be a positive number, got "${text}"\n`);
    process.exit(2);
  }
  return value;
}

/** NAME=VALUE pairs; a name is a plain column name (it goes into an update). */
function deploymentSettings(pairs: string[]): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const pair of pairs) {
    const match = /^([a-z_][a-z0-9_]*)=(.*)$/.exec(pair);
    if (!match) {
      process.stderr.write(
        `--setting takes NAME=VALUE (a column of auth.settings), got "${pair}"\n${USAGE}`,
      );
      process.exit(2);
    }
    settings[match[1] as string] = match[2] as string;
  }
  return settings;
}
