// Listening sockets, shared by everything that serves: the front proxy,
// PostgREST's port checks, the gateway and pgweb's connect backend.

import { createServer, type Server } from "node:net";

export class PortInUseError extends Error {}

/** Fails with PortInUseError when something already listens on 127.0.0.1:port. */
export function assertPortFree(port: number, what = "port"): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (error: NodeJS.ErrnoException) => {
      reject(
        error.code === "EADDRINUSE"
          ? new PortInUseError(`${what} ${port} is already in use on 127.0.0.1`)
          : error,
      );
    });
    probe.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      probe.close(() => resolve());
    });
  });
}

/** Starts `server` listening on host:port (0: a free one); resolves with the port it got. */
export function listen(server: Server, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port }, () => {
      server.off("error", reject);
      const address = server.address();
      resolve(typeof address === "object" && address ? address.port : port);
    });
  });
}

/** A port the kernel says is free right now. */
export async function freePort(): Promise<number> {
  const probe = createServer();
  const port = await listen(probe, "127.0.0.1");
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
