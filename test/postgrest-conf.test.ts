// postgrest-conf and deploy-local take an identity provider's keys: public
// keys only, never key material that could sign tokens, and errors that say
// which address failed and why.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, generateSecret } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postgrestConf } from "../src/commands/postgrest-conf.js";
import { freePort } from "../src/net.js";
import { providerKeys } from "../src/serving/sso.js";
import { spawnCli } from "./support/deploy-local-process.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "postgrest-conf-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function keyFile(name: string, keys: object[]): Promise<string> {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify({ keys }));
  return file;
}

describe("the notification channel", () => {
  it("is one nobody can guess, made up anew for each configuration", async () => {
    const channel = (conf: string) => /^db-channel = "(pgrst_[0-9a-f]{24})"$/m.exec(conf)?.[1];
    const first = channel(await postgrestConf());
    const second = channel(await postgrestConf());
    expect(first).toBeDefined();
    expect(second).toBeDefined();
    expect(first).not.toBe(second);
  });
});

describe("the provider's keys", () => {
  it("keeps only the public parameters of a private key file, and says so", async () => {
    const rsa = await generateKeyPair("RS256", { extractable: true });
    const ec = await generateKeyPair("ES256", { extractable: true });
    const privateRsa = { ...(await exportJWK(rsa.privateKey)), kid: "r1", alg: "RS256" };
    const privateEc = { ...(await exportJWK(ec.privateKey)), kid: "e1" };
    expect(privateRsa).toHaveProperty("d");
    const file = await keyFile("private.json", [privateRsa, privateEc]);
    const warnings: string[] = [];
    const jwks = JSON.parse(
      await providerKeys({ issuer: "https://idp.example", audience: "a", keysFile: file }, (w) =>
        warnings.push(w),
      ),
    ) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.map((k) => Object.keys(k).sort())).toEqual([
      ["alg", "e", "kid", "kty", "n"],
      ["crv", "kid", "kty", "x", "y"],
    ]);
    expect(warnings.join("\n")).toMatch(/key 1 \(kid r1\): dropped d, p, q, dp, dq, qi/);

    const conf = await postgrestConf({
      issuer: "https://idp.example",
      audience: "todo-app",
      keysFile: file,
    });
    for (const secret of ["d", "p", "q", "dp", "dq", "qi"]) {
      expect(conf).not.toContain(`\\"${secret}\\":`);
    }
    expect(conf).toContain(`read from ${file}`);
    expect(conf).not.toContain("fetched through OpenID Connect discovery");
  });

  it("refuses a symmetric key", async () => {
    const secret = await exportJWK(await generateSecret("HS256", { extractable: true }));
    const file = await keyFile("oct.json", [{ ...secret, kid: "shared" }]);
    await expect(
      providerKeys({ issuer: "https://idp.example", audience: "a", keysFile: file }),
    ).rejects.toThrow(/key 1 \(kid shared\) is a symmetric \(oct\) key/);
  });

  it("says which address could not be fetched, and why", async () => {
    const issuer = `http://127.0.0.1:${await freePort()}/realms/main`;
    await expect(providerKeys({ issuer, audience: "a" })).rejects.toThrow(
      `cannot fetch the OpenID Connect discovery document from ${issuer}/.well-known/openid-configuration: ECONNREFUSED`,
    );
  });
});

describe("postgrest-conf command", () => {
  it("requires the audience with an issuer, saying why", async () => {
    const run = spawnCli(["postgrest-conf", "--oidc-issuer", "https://idp.example"], {
      OIDC_AUDIENCE: "",
    });
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain(
      "--oidc-audience (or OIDC_AUDIENCE) is required with --oidc-issuer",
    );
  });
});
