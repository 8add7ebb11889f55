// The notes API over HTTP, as a browser uses it: register, write a note,
// and make sure another user cannot see it.

import { newUser } from "postgrest-sessions/testing";
import { apiUrl } from "postgrest-sessions/testing/vitest";
import { expect, it } from "vitest";

it("keeps each user's notes to themselves", async () => {
  const ada = await newUser(apiUrl(), "ada");
  const bob = await newUser(apiUrl(), "bob");
  const written = await ada.client.post("/notes", { body: "ada's secret" });
  expect(written.status).toBe(201);
  const adaSees = await ada.client.get("/notes");
  expect(adaSees.body).toEqual([expect.objectContaining({ body: "ada's secret" })]);
  const bobSees = await bob.client.get("/notes");
  expect(bobSees.body).toEqual([]);
  await ada.client.logout();
  expect((await ada.client.get("/notes")).status).toBe(401);
});
