// The in-database pgTAP suite of the project's documents, one vitest test per
// check, so that a failure names the exact check and its diagnostics.

import { pgtapSuite } from "../src/testing/vitest.js";

pgtapSuite("pgTAP suite of sessions.sql.md and app.sql.md");
