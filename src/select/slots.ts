// Build slots as kernel locks that die with their holder. Node has no flock(), so a slot is
// a Unix socket in Linux's abstract namespace: binding it is atomic, a second bind fails
// with EADDRINUSE, and the kernel frees the name the moment the holding process exits,
// however it exits. Nothing on disk can go stale. The kernel lists the held ones in
// /proc/net/unix; connecting to a held slot asks its holder what it is building, which
// `offload status` shows.
// Abstract names carry no permissions, so any local user could bind them and stall every
// build: the names derive from a secret only root (the state dir's owner) can read.
import { createHmac, randomBytes } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { join } from "node:path";

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

const secrets = new Map<string, Buffer>();

/** The state dir's slot secret (32 random bytes, mode 0600), created on first use. */
function slotSecret(stateDir: string): Buffer {
  let secret = secrets.get(stateDir);
  if (secret) return secret;
  const file = join(stateDir, "slot-secret");
  try {
    secret = readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    mkdirSync(stateDir, { recursive: true, mode: 0o755 });
    // Written aside, then linked into place: readers never see a half-written secret, and
    // of two hooks creating it at once, the first link wins and both use that one.
    const temporary = `${file}.${process.pid}`;
    writeFileSync(temporary, randomBytes(32), { mode: 0o600 });
    try {
      linkSync(temporary, file);
    } catch (raced) {
      if ((raced as NodeJS.ErrnoException).code !== "EEXIST") throw raced;
    } finally {
      unlinkSync(temporary);
    }
    secret = readFileSync(file);
  }
  secrets.set(stateDir, secret);
  return secret;
}

/** Abstract socket name of one slot: unguessable without the secret, distinct per state dir. */
function slotAddress(stateDir: string, machine: string, index: number): string {
  const digest = createHmac("sha256", slotSecret(stateDir)).update(machine).digest("hex").slice(0, 40);
  return `\0offload-slot/${digest}/${index}`;
}

function bind(address: string, holder: SlotHolder): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      // An asker may hang up before the answer (heldSlots does): that must never hurt the holder, a building hook.
      socket.on("error", () => undefined);
      socket.end(JSON.stringify(holder));
    });
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
    // The kernel accepts for a holder that is stopped (SIGSTOP) or busy: it is held, say no more.
    const silent = setTimeout(() => {
      socket.destroy();
      resolve({ pid: 0, since: 0 });
    }, HOLDER_ANSWER_MS);
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.on("end", () => {
      clearTimeout(silent);
      try {
        resolve(JSON.parse(text) as SlotHolder);
      } catch {
        resolve({ pid: 0, since: 0 }); // held by someone who did not say what: still held
      }
    });
    socket.on("error", () => {
      clearTimeout(silent);
      resolve(undefined); // ECONNREFUSED: nobody holds it
    });
  });
}

/** How long a slot's holder may take to say what it builds (it answers from its event loop). */
const HOLDER_ANSWER_MS = 250;

/**
 * The abstract Unix socket names listening in this network namespace (where the slots live),
 * as the kernel lists them: every slot's state in one read of /proc/net/unix, where
 * connecting to each slot took ~70 µs a slot (26 ms for a 100-machine config).
 */
export function listeningSockets(): Set<string> {
  const names = new Set<string>();
  for (const line of readFileSync("/proc/net/unix", "utf8").split("\n")) {
    // Num RefCount Protocol Flags Type St Inode Path: a listening socket has __SO_ACCEPTCON (0x10000) in Flags.
    const fields = line.trim().split(/\s+/);
    const path = fields[7];
    if (path?.startsWith("@") && (parseInt(fields[3]!, 16) & 0x10000) !== 0) names.add(`\0${path.slice(1).replace(/@+$/, "")}`); // NUL padding shows as @
  }
  return names;
}

/** How many of the `count` slots of `machine` are held (the hook decides on this); `listening` read once for many machines. */
export function heldSlots(stateDir: string, machine: string, count: number, listening: Set<string> = listeningSockets()): number {
  let held = 0;
  for (let index = 0; index < count; index++) if (listening.has(slotAddress(stateDir, machine, index))) held++;
  return held;
}

/** Holders of all `count` slots of `machine` (undefined entries are free slots). */
export function slotHolders(stateDir: string, machine: string, count: number): Promise<(SlotHolder | undefined)[]> {
  return Promise.all(Array.from({ length: count }, (_, index) => slotHolder(stateDir, machine, index)));
}
