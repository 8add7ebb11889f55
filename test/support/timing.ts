// Telling two kinds of request apart by their time, as an attacker would:
// by the fastest answers of each kind. Other test files hash passwords
// meanwhile, and waiting for a core only ever adds time, to either kind at
// random; the work a kind does shows in its fastest answers, in every round.

/** The mean of the three fastest samples. */
export function fastest(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted.slice(0, 3).reduce((sum, v) => sum + v, 0) / Math.min(3, sorted.length);
}

/**
 * How far apart two kinds' fastest answers are (relative to the slower),
 * measuring `round()` (which adds samples of both kinds, interleaved) until
 * they are within `tolerance` or `rounds` rounds are done: on a busy machine
 * one round can be unlucky for one kind, while a real difference in work
 * shows in every round. Returns the difference and a line describing it.
 */
export async function fastestApart(
  round: () => Promise<void>,
  kinds: Record<string, number[]>,
  { rounds = 3, tolerance = 0.25 } = {},
): Promise<{ difference: number; shown: string }> {
  const [[nameA, a], [nameB, b]] = Object.entries(kinds) as [
    [string, number[]],
    [string, number[]],
  ];
  let difference = Number.POSITIVE_INFINITY;
  let shown = "";
  for (let done = 1; done <= rounds && difference >= tolerance; done++) {
    await round();
    const fastA = fastest(a);
    const fastB = fastest(b);
    difference = Math.abs(fastA - fastB) / Math.max(fastA, fastB);
    shown = `after ${done} round(s), fastest ${fastA.toFixed(2)} ms (${nameA}) vs ${fastB.toFixed(2)} ms (${nameB})`;
  }
  return { difference, shown };
}
