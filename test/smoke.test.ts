// The smallest check that a deployment answers: PostgREST serves its API
// description at the root. Watch mode's --run-tests uses this file in
// test/watch.test.ts, against documents other than app.sql.md.

import { expect, inject, it } from "vitest";

it("serves the API description at the root", async () => {
  const response = await fetch(`${inject("apiUrl")}/`, {
    headers: { accept: "application/openapi+json" },
  });
  expect(response.status).toBe(200);
  const description = (await response.json()) as { swagger?: string; paths?: object };
  expect(description.swagger).toBe("2.0");
  expect(description.paths).toBeTypeOf("object");
});
