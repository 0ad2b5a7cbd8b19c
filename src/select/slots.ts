// Build slots as kernel locks that die with their holder. Node has no flock(), so a slot is
// a Unix socket in Linux's abstract namespace: binding it is atomic, a second bind fails
// with EADDRINUSE, and the kernel frees the name the moment the holding process exits,
// however it exits. Nothing on disk can go stale. Connecting to a held slot asks its holder
// what it is building, which `offload status` shows.
import { createHash } from "node:crypto";
import { createConnection, createServer, type Server } from "node:net";

export interface SlotHolder {
  pid: number;
  drvPath?: string;
  since: number; // ms since the epoch
}

export interface Slot {
  machine: string;
  index: number;
  release(): Promise<void>;
}

/** Abstract socket name of one slot; the state dir is part of it so separate installations never share slots. */
function slotAddress(stateDir: string, machine: string, index: number): string {
  const digest = createHash("sha256").update(`${stateDir}\0${machine}`).digest("hex").slice(0, 32);
  return `\0offload-slot/${digest}/${index}`;
}

function bind(address: string, holder: SlotHolder): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end(JSON.stringify(holder)));
    server.once("error", (error: NodeJS.ErrnoException) => (error.code === "EADDRINUSE" ? resolve(undefined) : reject(error)));
    server.listen({ path: address }, () => {
      server.unref(); // holding a slot must not keep the process alive
      resolve(server);
    });
  });
}

/** Takes the first free slot of `machine` (0 … count-1), or undefined if all are held. */
export async function acquireSlot(stateDir: string, machine: string, count: number, drvPath?: string): Promise<Slot | undefined> {
  const holder: SlotHolder = { pid: process.pid, drvPath, since: Date.now() };
  for (let index = 0; index < count; index++) {
    const server = await bind(slotAddress(stateDir, machine, index), holder);
    if (server) {
      return { machine, index, release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
    }
  }
  return undefined;
}

/** Who holds slot `index` of `machine`, or undefined when it is free. */
export function slotHolder(stateDir: string, machine: string, index: number): Promise<SlotHolder | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ path: slotAddress(stateDir, machine, index) });
    let text = "";
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.on("end", () => {
      try {
        resolve(JSON.parse(text) as SlotHolder);
      } catch {
        resolve({ pid: 0, since: 0 }); // held by someone who did not say what: still held
      }
    });
    socket.on("error", () => resolve(undefined)); // ECONNREFUSED: nobody holds it
  });
}

/** Holders of all `count` slots of `machine` (undefined entries are free slots). */
export function slotHolders(stateDir: string, machine: string, count: number): Promise<(SlotHolder | undefined)[]> {
  return Promise.all(Array.from({ length: count }, (_, index) => slotHolder(stateDir, machine, index)));
}
