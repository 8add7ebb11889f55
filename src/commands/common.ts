// What every command shares: exit codes, printing an error once, and
// validating options all at once.

import type { Command, CommanderError } from "commander";
import { cleanupAll } from "../cleanup.js";
import { ONE_ISSUER_REASON, type SsoOptions } from "../serving/sso.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A misuse of the command line: reported with exit code 2. */
export class UsageError extends Error {}

/** An error whose message is already a complete report (no stack needed). */
export interface ReportedError {
  report?: string;
  message: string;
}

/** Throws one UsageError listing every problem, or returns. */
export function assertNoProblems(problems: string[]): void {
  if (problems.length === 0) return;
  const list = problems.map((p) => `  - ${p}`).join("\n");
  throw new UsageError(`invalid options:\n${list}`);
}

export function parsePort(
  value: string | undefined,
  name: string,
  problems: string[],
): number | undefined {
  if (value === undefined) return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    problems.push(`${name} must be a port number from 1 to 65535, got "${value}"`);
    return undefined;
  }
  return port;
}

/** Runs a command body: errors are printed once, resources are cleaned up, exit codes are set. */
export async function runAction(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    await cleanupAll();
    const reported = error as ReportedError;
    const text = reported.report ?? reported.message ?? String(error);
    process.stderr.write(`${error instanceof UsageError ? "error: " : ""}${text}\n`);
    process.exitCode = error instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
  }
}

/** Commander exits 1 on misuse by default; we want 2, and 0 for --help. */
export function applyExitCodes(command: Command): void {
  command.exitOverride((error: CommanderError) => {
    if (error.code === "commander.helpDisplayed" || error.code === "commander.version") {
      process.exit(EXIT_OK);
    }
    if (error.code === "commander.help") process.exit(EXIT_OK);
    process.exit(error.exitCode === 0 ? EXIT_OK : EXIT_USAGE);
  });
  for (const sub of command.commands) applyExitCodes(sub);
}

export interface SsoFlags {
  oidcIssuer?: string;
  oidcAudience?: string;
  oidcKeys?: string;
  oidcUserinfo?: string;
}

/** The identity-provider options of deploy-local and postgrest-conf, checked. */
export function ssoOptions(flags: SsoFlags, problems: string[]): SsoOptions | undefined {
  const issuers = (flags.oidcIssuer ?? "")
    .split(",")
    .map((issuer) => issuer.trim())
    .filter(Boolean);
  if (issuers.length === 0) {
    if (flags.oidcAudience || flags.oidcKeys || flags.oidcUserinfo) {
      problems.push(
        "--oidc-audience, --oidc-keys and --oidc-userinfo need --oidc-issuer (or OIDC_ISSUER)",
      );
    }
    return undefined;
  }
  if (issuers.length > 1)
    problems.push(
      `--oidc-issuer (or OIDC_ISSUER) names ${issuers.length} issuers: ${ONE_ISSUER_REASON}`,
    );
  const issuer = issuers[0] as string;
  if (!/^https?:\/\//.test(issuer)) {
    problems.push(`--oidc-issuer (or OIDC_ISSUER): "${issuer}" is not an http(s) URL`);
  }
  if (!flags.oidcAudience) {
    problems.push(
      "--oidc-audience (or OIDC_AUDIENCE) is required with --oidc-issuer: without it, tokens the provider issued to any other application would log in here",
    );
  }
  if (flags.oidcUserinfo !== undefined && !/^https?:\/\//.test(flags.oidcUserinfo)) {
    problems.push(
      `--oidc-userinfo (or OIDC_USERINFO): "${flags.oidcUserinfo}" is not an http(s) URL`,
    );
  }
  return {
    issuer,
    audience: flags.oidcAudience ?? "",
    ...(flags.oidcKeys ? { keysFile: flags.oidcKeys } : {}),
    ...(flags.oidcUserinfo ? { userinfo: flags.oidcUserinfo } : {}),
  };
}
