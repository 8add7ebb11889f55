// Small statistics shared by the benchmark's scenarios.

import { availableParallelism, cpus } from "node:os";

export function median(numbers: number[]): number {
  const sorted = [...numbers].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** min, median, max and (max - min) / median of a variant's rounds. */
export function spreadOf(list: number[]): {
  min: number;
  median: number;
  max: number;
  spread: number;
} {
  const m = median(list);
  return {
    min: Math.min(...list),
    median: m,
    max: Math.max(...list),
    spread: (Math.max(...list) - Math.min(...list)) / m,
  };
}

/** The value at fraction p (0..1) of an ascending list. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

/** The machine the numbers were taken on. */
export function machine() {
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? "unknown",
    node: process.version,
  };
}
