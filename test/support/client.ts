// The cookie-keeping test client lives in the toolkit (postgrest-sessions/testing),
// so that projects built on it test the same way; this suite uses it from there.
export * from "../../src/testing/client.js";
