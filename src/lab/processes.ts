// Finding and ending the processes of a lab through /proc: the sshd listener, its session
// children and whatever those run (nix-store --serve, builds). Linux only, like the lab.
import { readFile, readdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

interface ProcessEntry {
  pid: number;
  ppid: number;
  state: string;
  cmdline: string;
}

async function readEntry(pid: number): Promise<ProcessEntry | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) state ppid …": comm may contain spaces and parentheses, so cut at the last ")".
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ").trim();
    return { pid, ppid: Number(ppid), state: state ?? "", cmdline };
  } catch {
    return undefined; // exited meanwhile
  }
}

async function allProcesses(): Promise<ProcessEntry[]> {
  const pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name)).map(Number);
  const entries = await Promise.all(pids.map(readEntry));
  return entries.filter((entry): entry is ProcessEntry => entry !== undefined);
}

/** Alive and not a zombie (a zombie has left, only its exit status waits to be reaped). */
export async function isRunning(pid: number): Promise<boolean> {
  const entry = await readEntry(pid);
  return entry !== undefined && entry.state !== "Z";
}

/** The command line of a running process, or undefined. */
export async function commandLine(pid: number): Promise<string | undefined> {
  const entry = await readEntry(pid);
  return entry && entry.state !== "Z" ? entry.cmdline : undefined;
}

/** Running processes whose command line matches. */
export async function processesMatching(pattern: RegExp): Promise<number[]> {
  return (await allProcesses()).filter((entry) => entry.state !== "Z" && pattern.test(entry.cmdline)).map((entry) => entry.pid);
}

/** `roots` and all their descendants that are still running. */
export async function processTree(roots: readonly number[]): Promise<number[]> {
  const entries = (await allProcesses()).filter((entry) => entry.state !== "Z");
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

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
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
  const pids = await processTree(roots);
  for (const pid of pids) signal(pid, "SIGTERM");
  const stubborn = await waitGone(pids, 3000);
  for (const pid of stubborn) signal(pid, "SIGKILL");
  await waitGone(stubborn, 2000);
}
