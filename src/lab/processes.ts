// Finding and ending the processes of a lab through /proc: the sshd listener, its session
// children and whatever those run (nix-store --serve, builds), and everything in a host's
// namespaces. Linux only, like the lab.
import { readFile, readdir, readlink } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { parseProcStat } from "../files/proc-stat.js";

export interface ProcessEntry {
  pid: number;
  ppid: number;
  state: string;
  cmdline: string;
}

async function readEntry(pid: number): Promise<ProcessEntry | undefined> {
  try {
    const { state, ppid } = parseProcStat(await readFile(`/proc/${pid}/stat`, "utf8"));
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ").trim();
    return { pid, ppid, state, cmdline };
  } catch {
    return undefined; // exited meanwhile
  }
}

async function allProcesses(): Promise<ProcessEntry[]> {
  const pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name)).map(Number);
  const entries = await Promise.all(pids.map(readEntry));
  return entries.filter((entry): entry is ProcessEntry => entry !== undefined);
}

/** Every process that is alive and not a zombie. */
export async function runningProcesses(): Promise<ProcessEntry[]> {
  return (await allProcesses()).filter((entry) => entry.state !== "Z");
}

export type NamespaceKind = "mnt" | "pid";

/** A namespace of a process, e.g. "mnt:[4026532177]", or undefined once it has gone. */
export async function namespaceOf(pid: number, kind: NamespaceKind): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/${kind}`).catch(() => undefined);
}

/** Running processes in any of `namespaces` (as namespaceOf gives them). */
export async function processesInNamespaces(namespaces: readonly string[]): Promise<number[]> {
  const kinds = [...new Set(namespaces.map((namespace) => namespace.slice(0, namespace.indexOf(":")) as NamespaceKind))];
  const inOne = async (pid: number) =>
    (await Promise.all(kinds.map((kind) => namespaceOf(pid, kind)))).some((namespace) => namespace !== undefined && namespaces.includes(namespace));
  const members = await Promise.all((await runningProcesses()).map(async ({ pid }) => ((await inOne(pid)) ? pid : 0)));
  return members.filter((pid) => pid !== 0);
}

/** The pid a process has in its own PID namespace (what it writes to pid files), or undefined once it has gone. */
export async function pidInOwnNamespace(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const line = /^NSpid:\s*(.*)$/m.exec(status)?.[1];
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).at(-1));
}

/** Alive and not a zombie (a zombie has left, only its exit status waits to be reaped). */
export async function isRunning(pid: number): Promise<boolean> {
  const entry = await readEntry(pid);
  return entry !== undefined && entry.state !== "Z";
}

/** Running processes whose command line matches. */
export async function processesMatching(pattern: RegExp): Promise<number[]> {
  return (await runningProcesses()).filter((entry) => pattern.test(entry.cmdline)).map((entry) => entry.pid);
}

/** `roots` and all their descendants that are still running. */
export async function processTree(roots: readonly number[]): Promise<number[]> {
  const entries = await runningProcesses();
  const children = new Map<number, number[]>();
  for (const entry of entries) children.set(entry.ppid, [...(children.get(entry.ppid) ?? []), entry.pid]);
  const alive = new Set(entries.map((entry) => entry.pid));
  const found = new Set<number>();
  const queue = roots.filter((pid) => alive.has(pid));
  while (queue.length > 0) {
    const pid = queue.pop()!;
    if (found.has(pid)) continue;
    found.add(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return [...found];
}

/** Sends the signal unless the process has gone already. */
export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

/** Waits up to `timeoutMs` for the processes to end; returns those still running. */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = [...pids];
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(25);
    left = (await Promise.all(left.map(async (pid) => ((await isRunning(pid)) ? pid : 0)))).filter((pid) => pid !== 0);
  }
  return left;
}

/**
 * Ends the processes and their descendants: the tree is collected before anything is
 * signalled, because children of a dead sshd are re-parented and could not be found later.
 * SIGTERM first, SIGKILL for whatever ignores it.
 */
export async function terminateTrees(roots: readonly number[]): Promise<void> {
  await terminate(await processTree(roots));
}

/** SIGTERM, then SIGKILL for whatever ignores it. */
export async function terminate(pids: readonly number[]): Promise<void> {
  for (const pid of pids) signal(pid, "SIGTERM");
  const stubborn = await waitGone(pids, 3000);
  for (const pid of stubborn) signal(pid, "SIGKILL");
  await waitGone(stubborn, 2000);
}
