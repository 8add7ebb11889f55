// deploy/production/nginx.conf run for real: a test certificate, free
// ports, this machine's paths, and the PostgRESTs of the test in the
// recipe's upstreams (the primary's, and the read replicas' when there are).

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent } from "undici";
import { freePort } from "../../src/net.js";
import { selfSignedCertificate } from "./certificate.js";
import { ROOT } from "./deploy-local-process.js";

export const NGINX = "/usr/sbin/nginx";

export interface RecipeNginx {
  /** https://localhost:<port> */
  origin: string;
  /** Trusts the test certificate (and changes nothing else). */
  dispatcher: Agent;
  stop(): Promise<void>;
}

export function requireNginx(): void {
  if (!existsSync(NGINX)) {
    throw new Error(
      "nginx is needed for the production recipe's tests: apt-get install nginx (scripts/setup-system.sh installs it)",
    );
  }
}

/**
 * Starts nginx with the recipe's server blocks under `root` (a private
 * directory the caller removes): `/srv/app` and `/etc/ssl/app` moved there,
 * the primary's PostgREST at `primaryPort`, the replicas' at `replicaPorts`
 * (default: the primary's, as the recipe has it with no replicas).
 */
export async function startRecipeNginx(
  root: string,
  primaryPort: number,
  replicaPorts: number[] = [],
): Promise<RecipeNginx> {
  requireNginx();
  mkdirSync(join(root, "etc", "ssl", "app"), { recursive: true });
  selfSignedCertificate("localhost", {
    key: join(root, "etc", "ssl", "app", "privkey.pem"),
    cert: join(root, "etc", "ssl", "app", "fullchain.pem"),
  });
  const httpsPort = await freePort();
  const recipe = readFileSync(join(ROOT, "deploy", "production", "nginx.conf"), "utf8");
  const replicas = (replicaPorts.length > 0 ? replicaPorts : [primaryPort])
    .map((port) => `server 127.0.0.1:${port};`)
    .join(" ");
  const servers = recipe
    .replaceAll("/srv/app", join(root, "srv", "app"))
    .replaceAll("/etc/ssl/app", join(root, "etc", "ssl", "app"))
    .replace(/^\s*listen \[::\].*$/gm, "")
    .replace("listen 443 ssl;", `listen 127.0.0.1:${httpsPort} ssl;`)
    .replace("listen 80;", `listen 127.0.0.1:${await freePort()};`)
    .replace(
      /(upstream app_primary \{[^}]*?)server 127\.0\.0\.1:3000;/,
      `$1server 127.0.0.1:${primaryPort};`,
    )
    .replace(/(upstream app_replicas \{[^}]*?)server 127\.0\.0\.1:3000;/, `$1${replicas}`);
  if (servers.includes("127.0.0.1:3000")) throw new Error("the recipe names port 3000 elsewhere");
  mkdirSync(join(root, "nginx"), { recursive: true });
  const asRoot = process.getuid?.() === 0;
  writeFileSync(
    join(root, "nginx", "nginx.conf"),
    `${asRoot ? "user root;\n" : ""}pid ${root}/nginx/nginx.pid;
error_log ${root}/nginx/error.log;
events {}
http {
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path ${root}/nginx/body;
  proxy_temp_path ${root}/nginx/proxy;
  fastcgi_temp_path ${root}/nginx/fastcgi;
  uwsgi_temp_path ${root}/nginx/uwsgi;
  scgi_temp_path ${root}/nginx/scgi;
${servers}
}
`,
  );
  const nginx: ChildProcess = spawn(
    NGINX,
    ["-c", join(root, "nginx", "nginx.conf"), "-p", join(root, "nginx"), "-g", "daemon off;"],
    { stdio: "ignore" },
  );
  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
  const origin = `https://localhost:${httpsPort}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await fetch(`${origin}/favicon.ico`, {
      // @ts-expect-error: undici's fetch takes a dispatcher
      dispatcher,
    }).then(
      () => true,
      () => false,
    );
    if (up) break;
    if (nginx.exitCode !== null || Date.now() > deadline) {
      nginx.kill("SIGKILL");
      throw new Error(
        `nginx did not come up; its log:\n${existsSync(join(root, "nginx", "error.log")) ? readFileSync(join(root, "nginx", "error.log"), "utf8") : "(none)"}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    origin,
    dispatcher,
    stop: async () => {
      const exited = new Promise((r) => nginx.once("exit", r));
      nginx.kill("SIGQUIT");
      await exited;
      await dispatcher.close();
    },
  };
}
