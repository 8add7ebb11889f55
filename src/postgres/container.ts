// A throwaway PostgreSQL in a container, for machines with a Docker engine
// and no local PostgreSQL: `deploy-local --postgres docker`.
//
// The official postgres image has no pgTAP; it is installed into the running
// container from the image's own Debian repository (apt inside the
// container), so test blocks load as they do locally. The container is
// reachable over TCP on a mapped port, trusts local connections, and is
// removed on stop (testcontainers' reaper also removes it if we die).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { registerCleanup } from "../cleanup.js";
import { type Cluster, THROWAWAY_SERVER_SETTINGS } from "./cluster.js";

export const DEFAULT_IMAGE = "postgres:15";

export interface ContainerClusterOptions {
  image?: string;
  log?: (line: string) => void;
}

/** Whether a Docker engine answers; the reason when it does not. */
export async function dockerAvailability(): Promise<{ available: boolean; reason: string }> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    const client = await getContainerRuntimeClient();
    return { available: true, reason: `container runtime ${client.info.containerRuntime.host}` };
  } catch (error) {
    return { available: false, reason: (error as Error).message.split("\n")[0] ?? String(error) };
  }
}

export async function startContainerCluster(
  options: ContainerClusterOptions = {},
): Promise<Cluster> {
  const log = options.log ?? (() => {});
  const image = options.image ?? DEFAULT_IMAGE;
  let testcontainers: typeof import("testcontainers");
  try {
    testcontainers = await import("testcontainers");
  } catch {
    throw new Error(
      "--postgres docker needs the testcontainers package: npm install testcontainers",
    );
  }
  const { GenericContainer, Wait } = testcontainers;
  log(`starting ${image} in a container`);
  const started = performance.now();
  const container = await new GenericContainer(image)
    .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: "trust", TZ: "UTC" })
    .withCommand(["postgres", ...THROWAWAY_SERVER_SETTINGS.flatMap((setting) => ["-c", setting])])
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .start();
  const dir = mkdtempSync(join(tmpdir(), "pgs-docker-"));
  const stop = async () => {
    await container.stop({ remove: true }).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    unregister();
  };
  const unregister = registerCleanup({
    name: `container ${container.getId().slice(0, 12)}`,
    stop,
    lastResort: () => rmSync(dir, { recursive: true, force: true }),
  });
  try {
    const version = await container.exec(["postgres", "--version"]);
    const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(version.output);
    const major = Number(match?.[1] ?? 15);
    const pgtap = await container.exec([
      "sh",
      "-c",
      `apt-get update -qq && apt-get install -y -qq postgresql-${major}-pgtap`,
    ]);
    if (pgtap.exitCode !== 0)
      log(`pgTAP could not be installed in the container:\n${pgtap.output}`);
    log(`container ready in ${Math.round(performance.now() - started)} ms`);
    const host = container.getHost();
    const port = container.getMappedPort(5432);
    const connectionConfig = (database = "postgres"): pg.ClientConfig => ({
      host,
      port,
      user: "postgres",
      database,
    });
    return {
      dir,
      socketDir: "",
      port,
      tcp: true,
      superuser: "postgres",
      bin: {
        binDir: `docker:${image}`,
        source: "docker",
        version: match?.[2] ? `${match[1]}.${match[2]}` : String(major),
        major,
      },
      logFile: join(dir, "container.log (docker logs)"),
      connectionConfig,
      uri: (user, database) =>
        `postgresql://${encodeURIComponent(user)}@${host}:${port}/${encodeURIComponent(database)}`,
      psqlCommand: (database = "postgres") => `psql -h ${host} -p ${port} -U postgres ${database}`,
      restart: async () => {
        await container.restart();
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
