// One short-lived database connection: connect, do the work, always close.

import pg from "pg";
import { withConnectionHint } from "./connection-hints.js";

/**
 * Runs `work` on a fresh connection and closes it afterwards, whatever
 * happens. Connection errors for a URL carry a hint on what to do.
 */
export async function withClient<T>(
  config: pg.ClientConfig,
  work: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client(config);
  client.on("error", () => {}); // errors surface through the query promises
  await client.connect().catch((error: unknown) => {
    throw typeof config.connectionString === "string"
      ? withConnectionHint(error, config.connectionString)
      : error;
  });
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}
