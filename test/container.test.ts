// deploy-local --postgres docker: PostgreSQL from a container. Runs only
// where a Docker engine answers; elsewhere it is skipped, and says so.

import { describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { dockerAvailability } from "../src/postgres/container.js";
import { deployLocal } from "../src/serving/deploy.js";

const docker = await dockerAvailability();
if (!docker.available) {
  process.stderr.write(
    `\n*** SKIPPED test/container.test.ts: no Docker engine answers here (${docker.reason}). ` +
      "The --postgres docker path is type-checked but not exercised on this machine. ***\n\n",
  );
}

describe("deploy-local with PostgreSQL in a container", () => {
  it.skipIf(!docker.available)(
    `serves the app and runs its pgTAP suite (Docker: ${docker.reason})`,
    async () => {
      const deployment = await deployLocal({ port: await freePort(), postgres: "docker" });
      try {
        expect(deployment.cluster.bin.source).toBe("docker");
        const run = await deployment.pgtap;
        expect(run?.ok).toBe(true);
        const response = await fetch(`${deployment.url}/rpc/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: "alice@example.com", password: "correct horse battery" }),
        });
        expect(response.status).toBe(200);
      } finally {
        await deployment.stop();
      }
    },
    300_000,
  );

  it("reports why Docker is or is not usable", () => {
    expect(docker.reason.length).toBeGreaterThan(0);
  });
});
