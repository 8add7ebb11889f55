// The pgTAP tests of the documents (sessions.sql.md and app.sql.md), one
// vitest test per check.

import { pgtapSuite } from "postgrest-sessions/testing/vitest";

pgtapSuite();
