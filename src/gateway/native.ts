// The native relay (native/relay.c), when it was built: `npm run build`
// compiles it with the system's C compiler into dist/native/relay.node
// (scripts/build-native.mjs). Without it the gateway relays in JavaScript.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

export interface NativeRelayModule {
  start(): void;
  adopt(
    clientFd: number,
    serverFd: number,
    greeting: Buffer,
    fromServer: Buffer,
    fromClient: Buffer,
    onClosed: (id: number) => void,
  ): number;
  /** [ready, status char code, busy ms ago, ready ms ago, transaction ms ago or -1, active]. */
  state(id: number, takeActive: boolean): number[] | null;
  end(id: number, message?: Buffer): void;
  release(id: number): void;
}

/** Where `npm run build` puts the addon (the same from src/ and from dist/). */
export const NATIVE_RELAY_PATH = join(
  import.meta.dirname,
  "..",
  "..",
  "dist",
  "native",
  "relay.node",
);

let loaded: { module?: NativeRelayModule; why?: string } | undefined;

/** The addon, started; or why there is none. */
export function nativeRelay(): { module?: NativeRelayModule; why?: string } {
  if (loaded) return loaded;
  if (!existsSync(NATIVE_RELAY_PATH)) {
    loaded = {
      why: `${NATIVE_RELAY_PATH} is not built (npm run build makes it when a C compiler is installed)`,
    };
    return loaded;
  }
  try {
    const module = createRequire(import.meta.url)(NATIVE_RELAY_PATH) as NativeRelayModule;
    module.start();
    loaded = { module };
  } catch (error) {
    loaded = { why: `${NATIVE_RELAY_PATH} did not load: ${(error as Error).message}` };
  }
  return loaded;
}

/** The file descriptor under a Node socket (a TCP or Unix one), if it has one. */
export function descriptorOf(socket: object): number | undefined {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}
