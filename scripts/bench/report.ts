// What the benchmark prints, and its chart.

import { FLOOD_NAMES } from "./floods.js";
import type { GatewayBench } from "./gateway.js";
import { VARIANTS } from "./identity.js";

/** Bars of throughput ratios against their goals, as SVG. */
export function svgChart(ratios: Array<{ label: string; value: number; goal: number }>): string {
  const width = 640;
  const barHeight = 40;
  const top = 50;
  const left = 230;
  const scale = (width - left - 60) / 1.2;
  const height = top + ratios.length * (barHeight + 14) + 40;
  const bars = ratios
    .map((r, i) => {
      const y = top + i * (barHeight + 14);
      const w = Math.max(1, Math.min(1.2, r.value) * scale);
      const ok = r.value >= r.goal;
      return `<text x="${left - 10}" y="${y + barHeight / 2 + 5}" text-anchor="end" font-size="14">${r.label}</text>
<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${ok ? "#2f7d4f" : "#b3261e"}"/>
<text x="${left + w + 6}" y="${y + barHeight / 2 + 5}" font-size="14">${r.value.toFixed(3)}</text>
<line x1="${left + r.goal * scale}" x2="${left + r.goal * scale}" y1="${y - 4}" y2="${y + barHeight + 4}" stroke="#1d2433" stroke-dasharray="4 3"/>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="system-ui, sans-serif">
<title>Session cost as throughput ratios against their goals</title>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="28" font-size="16" font-weight="bold">Session cost, as throughput ratios (dashed: goal)</text>
${bars}
<line x1="${left + scale}" x2="${left + scale}" y1="${top - 8}" y2="${height - 30}" stroke="#999"/>
<text x="${left + scale}" y="${height - 12}" text-anchor="middle" font-size="12">1.0</text>
</svg>
`;
}

export function gatewayLines(gateway: GatewayBench): string[] {
  const met = (ok: boolean) => (ok ? "met" : "MISSED");
  const lines = [
    "database doors (the gateway), against PgBouncer in session mode on the same cluster:",
    `  connect with a session token  p50 ${gateway.connect_p50_ms.toFixed(1)} ms, p99 ${gateway.connect_p99_ms.toFixed(1)} ms (goal p50 < 20 ms, ${met(gateway.connect_p50_ms < 20)}; directly p50 ${gateway.direct_connect_p50_ms.toFixed(1)} ms)`,
  ];
  if (!gateway.pgbouncer) {
    lines.push("  PgBouncer MISSING (apt-get install pgbouncer): no anchor for the numbers below");
  }
  lines.push(
    "  | load                          | gateway/s | PgBouncer/s | directly/s | gateway / PgBouncer |",
    "  |-------------------------------|-----------|-------------|------------|---------------------|",
  );
  for (const load of gateway.loads) {
    const name = `${load.sql === "select 1" ? "select 1" : "100 rows"}, ${load.clients} conn, ${load.protocol}`;
    const ratio = `${load.gateway_over_pgbouncer.toFixed(3)} (${load.gateway_over_pgbouncer_min.toFixed(2)}-${load.gateway_over_pgbouncer_max.toFixed(2)})`;
    lines.push(
      `  | ${name.padEnd(29)} | ${load.gateway_tps.toFixed(0).padStart(9)} | ${load.pgbouncer_tps.toFixed(0).padStart(11)} | ${load.direct_tps.toFixed(0).padStart(10)} | ${ratio.padStart(19)} |`,
    );
  }
  const select1 = gateway.gateway_over_pgbouncer_select1;
  const rows100 = gateway.gateway_over_pgbouncer_rows100;
  const cpu = gateway.pgbouncer_cpu_us_per_tx;
  const added = gateway.pgbouncer_added_p50_us;
  lines.push(
    `  select 1, worst shape / PgBouncer  ${select1?.toFixed(3) ?? "n/a"} (goal >= 0.9, ${select1 === null ? "no anchor" : met(select1 >= 0.9)})`,
    `  100 rows / PgBouncer              ${rows100?.toFixed(3) ?? "n/a"} (goal >= 0.95, ${rows100 === null ? "no anchor" : met(rows100 >= 0.95)})`,
    `  CPU per select 1                  gateway ${gateway.gateway_cpu_us_per_tx.toFixed(1)} us, PgBouncer ${cpu?.toFixed(1) ?? "n/a"} us (goal <= 1.3x, ${cpu === null ? "no anchor" : met(gateway.gateway_cpu_us_per_tx <= 1.3 * cpu)})`,
    `  added p50, one connection         gateway +${gateway.gateway_added_p50_us.toFixed(0)} us, PgBouncer +${added?.toFixed(0) ?? "n/a"} us (goal <= PgBouncer's + 15 us, ${added === null ? "no anchor" : met(gateway.gateway_added_p50_us <= added + 15)})`,
    `  select 1 over a direct connection  ${gateway.gateway_over_direct.toFixed(3)} (for reference: no relay reaches 1)`,
  );
  return lines;
}

// biome-ignore lint/suspicious/noExplicitAny: the JSON written by main, read back for printing.
export function burstLines(result: any): string[] {
  const goal = (value: number, target: number, atMost = false) =>
    `${value.toFixed(3)}  (goal ${atMost ? "<=" : ">="} ${target}${(atMost ? value <= target : value >= target) ? ", met" : ", MISSED"})`;
  return [
    "| logged-in GET /todos during | p50 ms | p99 ms | p99 / quiet |",
    "|-----------------------------|--------|--------|-------------|",
    ...FLOOD_NAMES.map((name) => {
      const f = result.floods[name];
      return `| ${name.replace("_", " ").padEnd(27)} | ${f.p50_ms.toFixed(2).padStart(6)} | ${f.p99_ms.toFixed(2).padStart(6)} | ${f.p99_over_quiet.toFixed(2).padStart(11)} |`;
    }),
    `worst flood p99 / quiet    ${goal(result.flood_p99_ratio, 2, true)}`,
    "",
    `10 logins at once, quiet   ${result.burst_logins_ok}/10 (goal 10), slowest ${result.burst_login_p99_ms.toFixed(0)} ms (goal < 1000${result.burst_login_p99_ms < 1000 ? ", met" : ", MISSED"})`,
    `10 logins during a flood   ${result.burst_under_flood_ok}/10 (goal 10), slowest ${result.bursts.burst_under_flood_p99_ms.toFixed(0)} ms; the flooder: ${result.bursts.flood_attempts_per_second.toFixed(0)} attempts/s, ${(result.bursts.flood_refused_share * 100).toFixed(0)}% told 429`,
    `10 gateway logins, flood   ${result.gateway_flood_logins_ok}/10 (goal 10)`,
  ];
}

// biome-ignore lint/suspicious/noExplicitAny: the JSON written by main, read back for printing.
export function identityLines(result: any): string[] {
  const row = (
    name: string,
    v: {
      rps: number;
      rps_min: number;
      rps_max: number;
      p50_ms: number;
      p99_ms: number;
      session_writes_per_request: number;
    },
  ) =>
    `| ${name.padEnd(17)} | ${v.rps.toFixed(0).padStart(6)} | ${`${v.rps_min.toFixed(0)}-${v.rps_max.toFixed(0)}`.padStart(11)} | ${(v.rps / result.variants.ceiling.rps).toFixed(3).padStart(8)} | ${String(v.p50_ms).padStart(6)} | ${String(v.p99_ms).padStart(6)} | ${v.session_writes_per_request.toFixed(4).padStart(8)} |`;
  const goal = (value: number, target: number) =>
    `${value.toFixed(3)}  (goal >= ${target}${value >= target ? ", met" : ", MISSED"})`;
  return [
    `GET /todos, ${result.settings.connections} connections, ${result.settings.rounds} rounds x ${result.settings.duration_s} s, ${result.machine.cores} cores`,
    "",
    "| variant           |  req/s | min-max     | /ceiling | p50 ms | p99 ms | writes/r |",
    "|-------------------|--------|-------------|----------|--------|--------|----------|",
    ...VARIANTS.map((name) => row(name, result.variants[name])),
    "",
    `inline / cached JWT        ${goal(result.inline_over_cached_jwt, 0.97)}`,
    `inline / ceiling           ${goal(result.inline_over_ceiling, 0.95)}`,
    `pre-request / cached JWT   ${goal(result.prerequest_over_cached_jwt, 0.9)}`,
    `pre-request / ceiling      ${goal(result.prerequest_over_ceiling, 0.85)}`,
    `session writes per GET     ${result.writes_per_request.toFixed(4)}  (goal 0)`,
    `noise: the largest spread of a variant's req/s across rounds is ${(result.spread * 100).toFixed(1)}% ((max - min) / median);`,
    `  the ratios are medians of per-round ratios, whose own ranges were: ${Object.entries(
      result.ratio_spreads as Record<string, { min: number; max: number }>,
    )
      .map(([name, r]) => `${name} ${r.min.toFixed(3)}-${r.max.toFixed(3)}`)
      .join(", ")}`,
  ];
}

// biome-ignore lint/suspicious/noExplicitAny: the JSON written above, read back for printing.
export function printReport(result: any, outFile: string, chartFile: string): void {
  const goal = (value: number, target: number) =>
    `${value.toFixed(3)}  (goal >= ${target}${value >= target ? ", met" : ", MISSED"})`;
  const lines = [
    ...identityLines(result),
    `1M / 1k sessions (worse)   ${goal(result.large_over_small, 0.95)}; auth.identify() ${result.sessions_small.identify_us.toFixed(1)} us at 1k, ${result.sessions_large.identify_us.toFixed(1)} us at 1M`,
    "",
    ...burstLines(result),
    "",
    `logins per second (password_slots ${result.capacity.password_slots}, bcrypt cost ${result.capacity.bcrypt_cost}):`,
    ...result.capacity.by_concurrency.map(
      (c: { concurrency: number; logins_per_second: number; busy_answers: number }) =>
        `  ${String(c.concurrency).padStart(2)} clients: ${c.logins_per_second.toFixed(1)}/s (${c.busy_answers} told to come back)`,
    ),
    "",
    ...gatewayLines(result.gateway),
    "",
    `wrote ${outFile} and ${chartFile} (${result.total_seconds} s)`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}
