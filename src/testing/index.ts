// postgrest-sessions/testing: what a project's own tests need.
//
//   import { TestClient, newUser } from "postgrest-sessions/testing";
//   import { apiUrl, pgtapSuite, withDatabase } from "postgrest-sessions/testing/vitest";
//
// The client keeps cookies like a browser; newUser registers and logs in a
// fresh user. The vitest helpers read what the global setup
// (postgrest-sessions/dist/testing/global-setup.js) provides.

export * from "./client.js";
