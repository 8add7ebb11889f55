// What the global setup provides to test files through vitest's `inject`.

import type { ClientConfig } from "pg";
import type { PgTapRun } from "../document/pgtap.js";

declare module "vitest" {
  export interface ProvidedContext {
    apiUrl: string;
    database: ClientConfig;
    /** The cluster's temp directory, for tests that restart parts of it. */
    clusterDir: string;
    /** The in-database suite's results from loading the documents. */
    pgtap: PgTapRun | undefined;
    /** The database doors, when the deployment has them (undefined against TEST_API_URL). */
    doors:
      | {
          host: string;
          port: number;
          /** The OAuth door's port (device.sql.md loaded). */
          oauthPort?: number;
          pgwebUrl: string;
          pgwebToken: string;
        }
      | undefined;
  }
}
