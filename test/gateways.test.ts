// Two gateway processes on one database, as a deployment with more than one
// machine runs them: a user logs in through both at once (each login
// rotates the user's door role password), a logout ends the connections of
// both, and each gateway's cancel keys stop its own queries and nobody
// else's.

import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, startGateway } from "../src/gateway/server.js";
import { upstreamAddress } from "../src/gateway/upstream.js";
import { freePort } from "../src/net.js";
import { deployLocal, type LocalDeployment } from "../src/serving/deploy.js";
import { expect2xx } from "./support/app.js";
import { newUser } from "./support/client.js";
import { connectPg, type Door, sendCancel } from "./support/gateway.js";

let deployment: LocalDeployment;
let admin: pg.Client;
let first: Door;
let second: Door;
let secondGateway: Gateway;
/** What the two gateways said, shown when a test fails. */
const said: string[] = [];

beforeAll(async () => {
  deployment = await deployLocal({
    port: await freePort(),
    tests: false,
    mail: false,
    log: (line) => said.push(`first: ${line}`),
  });
  admin = await deployment.connect();
  const doors = deployment.doors;
  if (!doors) throw new Error("deploy-local started no doors");
  const config = deployment.cluster.connectionConfig(deployment.database);
  // The second one checks credentials as the gateway role too.
  secondGateway = await startGateway({
    control: doors.control,
    upstream: upstreamAddress(String(config.host), Number(config.port), deployment.database),
    log: (line) => said.push(`second: ${line}`),
  });
  first = { host: doors.gateway.host, port: doors.gateway.port, database: deployment.database };
  second = { host: secondGateway.host, port: secondGateway.port, database: deployment.database };
});

afterAll(async () => {
  await secondGateway?.close();
  await admin?.end();
  await deployment?.stop();
});

async function doorUser(label: string) {
  const user = await newUser(deployment.url, label);
  await admin.query("select auth.grant_door($1)", [user.userId]);
  return user;
}

function ended(client: pg.Client): Promise<void> {
  return new Promise((resolve) => client.once("end", () => resolve()));
}

describe("two gateways on one database", () => {
  it("let one user log in through both at the same moment, again and again", async () => {
    const user = await doorUser("two-gateways");
    for (let round = 0; round < 5; round++) {
      const clients = await Promise.all([
        connectPg(first, user.email, user.password),
        connectPg(second, user.email, user.password),
        connectPg(first, user.email, user.password),
        connectPg(second, user.email, user.password),
      ]);
      try {
        for (const client of clients) {
          const { rows } = await client
            .query("select auth.current_user_id() as id")
            .catch((error) => {
              throw new Error(
                `${error.message}; the gateways said:\n${said.slice(-20).join("\n")}`,
              );
            });
          expect(Number(rows[0].id)).toBe(user.userId);
        }
      } finally {
        await Promise.all(clients.map((c) => c.end().catch(() => {})));
      }
    }
  });

  it("do not end a connection that opened while the sessions of the others were being checked", async () => {
    const user = await doorUser("poll-race");
    const one = await connectPg(first, user.email, user.password);
    const { rows } = await admin.query<{ id: string }>(
      `select session_id as id from auth.sessions
        where user_id = $1 and via = 'database: password' and revoked is null
        order by session_id desc limit 1`,
      [user.userId],
    );
    const sessionId = rows[0]?.id;
    // Due for renewal: the gateway's next check writes its row, and waits
    // while another transaction holds it.
    await admin.query(
      "update auth.sessions set expires = now() + interval '1 minute' where session_id = $1",
      [sessionId],
    );
    const holder = await deployment.connect();
    let two: pg.Client | undefined;
    try {
      await holder.query("begin");
      await holder.query("select from auth.sessions where session_id = $1 for update", [sessionId]);
      await one.query("select 1"); // activity: the check renews this session
      await new Promise((r) => setTimeout(r, 600)); // the check is waiting now
      two = await connectPg(first, user.email, user.password);
      await holder.query("commit");
      await new Promise((r) => setTimeout(r, 800)); // the check has answered
      expect((await two.query("select 1 as ok")).rows[0].ok).toBe(1);
      expect((await one.query("select 1 as ok")).rows[0].ok).toBe(1);
    } finally {
      await holder.query("rollback").catch(() => {});
      await holder.end();
      await one.end().catch(() => {});
      await two?.end().catch(() => {});
    }
  });

  it("end the connections of both when the user logs out everywhere", async () => {
    const user = await doorUser("two-gateways-logout");
    const one = await connectPg(first, user.email, user.password);
    const two = await connectPg(second, user.email, user.password);
    const both = Promise.all([ended(one), ended(two)]);
    expect2xx(await user.client.post("/rpc/logout_everywhere"));
    await Promise.race([
      both,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("a door connection outlived the logout")), 5_000),
      ),
    ]);
  });

  it("cancel with each gateway's own keys, and not with the other's", async () => {
    const user = await doorUser("two-gateways-cancel");
    const one = await connectPg(first, user.email, user.password);
    const two = await connectPg(second, user.email, user.password);
    try {
      const sleeping = two.query("select pg_sleep(2) as slept").then(
        () => "finished",
        (error: { code?: string }) => error.code,
      );
      await new Promise((r) => setTimeout(r, 300));
      // The first gateway does not know the second's keys: nothing happens.
      await sendCancel(first, two);
      expect(await sleeping).toBe("finished");

      const again = one.query("select pg_sleep(30)").then(
        () => "finished",
        (error: { code?: string }) => error.code,
      );
      await new Promise((r) => setTimeout(r, 300));
      await sendCancel(first, one);
      expect(await again).toBe("57014");
      expect((await one.query("select 1 as ok")).rows[0].ok).toBe(1);
    } finally {
      await one.end().catch(() => {});
      await two.end().catch(() => {});
    }
  });
});
