// Reading pgTAP's output: failures, diagnostics and plan problems all count.

import { describe, expect, it } from "vitest";
import { parsePgTap } from "../src/document/pgtap.js";

const passing = [
  "    # Subtest: tests.test_b()",
  "    ok 1 - b passes",
  "    ok 2 - b passes again",
  "    1..2",
  "ok 1 - tests.test_b",
  "1..1",
].join("\n");

const failing = [
  "    # Subtest: tests.test_a()",
  "    ok 1 - first",
  "    not ok 2 - one is two",
  '    # Failed test 2: "one is two"',
  "    #         have: 1",
  "    #         want: 2",
  "    1..2",
  "    # Looks like you failed 1 test of 2",
  "not ok 1 - tests.test_a",
  '# Failed test 1: "tests.test_a"',
  "1..1",
  "# Looks like you failed 1 test of 1",
].join("\n");

describe("parsePgTap", () => {
  it("reads every check of a passing function", () => {
    const result = parsePgTap("tests.test_b", passing);
    expect(result.ok).toBe(true);
    expect(result.checks.map((c) => [c.name, c.ok])).toEqual([
      ["b passes", true],
      ["b passes again", true],
    ]);
    expect(result.problems).toEqual([]);
  });

  it("marks a failed check and keeps its have/want diagnostics", () => {
    const result = parsePgTap("tests.test_a", failing);
    expect(result.ok).toBe(false);
    const failed = result.checks.find((c) => !c.ok);
    expect(failed?.name).toBe("one is two");
    expect(failed?.diagnostics.join("\n")).toContain("have: 1");
    expect(failed?.diagnostics.join("\n")).toContain("want: 2");
  });

  it("counts a plan mismatch as a failure even when every check passed", () => {
    const tap = passing.replace("    1..2", "    1..3");
    const result = parsePgTap("tests.test_b", tap);
    expect(result.ok).toBe(false);
    expect(result.problems.join(" ")).toMatch(/plan/);
  });

  it("counts a function that emitted nothing as a failure", () => {
    const result = parsePgTap("tests.test_empty", "");
    expect(result.ok).toBe(false);
    expect(result.problems).toContain("the test function emitted no checks");
  });
});
