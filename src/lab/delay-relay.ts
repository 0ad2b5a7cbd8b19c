// Network latency for lab links. This kernel has no netem (tc tbf shapes bandwidth only), so
// latency is made in user space: a TCP relay in front of a builder's sshd that holds every
// chunk for `delayMs` before passing it on, each way. A round trip through it costs
// 2 × delayMs more; bytes keep their order, and a slow side pauses the other (bounded memory).
//
//   const relay = await startDelayRelay({ listen: { host: "10.213.37.5" }, target: { host: "10.213.37.6", port: 2222 }, delayMs: 10 });
//   …ssh -p relay.port relay.host…   // 20 ms more per round trip
//   await relay.close();
import { createConnection, createServer, type Socket } from "node:net";
import { OffloadError } from "../errors.js";

export interface DelayRelayOptions {
  /** Where it listens; port 0 (default): any free one. */
  listen: { host: string; port?: number };
  target: { host: string; port: number };
  /** Added to each direction (half the round trip it adds). */
  delayMs: number;
}

export interface DelayRelay {
  host: string;
  port: number;
  close(): Promise<void>;
}

/** Bytes held in one direction beyond which the sender is paused until they have gone out. */
const MAX_HELD = 4 * 1024 * 1024;

/** Copies `from` to `to`, each chunk `delayMs` after it arrived; ends `to` as late after `from` ends. */
function delayed(from: Socket, to: Socket, delayMs: number): void {
  let held = 0;
  from.on("data", (chunk: Buffer) => {
    held += chunk.length;
    if (held > MAX_HELD) from.pause();
    // Timers of one duration fire in the order they were set: the byte order is kept.
    setTimeout(() => {
      held -= chunk.length;
      const flushed = to.destroyed || to.write(chunk);
      if (flushed && held <= MAX_HELD) from.resume();
      else if (!to.destroyed) to.once("drain", () => held <= MAX_HELD && from.resume());
    }, delayMs);
  });
  from.once("end", () => setTimeout(() => to.end(), delayMs));
}

export async function startDelayRelay(options: DelayRelayOptions): Promise<DelayRelay> {
  if (!(options.delayMs >= 0))
    throw new OffloadError(`a delay of ${options.delayMs} ms is not usable`, { code: "lab-network-failed", fix: "use a delay of 0 ms or more" });
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection(options.target);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.setNoDelay(true);
      // Either side failing ends both, as a broken link would.
      socket.once("error", () => (client.destroy(), upstream.destroy()));
      socket.once("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    delayed(client, upstream, options.delayMs);
    delayed(upstream, client, options.delayMs);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) =>
      reject(
        new OffloadError(`the delay relay cannot listen on ${options.listen.host}: ${error.message}`, {
          code: "lab-network-failed",
          fix: "listen on an address of this machine (a lab link's own end)",
        }),
      ),
    );
    server.listen(options.listen.port ?? 0, options.listen.host, resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    host: options.listen.host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
