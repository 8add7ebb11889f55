// A SCRAM-SHA-256 verifier (RFC 7677, as PostgreSQL stores passwords) for a
// password the gateway makes up. The database gets only the verifier, so the
// password itself never reaches a statement, a log or pg_stat_statements.

import { createHash, createHmac, pbkdf2, randomBytes } from "node:crypto";
import { promisify } from "node:util";

const derive = promisify(pbkdf2);

/** A fresh random password: 256 bits, hex (no SASLprep questions). */
export function randomPassword(): string {
  return randomBytes(32).toString("hex");
}

export async function scramVerifier(password: string, iterations = 4096): Promise<string> {
  const salt = randomBytes(16);
  const salted = await derive(password, salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}
