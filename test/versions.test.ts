// Which PostgreSQL and PostgREST the run is talking to. The compatibility
// matrix (npm run test:compat, scripts/compat.ts) names the versions it
// means to test in TEST_EXPECT_PG_MAJOR and TEST_EXPECT_POSTGREST, so that
// a run that silently fell back to another binary fails instead of
// reporting the wrong version as tested. Without them, the versions must be
// ones the README lists as supported.

import { describe, expect, inject, it } from "vitest";
import { query } from "./support/database.js";

const SUPPORTED_PG_MAJORS = [13, 14, 15, 16, 17, 18];
const SUPPORTED_POSTGREST = /^1[12]\./;

describe("versions under test", () => {
  it("runs on the PostgreSQL major it was asked for, or a supported one", async () => {
    const [row] = await query<{ num: string }>(
      "select current_setting('server_version_num') as num",
    );
    const major = Math.floor(Number(row?.num) / 10_000);
    const expected = process.env.TEST_EXPECT_PG_MAJOR;
    if (expected) expect(major).toBe(Number(expected));
    else expect(SUPPORTED_PG_MAJORS).toContain(major);
  });

  it("runs on the PostgREST version it was asked for, or a supported one", async () => {
    const response = await fetch(`${inject("apiUrl")}/`, {
      headers: { accept: "application/openapi+json" },
    });
    await response.arrayBuffer();
    // PostgREST names itself in every answer: "Server: postgrest/12.0.2".
    const version = /^postgrest\/(\S+)$/.exec(response.headers.get("server") ?? "")?.[1];
    expect(version, `Server header: ${response.headers.get("server")}`).toBeDefined();
    const expected = process.env.TEST_EXPECT_POSTGREST;
    if (expected) expect(version).toBe(expected);
    else expect(version).toMatch(SUPPORTED_POSTGREST);
  });
});
